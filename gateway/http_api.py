"""The HTTP/JSON experience API (FastAPI): /v1 routes for the channels, behind
bearer API keys, scopes, tenant isolation, quotas, idempotency and audit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import text
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from crossdock.admin.v1 import admin_pb2
from crossdock.common.v1.common_pb2 import Address
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.reconciliation.v1 import reconciliation_pb2 as rec
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2

from . import convert, operations
from .governance import ApiClient, fingerprint, trace_id_from
from .problems import PROBLEM_MEDIA, Problem, bad_page_token, from_grpc, not_found, responses
from .validation import CONTROL_MESSAGE, has_control_characters

ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
IdStr = Annotated[str, Field(pattern=ID, max_length=64)]
# JSON literals are not identifiers: a query value `false` or `null` is refused
# rather than taken for an item (query values carry no type).
LITERALS = {"true", "false", "null"}
NOT_LITERAL = {"not": {"enum": sorted(LITERALS)}}
SkuStr = Annotated[str, StringConstraints(pattern=ID, max_length=64), Field(json_schema_extra=NOT_LITERAL)]
# A free-text query value: no control character (see validation.CONTROL).
TEXT = r"^[^\x00-\x1f\x7f-\x9f]*$"
# The shape of a sealed page token (services/mesh/paging.py): anything else is
# refused here; the service that made it checks its seal and its filter.
PAGE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,1000}\.[A-Za-z0-9_-]{1,64}$")
PageToken = Annotated[str, Query(description="next_page_token of the previous page: opaque, sealed to "
                                             "the listing and its filter")]
# Dead-letter ids are the DLQ stream's sequence numbers.
DeadLetterId = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,17}$")]


class Strict(BaseModel):
    # A field the client must not set (price, status...) is refused, not ignored.
    # Strict: `"repair": 0` is not a boolean, `"quantity": "1"` not a number.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value):
        # NUL, C0 (but tab and line breaks), DEL, C1, lone surrogates: the same rule as the gRPC edge.
        if isinstance(value, str) and has_control_characters(value):
            raise ValueError(CONTROL_MESSAGE)
        return value


class OrderLineIn(Strict):
    sku: IdStr
    quantity: int = Field(ge=1, le=1_000_000)


class AddressIn(Strict):
    name: str = Field(default="", max_length=200)
    line1: str = Field(default="", max_length=200)
    city: str = Field(default="", max_length=100)
    postal_code: str = Field(default="", max_length=20)
    country_code: str = Field(pattern=r"^[A-Z]{2}$")


class SubmitOrderIn(Strict):
    customer_id: IdStr | None = Field(default=None, description="the client's own customer when omitted")
    lines: list[OrderLineIn] = Field(min_length=1, max_length=100)
    warehouse_id: IdStr | None = None
    ship_to: AddressIn | None = None
    shortage_policy: Literal["BACKORDER", "CANCEL"] | None = None
    service_level: IdStr | None = None


class CancelIn(Strict):
    reason: str = Field(default="", max_length=500)


class ReturnLineIn(Strict):
    sku: IdStr
    quantity: int = Field(ge=1, le=1_000_000)
    reason: Literal["DAMAGED", "DEFECTIVE", "WRONG_ITEM", "NOT_NEEDED", "OTHER"]
    note: str = Field(default="", max_length=500)


class CreateReturnIn(Strict):
    order_id: IdStr
    lines: list[ReturnLineIn] = Field(min_length=1, max_length=100)


class ReconcileIn(Strict):
    repair: bool = False
    warehouse_id: IdStr | None = None


class PositionOut(BaseModel):
    sku: str
    warehouse_id: str
    on_hand: int
    allocated: int
    available: int


class AvailabilityOut(BaseModel):
    positions: list[PositionOut]


class ShippingOptionOut(BaseModel):
    carrier_id: str
    service_level: str
    price: convert.MoneyOut
    transit_days: int


class ShippingOptionsOut(BaseModel):
    options: list[ShippingOptionOut]


class DeadLetterOut(BaseModel):
    dead_letter_id: str
    subject: str
    consumer: str
    reason: str
    permanent: bool
    attempts: int
    event_id: str
    event_type: str
    dead_time: str


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_page_token: str
    total: int


class ReplayOut(BaseModel):
    subject: str
    message_id: str


class ReconciliationOut(BaseModel):
    run_id: str
    repair: bool
    positions_checked: int
    in_flight: int
    drift_count: int
    repaired_count: int


class AuditEntryOut(BaseModel):
    id: int
    at: str
    client_id: str
    channel: str
    transport: str
    method: str
    route: str
    resource: str
    status: int
    outcome: str
    trace_id: str
    actor: str = Field(default="", description="the person (console), else empty")
    detail: str = Field(default="", description="their note or reason (console), else empty")


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


ExceptionKindName = Literal["SHORT_PICK", "DAMAGED", "STOCK_DISCREPANCY", "CARRIER_FAILED"]
ActionName = Literal["SHIP_PARTIAL", "CANCEL_LINES", "CANCEL_ORDER", "RETRY", "REASSIGN_CARRIER"]


class SkuQuantityOut(BaseModel):
    sku: str
    quantity: int


class ExceptionOut(BaseModel):
    exception_id: str
    order_id: str
    customer_id: str
    kind: str
    status: str
    lines: list[SkuQuantityOut]
    detail: str
    wave: int
    raise_time: str
    policy: str
    action: str
    resolved_by: str
    note: str
    resolve_time: str | None


class ExceptionPage(BaseModel):
    exceptions: list[ExceptionOut]
    next_page_token: str


class ResolveIn(Strict):
    action: ActionName
    note: str = Field(default="", max_length=500)
    carrier_id: IdStr | None = Field(default=None, description="for REASSIGN_CARRIER")


class ExceptionFilterIn(Strict):
    kind: ExceptionKindName | None = None
    customer_id: IdStr | None = None
    warehouse_id: IdStr | None = None
    older_than_minutes: int = Field(default=0, ge=0, le=525_600)


class ResolveManyIn(ResolveIn):
    filter: ExceptionFilterIn = Field(default_factory=ExceptionFilterIn)


class SkippedOut(BaseModel):
    exception_id: str
    reason: str


class ResolveManyOut(BaseModel):
    resolved: list[str]
    skipped: list[SkippedOut]


class PolicyRuleOut(BaseModel):
    scope: Literal["default", "customer", "channel"]
    key: str
    policy: str


class PolicyRulesOut(BaseModel):
    rules: list[PolicyRuleOut]


class PolicyIn(Strict):
    scope: Literal["default", "customer", "channel"]
    key: IdStr | None = Field(default=None, description="the customer or channel (not for the default)")
    policy: Literal["SHIP_PARTIAL", "HOLD", "CANCEL_LINES"] | None = Field(
        default=None, description="none removes the customer's or channel's own policy")


class HealthOut(BaseModel):
    status: str


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                       description="required: makes the call safe to retry")]
# Query parameters that take several values (?sku=A&sku=B).
LIST_PARAMS = {"sku"}
AUTH = responses(401, 403, 413, 429)
UPSTREAM = responses(502, 503)
bearer = HTTPBearer(auto_error=False, description="an API key from `crossdock clients create`")


class ResourceId(Convertor):
    """A path segment without ':' (so `/v1/orders/X:cancel` is the cancel route only)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rid", ResourceId())


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over the limit, declared (Content-Length)
    or streamed (chunked). The body is read here, at most ``max_body`` bytes, and
    handed to the app whole: the app never sees an over-long body, and the 413 is
    this middleware's own answer (raised inside the app's body parsing, FastAPI
    would turn it into a 400)."""

    def __init__(self, app, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def too_large(self) -> Problem:
        return Problem(413, "body-too-large", f"request body over {self.max_body} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _send_problem(send, self.too_large())
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                return await _send_problem(send, self.too_large())
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        return await self.app(scope, replay, send)


async def _send_problem(send, problem: Problem) -> None:
    body = json.dumps(problem.body()).encode()
    headers = [(b"content-type", PROBLEM_MEDIA.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def problem_response(problem: Problem, instance: str = "") -> JSONResponse:
    return JSONResponse(problem.body(instance), status_code=problem.status,
                        media_type=PROBLEM_MEDIA, headers=problem.headers)


def create_app(core) -> FastAPI:
    """``core``: the gateway (governance, settings, downstream stubs) — see __main__."""
    gov = core.governance
    settings = core.settings
    app = FastAPI(
        title="Crossdock gateway", version="1.0.0",
        description="The experience API of Crossdock: orders, returns, lookups and operations "
                    "for the channels. Errors are application/problem+json.",
        docs_url=None, redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_body=settings.gateway_max_body)

    # ---- errors: always a problem, never a stack trace ----

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                   "description": str(e.get("msg", "invalid"))} for e in exc.errors()]
        # A body that is not JSON at all is a 400; a JSON body with bad fields a 422.
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return problem_response(Problem(status, "invalid-request", "the request is not valid",
                                        errors=errors), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.url.path))
        return problem_response(Problem(exc.status_code, slug, str(exc.detail), headers=headers),
                                request.url.path)

    def allowed_methods(path: str) -> list[str]:
        """Every method served at a path (Starlette names only the first route's)."""
        methods: set[str] = set()
        for route in app.routes:
            match = getattr(route, "path_regex", None) and route.path_regex.match(path)
            if not match:
                continue
            methods |= set(getattr(route, "methods", None) or ())
        return sorted(methods - {"HEAD"})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        core.log.exception("gateway.unhandled", path=request.url.path)
        return problem_response(Problem(500, "internal", "internal error"), request.url.path)

    # ---- audit of every state-changing call, whatever its outcome ----

    @app.middleware("http")
    async def _audit(request: Request, call_next):
        request.state.trace_id = trace_id_from(request.headers.get("traceparent"))
        keys = [k for k, _ in request.query_params.multi_items()]
        repeated = sorted({k for k in keys if keys.count(k) > 1} - LIST_PARAMS)
        try:
            if repeated and request.url.path.startswith("/v1/"):
                # A single-valued parameter given twice is ambiguous: refused, not guessed at.
                raise Problem(422, "invalid-request", "a parameter is given more than once",
                              errors=[{"field": f"query.{k}", "description": "given more than once"}
                                      for k in repeated])
            response = await call_next(request)
        except Problem as p:
            response = problem_response(p, request.url.path)
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and not request.url.path.startswith(
                "/console"):  # the console audits its own (with the person's name)
            route = request.scope.get("route")
            await gov.audit(
                client=getattr(request.state, "client", None), transport="http", method=request.method,
                route=(getattr(route, "path_format", None) or request.url.path)[:200],
                resource=getattr(request.state, "resource", ""), status=response.status_code,
                outcome=getattr(request.state, "outcome", "") or ("ok" if response.status_code < 400
                                                                  else f"http-{response.status_code}"),
                trace_id=request.state.trace_id)
        response.headers["X-Trace-Id"] = request.state.trace_id
        return response

    # ---- authentication, scopes, quotas ----

    def require(scope: str, *, internal: bool = False):
        async def dependency(request: Request,
                             creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiClient:
            if creds is None or creds.scheme.lower() != "bearer":
                raise Problem(401, "unauthenticated", "a bearer API key is required",
                              headers={"WWW-Authenticate": "Bearer"})
            client = await gov.authenticate(creds.credentials)
            if client is None:
                raise Problem(401, "unauthenticated", "the API key is not valid",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            request.state.client = client
            if scope not in client.scopes or (internal and client.customer_id):
                raise Problem(403, "forbidden", f"this API key lacks the {scope!r} scope")
            wait = gov.over_quota(client)
            if wait is not None:
                raise Problem(429, "rate-limited", "too many requests for this API key",
                              headers={"Retry-After": str(wait)})
            return client
        return Depends(dependency)

    async def call(coro, kind: str = "", name: str = ""):
        """A downstream call; its failure as a problem. ``kind``/``name``: the one record the
        call looks up, whose NOT_FOUND the gateway words itself (like another tenant's record);
        any other NOT_FOUND keeps the downstream's words (the SKU or warehouse that is missing)."""
        try:
            return await coro
        except Exception as err:  # noqa: BLE001 - every downstream failure becomes a problem
            raise from_grpc(err, kind, name) from None

    async def owned_order(client: ApiClient, order_id: str) -> ots.Order:
        r = await call(core.ots.GetOrder(ots.GetOrderRequest(order_id=order_id)), "order", order_id)
        if not client.owns(r.order.customer_id):
            raise not_found("order", order_id)
        return r.order

    def page_size_q():
        return Query(default=50, ge=1, le=settings.gateway_max_page_size)

    def check_page_token(token: str) -> None:
        if token and (len(token) > 1024 or not PAGE_TOKEN.match(token)):
            raise bad_page_token()

    async def idempotent(request: Request, client: ApiClient, key: str | None, body: BaseModel, run):
        """Runs ``run()`` once per (client, key): a repeat gets the first answer."""
        if key is None:
            raise Problem(400, "idempotency-key-missing", "the Idempotency-Key header is required")
        fp = fingerprint(request.scope["route"].path, body.model_dump(mode="json"))
        state, status, stored = await gov.idempotency_begin(client.client_id, key, fp)
        if state == "mismatch":
            raise Problem(422, "idempotency-key-reused", "this Idempotency-Key was used with another request")
        if state == "pending":
            raise Problem(409, "idempotency-key-in-use", "a request with this Idempotency-Key is in progress")
        if state == "replay":
            request.state.outcome = "replayed"
            saved = json.loads(stored)
            media = PROBLEM_MEDIA if status >= 400 else "application/json"
            return JSONResponse(saved["body"], status_code=status, media_type=media,
                                headers={**saved.get("headers", {}), "Idempotent-Replayed": "true"})
        try:
            status, payload, headers = 0, {}, {}
            try:
                status, payload, headers = await run()
            except Problem as p:
                status, payload, headers = p.status, p.body(request.url.path), p.headers
        finally:
            await gov.idempotency_finish(client.client_id, key, status or 500,
                                         json.dumps({"body": payload, "headers": headers}))
        media = PROBLEM_MEDIA if status >= 400 else "application/json"
        return JSONResponse(payload, status_code=status, media_type=media, headers=headers)

    def request_id(client: ApiClient, key: str) -> str:
        return "gw-" + hashlib.sha256(f"{client.client_id}\0{key}".encode()).hexdigest()[:40]

    # ---- orders ----

    @app.post("/v1/orders", status_code=201, response_model=convert.OrderOut, tags=["orders"],
              responses={**AUTH, **responses(400, 404, 409, 422), **UPSTREAM})
    async def submit_order(request: Request, body: SubmitOrderIn, idempotency_key: IdemKey = None,
                           client: ApiClient = require("orders:write")):
        customer = body.customer_id or client.customer_id
        if client.customer_id and customer != client.customer_id:
            raise Problem(422, "field-not-allowed", "customer_id must be your own customer",
                          errors=[{"field": "customer_id", "description": "not your customer"}])
        if not customer:
            raise Problem(422, "invalid-request", "customer_id is required",
                          errors=[{"field": "customer_id", "description": "required"}])

        async def run():
            req = ots.SubmitOrderRequest(
                request_id=request_id(client, idempotency_key), customer_id=customer, channel=client.channel,
                lines=[ots.OrderLine(sku=ln.sku, quantity=ln.quantity) for ln in body.lines],
                warehouse_id=body.warehouse_id or "", service_level=body.service_level or "",
                shortage_policy=ots.ShortagePolicy.Value(f"SHORTAGE_POLICY_{body.shortage_policy}")
                if body.shortage_policy else 0)
            if body.ship_to:
                req.ship_to.CopyFrom(Address(**body.ship_to.model_dump()))
            r = await call(core.ots.SubmitOrder(req))
            request.state.resource = r.order.order_id
            return 201, convert.order(r.order), {"Location": f"/v1/orders/{r.order.order_id}"}

        return await idempotent(request, client, idempotency_key, body, run)

    @app.get("/v1/orders/{order_id:rid}", response_model=convert.OrderOut, tags=["orders"],
             responses={**AUTH, **responses(404), **UPSTREAM})
    async def get_order(order_id: Annotated[str, Path(max_length=64)],
                        client: ApiClient = require("orders:read")):
        return convert.order(await owned_order(client, order_id))

    @app.get("/v1/orders", response_model=convert.OrderPage, response_model_exclude_none=True,
             tags=["orders"], responses={**AUTH, **responses(400, 422), **UPSTREAM})
    async def list_orders(page_size: int = page_size_q(), page_token: PageToken = "",
                          customer_id: Annotated[str | None, Query(pattern=ID)] = None,
                          view: Annotated[Literal["BASIC", "FULL"], Query(description=(
                              "AIP-157: BASIC (default) leaves out each order's lines and timeline; "
                              "FULL has them (one lookup per order listed)"))] = "BASIC",
                          client: ApiClient = require("orders:read")):
        check_page_token(page_token)
        if client.customer_id and customer_id not in (None, client.customer_id):
            raise Problem(422, "field-not-allowed", "customer_id must be your own customer",
                          errors=[{"field": "customer_id", "description": "not your customer"}])
        r = await call(core.ots.ListOrders(ots.ListOrdersRequest(
            page_size=page_size, page_token=page_token, customer_id=client.customer_id or customer_id or "")))
        if view == "BASIC":
            orders = [convert.order_summary(o) for o in r.orders]
        else:
            # Order-to-ship's ListOrders carries no lines: each order as GET /v1/orders/{id} has it.
            lookups = asyncio.Semaphore(8)

            async def full(o: ots.Order) -> dict:
                async with lookups:
                    got = await call(core.ots.GetOrder(ots.GetOrderRequest(order_id=o.order_id)),
                                     "order", o.order_id)
                return convert.order(got.order)

            orders = list(await asyncio.gather(*(full(o) for o in r.orders)))
        return {"orders": orders, "next_page_token": r.next_page_token}

    @app.post("/v1/orders/{order_id:rid}:cancel", response_model=convert.OrderOut, tags=["orders"],
              responses={**AUTH, **responses(404, 409, 422), **UPSTREAM})
    async def cancel_order(request: Request, order_id: Annotated[str, Path(max_length=64)],
                           body: CancelIn | None = None, client: ApiClient = require("orders:write")):
        request.state.resource = order_id
        await owned_order(client, order_id)
        r = await call(core.ots.CancelOrder(ots.CancelOrderRequest(
            order_id=order_id, reason=(body.reason if body else "") or f"cancelled by {client.channel}")),
            "order", order_id)
        return convert.order(r.order)

    # ---- returns ----

    @app.post("/v1/returns", status_code=201, response_model=convert.ReturnOut, tags=["returns"],
              responses={**AUTH, **responses(400, 404, 409, 422), **UPSTREAM})
    async def create_return(request: Request, body: CreateReturnIn, idempotency_key: IdemKey = None,
                            client: ApiClient = require("returns:write")):
        async def run():
            await owned_order(client, body.order_id)
            r = await call(core.returns.CreateReturn(rpb.CreateReturnRequest(
                request_id=request_id(client, idempotency_key), order_id=body.order_id,
                lines=[rpb.ReturnLine(sku=ln.sku, quantity=ln.quantity, note=ln.note,
                                      reason=rpb.ReturnReason.Value(f"RETURN_REASON_{ln.reason}"))
                       for ln in body.lines])))
            request.state.resource = r.customer_return.return_id
            return 201, convert.customer_return(r.customer_return), {
                "Location": f"/v1/returns/{r.customer_return.return_id}"}

        return await idempotent(request, client, idempotency_key, body, run)

    @app.get("/v1/returns/{return_id}", response_model=convert.ReturnOut, tags=["returns"],
             responses={**AUTH, **responses(404), **UPSTREAM})
    async def get_return(return_id: Annotated[str, Path(max_length=64)],
                         client: ApiClient = require("returns:read")):
        r = await call(core.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id)), "return", return_id)
        if not client.owns(r.customer_return.customer_id):
            raise not_found("return", return_id)
        return convert.customer_return(r.customer_return)

    @app.get("/v1/returns", response_model=convert.ReturnPage, tags=["returns"],
             responses={**AUTH, **responses(400, 422), **UPSTREAM})
    async def list_returns(page_size: int = page_size_q(), page_token: PageToken = "",
                           order_id: Annotated[str | None, Query(pattern=ID)] = None,
                           client: ApiClient = require("returns:read")):
        check_page_token(page_token)
        r = await call(core.returns.ListReturns(rpb.ListReturnsRequest(
            page_size=page_size, page_token=page_token, order_id=order_id or "",
            customer_id=client.customer_id)))
        return {"returns": [convert.customer_return(x) for x in r.returns
                            if client.owns(x.customer_id)], "next_page_token": r.next_page_token}

    # ---- lookups ----

    @app.get("/v1/availability", response_model=AvailabilityOut, tags=["lookups"],
             responses={**AUTH, **responses(422), **UPSTREAM})
    async def availability(sku: Annotated[list[SkuStr], Query(min_length=1, max_length=50)],
                           warehouse: Annotated[str, Query(pattern=ID, json_schema_extra=NOT_LITERAL)] = "",
                           client: ApiClient = require("lookups")):
        literal = [f for f, v in [*(("sku", x) for x in sku), ("warehouse", warehouse)] if v in LITERALS]
        if literal:
            raise Problem(422, "invalid-request", "true, false and null are not identifiers",
                          errors=[{"field": f"query.{f}", "description": "not an identifier"}
                                  for f in literal])
        r = await call(core.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
            skus=sku, warehouse_id=warehouse or "")))
        return {"positions": [{"sku": p.sku, "warehouse_id": p.warehouse_id, "on_hand": p.on_hand,
                               "allocated": p.allocated, "available": p.available} for p in r.positions]}

    @app.get("/v1/shipping-options", response_model=ShippingOptionsOut, tags=["lookups"],
             responses={**AUTH, **responses(422), **UPSTREAM})
    async def shipping_options(country_code: Annotated[str, Query(pattern=r"^[A-Z]{2}$")],
                               weight_grams: Annotated[int, Query(ge=1, le=10_000_000)],
                               currency_code: Annotated[str, Query(pattern=r"^[A-Z]{3}$")] = "USD",
                               postal_code: Annotated[str, Query(max_length=20, pattern=TEXT)] = "",
                               client: ApiClient = require("lookups")):
        r = await call(core.tms.GetShippingOptions(tms_pb2.GetShippingOptionsRequest(
            destination=Address(country_code=country_code, postal_code=postal_code),
            weight_grams=weight_grams, currency_code=currency_code)))
        return {"options": [{"carrier_id": o.carrier_id, "service_level": o.service_level,
                             "price": {"currency_code": o.price.currency_code,
                                       "amount_minor": o.price.amount_minor},
                             "transit_days": o.transit_days} for o in r.options]}

    # ---- admin (internal clients only: not bound to a customer) ----

    @app.get("/v1/admin/dead-letters", response_model=DeadLetterPage, tags=["admin"],
             responses={**AUTH, **responses(422), **UPSTREAM})
    async def dead_letters(page_size: int = page_size_q(),
                           page_token: Annotated[str, Query(pattern=r"^([1-9][0-9]{0,17})?$")] = "",
                           consumer: Annotated[str | None, Query(max_length=128, pattern=TEXT)] = None,
                           client: ApiClient = require("admin", internal=True)):
        r = await call(core.dead_letters.ListDeadLetters(admin_pb2.ListDeadLettersRequest(
            page_size=page_size, page_token=page_token, consumer=consumer or "")))
        return {"dead_letters": [{
            "dead_letter_id": d.dead_letter_id, "subject": d.subject, "consumer": d.consumer,
            "reason": d.reason, "permanent": d.permanent, "attempts": d.attempts, "event_id": d.event_id,
            "event_type": d.event_type, "dead_time": convert._ts(d.dead_time)} for d in r.dead_letters],
            "next_page_token": r.next_page_token, "total": r.total}

    @app.post("/v1/admin/dead-letters/{dead_letter_id}:replay", response_model=ReplayOut, tags=["admin"],
              responses={**AUTH, **responses(404, 409, 422), **UPSTREAM})
    async def replay_dead_letter(request: Request, dead_letter_id: DeadLetterId,
                                 client: ApiClient = require("admin", internal=True)):
        request.state.resource = dead_letter_id
        r = await call(core.dead_letters.ReplayDeadLetter(admin_pb2.ReplayDeadLetterRequest(
            dead_letter_id=dead_letter_id)), "dead letter", dead_letter_id)
        return {"subject": r.subject, "message_id": r.message_id}

    @app.post("/v1/admin/reconciliations", status_code=201, response_model=ReconciliationOut, tags=["admin"],
              responses={**AUTH, **responses(409, 422), **UPSTREAM})
    async def reconcile(request: Request, body: ReconcileIn | None = None,
                        client: ApiClient = require("admin", internal=True)):
        body = body or ReconcileIn()
        r = await call(core.reconciliation.ReconcileInventory(rec.ReconcileInventoryRequest(
            repair=body.repair, warehouse_id=body.warehouse_id or ""), timeout=60))
        run = r.run
        request.state.resource = run.run_id
        return {"run_id": run.run_id, "repair": run.repair, "positions_checked": run.positions_checked,
                "in_flight": run.in_flight, "drift_count": run.drift_count,
                "repaired_count": run.repaired_count}

    # ---- the exception work list (operations: internal clients only) ----

    def exception_out(e: ots.OrderException) -> dict:
        def name(enum, value, prefix):
            return enum.Name(value).removeprefix(prefix) if value else ""

        return {"exception_id": e.exception_id, "order_id": e.order_id, "customer_id": e.customer_id,
                "kind": name(ots.ExceptionKind, e.kind, "EXCEPTION_KIND_"),
                "status": name(ots.ExceptionStatus, e.status, "EXCEPTION_STATUS_"),
                "lines": [{"sku": ln.sku, "quantity": ln.quantity} for ln in e.lines], "detail": e.detail,
                "wave": e.wave, "raise_time": convert._ts(e.raise_time),
                "policy": name(ots.ExceptionPolicy, e.policy, "EXCEPTION_POLICY_"),
                "action": name(ots.ResolutionAction, e.action, "RESOLUTION_ACTION_"),
                "resolved_by": e.resolved_by, "note": e.note,
                "resolve_time": convert._ts(e.resolve_time) if e.HasField("resolve_time") else None}

    @app.get("/v1/admin/exceptions", response_model=ExceptionPage, tags=["admin"],
             responses={**AUTH, **responses(400, 422), **UPSTREAM})
    async def list_exceptions(page_size: int = page_size_q(), page_token: PageToken = "",
                              status: Literal["OPEN", "RESOLVED"] | None = None,
                              kind: ExceptionKindName | None = None,
                              customer_id: Annotated[str | None, Query(pattern=ID)] = None,
                              warehouse_id: Annotated[str | None, Query(pattern=ID)] = None,
                              order_id: Annotated[str | None, Query(pattern=ID)] = None,
                              older_than_minutes: Annotated[int, Query(ge=0, le=525_600)] = 0,
                              client: ApiClient = require("admin", internal=True)):
        check_page_token(page_token)
        req = operations.ExceptionFilter(kind=kind or "", customer_id=customer_id or "",
                                         warehouse_id=warehouse_id or "",
                                         older_than_minutes=older_than_minutes,
                                         status=status or "").request(page_size, page_token)
        req.order_id = order_id or ""
        r = await call(core.ots.ListExceptions(req))
        return {"exceptions": [exception_out(e) for e in r.exceptions], "next_page_token": r.next_page_token}

    @app.get("/v1/admin/exceptions/{exception_id:rid}", response_model=ExceptionOut, tags=["admin"],
             responses={**AUTH, **responses(404), **UPSTREAM})
    async def get_exception(exception_id: Annotated[str, Path(max_length=64)],
                            client: ApiClient = require("admin", internal=True)):
        r = await call(core.ots.GetException(ots.GetExceptionRequest(exception_id=exception_id)),
                       "exception", exception_id)
        return exception_out(r.exception)

    @app.post("/v1/admin/exceptions/{exception_id:rid}:resolve", response_model=ExceptionOut, tags=["admin"],
              responses={**AUTH, **responses(404, 409, 422), **UPSTREAM})
    async def resolve_exception(request: Request, exception_id: Annotated[str, Path(max_length=64)],
                                body: ResolveIn, client: ApiClient = require("admin", internal=True)):
        request.state.resource = exception_id
        r = await call(core.ots.ResolveException(ots.ResolveExceptionRequest(
            exception_id=exception_id, resolved_by=client.name or client.client_id, note=body.note,
            carrier_id=body.carrier_id or "",
            action=ots.ResolutionAction.Value(f"RESOLUTION_ACTION_{body.action}"))),
            "exception", exception_id)
        return exception_out(r.exception)

    @app.post("/v1/admin/exceptions:resolve", response_model=ResolveManyOut, tags=["admin"],
              responses={**AUTH, **responses(422), **UPSTREAM})
    async def resolve_exceptions(request: Request, body: ResolveManyIn,
                                 client: ApiClient = require("admin", internal=True)):
        """Resolve every open exception the filter finds with one action (those it does not fit are
        skipped, with the reason)."""
        f = body.filter
        try:
            result = await operations.resolve_many(
                core.ots, operations.ExceptionFilter(kind=f.kind or "", customer_id=f.customer_id or "",
                                                     warehouse_id=f.warehouse_id or "",
                                                     older_than_minutes=f.older_than_minutes),
                action=body.action, resolved_by=client.name or client.client_id, note=body.note,
                carrier_id=body.carrier_id or "")
        except Exception as err:  # noqa: BLE001
            raise from_grpc(err) from None
        request.state.resource = f"{len(result.resolved)} resolved"
        return {"resolved": result.resolved,
                "skipped": [{"exception_id": i, "reason": why} for i, why in result.skipped]}

    @app.get("/v1/admin/exception-policies", response_model=PolicyRulesOut, tags=["admin"],
             responses={**AUTH, **UPSTREAM})
    async def exception_policies(client: ApiClient = require("admin", internal=True)):
        r = await call(core.ots.ListExceptionPolicies(ots.ListExceptionPoliciesRequest()))
        return {"rules": [{"scope": x.scope, "key": x.key,
                           "policy": ots.ExceptionPolicy.Name(x.policy).removeprefix("EXCEPTION_POLICY_")}
                          for x in r.rules]}

    @app.put("/v1/admin/exception-policies", response_model=PolicyRuleOut, tags=["admin"],
             responses={**AUTH, **responses(422), **UPSTREAM})
    async def set_exception_policy(request: Request, body: PolicyIn,
                                   client: ApiClient = require("admin", internal=True)):
        if ((body.scope == "default") != (body.key is None)
                or (body.scope == "default" and body.policy is None)):
            raise Problem(422, "invalid-request", "the default takes a policy and no key; a customer or "
                          "channel takes its key", errors=[{"field": "key", "description": "see detail"}])
        request.state.resource = f"{body.scope}:{body.key or ''}"
        r = await call(core.ots.SetExceptionPolicy(ots.SetExceptionPolicyRequest(
            customer_id=body.key if body.scope == "customer" else "",
            channel=body.key if body.scope == "channel" else "",
            policy=ots.ExceptionPolicy.Value(f"EXCEPTION_POLICY_{body.policy}") if body.policy else 0)))
        return {"scope": r.rule.scope, "key": r.rule.key,
                "policy": ots.ExceptionPolicy.Name(r.rule.policy).removeprefix("EXCEPTION_POLICY_")}

    @app.get("/v1/admin/audit", response_model=AuditPage, tags=["admin"],
             responses={**AUTH, **responses(422)})
    async def audit(limit: int = page_size_q(),
                    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                    client_id: Annotated[str | None, Query(max_length=64, pattern=TEXT)] = None,
                    client: ApiClient = require("admin", internal=True)):
        rows = await gov.audit_page(limit=limit, before_id=before, client_id=client_id or "")
        entries = [{**r, "at": r["at"].isoformat()} for r in rows]
        return {"entries": entries, "next_before": rows[-1]["id"] if len(rows) == limit else None}

    # ---- probes (no auth) ----

    @app.get("/healthz", response_model=HealthOut, tags=["probes"])
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=HealthOut, tags=["probes"], responses=responses(503))
    async def readyz():
        if core.stopping.is_set():
            raise Problem(503, "not-ready", "draining", headers={"Retry-After": "5"})
        try:
            async with core.store.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001
            raise Problem(503, "not-ready", "store unavailable", headers={"Retry-After": "5"}) from None
        return {"status": "ready"}

    def openapi() -> dict:
        """FastAPI's document, corrected to what is served: every error is a
        problem (also FastAPI's own 422), Idempotency-Key is required where it is."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
        spec.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        spec.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        for path, ops in spec["paths"].items():
            for op in ops.values():
                codes = {401, 403, 413, 429} if path.startswith("/v1/") else set()
                if op.get("parameters"):
                    codes.add(422)
                if "requestBody" in op:
                    codes |= {400, 415, 422}
                op["responses"].update({str(k): v for k, v in responses(*codes).items()
                                        if str(k) not in op["responses"] or k == 422})
                for p in op.get("parameters", []):
                    if p["name"] == "Idempotency-Key":
                        p["required"] = True
                        p["schema"] = {"type": "string", "minLength": 1, "maxLength": 255}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi
    return app
