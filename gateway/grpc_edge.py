"""The gRPC edge: OrderToShipService and ReturnsService served by the gateway
for internal gRPC clients, behind the same API keys (``authorization: Bearer``
metadata), scopes, tenant isolation, quotas and audit as the HTTP API, and
forwarded to the process services."""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

import grpc

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.errors import DomainError, InvalidArgument, NotFound

from . import validation
from .governance import ApiClient, trace_id_from

# The caller and the abort code of the RPC in progress (each RPC is its own task).
_caller: ContextVar[ApiClient | None] = ContextVar("caller", default=None)
_aborted: ContextVar[str] = ContextVar("aborted", default="")


async def _abort(context, code: grpc.StatusCode, message: str, trailing=()) -> None:
    _aborted.set(code.name)
    await context.abort(code, message, trailing)


class Edge:
    def __init__(self, core) -> None:
        self.core = core
        self.gov = core.governance

    async def guard(self, context: grpc.aio.ServicerContext, scope: str) -> ApiClient:
        md = dict(context.invocation_metadata() or ())
        auth = md.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        client = await self.gov.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        _caller.set(client)  # for the audit
        if client is None:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer API key is required")
        if scope not in client.scopes:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"this API key lacks the {scope!r} scope")
        wait = self.gov.over_quota(client)
        if wait is not None:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests for this API key",
                         (("retry-after", str(wait)),))
        return client

    async def forward(self, context, call):
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            await _abort(context, err.code(), err.details() or "", err.trailing_metadata() or ())
        except DomainError:
            raise

    async def audited(self, context, method: str, run):
        """Runs a state-changing call and records it, whatever the outcome."""
        md = dict(context.invocation_metadata() or ())
        status, resource = "OK", ""
        try:
            result, resource = await run()
            return result
        except grpc.aio.AbortError:
            status = _aborted.get() or "ABORTED"
            raise
        except InvalidArgument:
            status = "INVALID_ARGUMENT"
            raise
        except NotFound:
            status = "NOT_FOUND"
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            await self.gov.audit(client=_caller.get(), transport="grpc", method="RPC",
                                 route=method, resource=resource, status=_http_like(status),
                                 outcome=status.lower(), trace_id=trace_id_from(md.get("traceparent")))

    async def owned_order(self, context, client: ApiClient, order_id: str) -> ots.Order:
        r = await self.forward(context, self.core.ots.GetOrder(ots.GetOrderRequest(order_id=order_id)))
        if not client.owns(r.order.customer_id):
            raise NotFound("order", order_id)
        return r.order


def _http_like(status: str) -> int:
    return {"OK": 200, "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
            "NOT_FOUND": 404, "FAILED_PRECONDITION": 409, "ALREADY_EXISTS": 409,
            "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503}.get(status, 500)


def _check(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _scoped_request_id(client: ApiClient, request_id: str) -> str:
    # Each client has its own request-id space: one client cannot replay another's.
    return "gw-" + hashlib.sha256(f"{client.client_id}\0{request_id}".encode()).hexdigest()[:40]


class OrderToShipEdge(order_to_ship_pb2_grpc.OrderToShipServiceServicer):
    NAME = "/crossdock.ordertoship.v1.OrderToShipService/"

    def __init__(self, edge: Edge) -> None:
        self.e = edge
        self.cap = edge.core.settings.gateway_max_page_size

    async def SubmitOrder(self, request, context):
        async def run():
            client = await self.e.guard(context, "orders:write")
            _check(validation.submit_order(request))
            if client.customer_id and request.customer_id not in ("", client.customer_id):
                raise InvalidArgument([("customer_id", "not your customer")])
            forwarded = ots.SubmitOrderRequest()
            forwarded.CopyFrom(request)
            forwarded.request_id = _scoped_request_id(client, request.request_id)
            forwarded.customer_id = request.customer_id or client.customer_id
            forwarded.channel = client.channel
            if not forwarded.customer_id:
                raise InvalidArgument([("customer_id", "required")])
            r = await self.e.forward(context, self.e.core.ots.SubmitOrder(forwarded))
            r.order.request_id = request.request_id
            return r, r.order.order_id
        return await self.e.audited(context, self.NAME + "SubmitOrder", run)

    async def GetOrder(self, request, context):
        client = await self.e.guard(context, "orders:read")
        _check(validation.order_id(request))
        return ots.GetOrderResponse(order=await self.e.owned_order(context, client, request.order_id))

    async def ListOrders(self, request, context):
        client = await self.e.guard(context, "orders:read")
        _check(validation.list_orders(request, self.cap))
        if client.customer_id and request.customer_id not in ("", client.customer_id):
            raise InvalidArgument([("customer_id", "not your customer")])
        forwarded = ots.ListOrdersRequest()
        forwarded.CopyFrom(request)
        forwarded.customer_id = client.customer_id or request.customer_id
        return await self.e.forward(context, self.e.core.ots.ListOrders(forwarded))

    async def CancelOrder(self, request, context):
        async def run():
            client = await self.e.guard(context, "orders:write")
            _check(validation.order_id(request))
            await self.e.owned_order(context, client, request.order_id)
            r = await self.e.forward(context, self.e.core.ots.CancelOrder(request))
            return r, request.order_id
        return await self.e.audited(context, self.NAME + "CancelOrder", run)


class ReturnsEdge(returns_pb2_grpc.ReturnsServiceServicer):
    NAME = "/crossdock.returns.v1.ReturnsService/"

    def __init__(self, edge: Edge) -> None:
        self.e = edge
        self.cap = edge.core.settings.gateway_max_page_size

    async def _owned(self, context, client, return_id: str) -> rpb.CustomerReturn:
        r = await self.e.forward(context, self.e.core.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id)))
        if not client.owns(r.customer_return.customer_id):
            raise NotFound("return", return_id)
        return r.customer_return

    async def CreateReturn(self, request, context):
        async def run():
            client = await self.e.guard(context, "returns:write")
            _check(validation.create_return(request))
            await self.e.owned_order(context, client, request.order_id)
            forwarded = rpb.CreateReturnRequest()
            forwarded.CopyFrom(request)
            forwarded.request_id = _scoped_request_id(client, request.request_id)
            r = await self.e.forward(context, self.e.core.returns.CreateReturn(forwarded))
            r.customer_return.request_id = request.request_id
            return r, r.customer_return.return_id
        return await self.e.audited(context, self.NAME + "CreateReturn", run)

    async def GetReturn(self, request, context):
        client = await self.e.guard(context, "returns:read")
        _check(validation.return_id(request))
        return rpb.GetReturnResponse(customer_return=await self._owned(context, client, request.return_id))

    async def ListReturns(self, request, context):
        client = await self.e.guard(context, "returns:read")
        _check(validation.list_returns(request, self.cap))
        if client.customer_id and request.customer_id not in ("", client.customer_id):
            raise InvalidArgument([("customer_id", "not your customer")])
        forwarded = rpb.ListReturnsRequest()
        forwarded.CopyFrom(request)
        forwarded.customer_id = client.customer_id or request.customer_id
        return await self.e.forward(context, self.e.core.returns.ListReturns(forwarded))

    async def CancelReturn(self, request, context):
        async def run():
            client = await self.e.guard(context, "returns:write")
            _check(validation.return_id(request))
            await self._owned(context, client, request.return_id)
            r = await self.e.forward(context, self.e.core.returns.CancelReturn(request))
            return r, request.return_id
        return await self.e.audited(context, self.NAME + "CancelReturn", run)
