"""The console's plumbing: one Starlette/FastAPI sub-application mounted at /console.

Sessions are a random token in an HttpOnly, SameSite=Strict cookie (Secure over
TLS), only its hash in the store, ended by an idle timeout and a lifetime. Every
state-changing request carries the session's CSRF token (a form field, or the
X-CSRF-Token header for htmx) and comes from the console's own origin; every one
is audited with the person's name, refusals included. Permissions come from one
table (``users.PERMISSIONS``): a page shows only what its reader may do, and the
route refuses it anyway (403). Errors are pages in clear words, never a stack.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import users
from ..governance import fingerprint, trace_id_from
from ..problems import Problem, from_grpc
from . import words

HERE = Path(__file__).parent
COOKIE = "crossdock_session"
SIGN_IN_COOKIE = "crossdock_sign_in"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


CRASH = ("Something went wrong on our side. Try again, and if it keeps happening tell operations the "
         "reference below.")


class SignInRequired(Exception):
    def __init__(self, why: str = "none") -> None:
        super().__init__(why)
        self.why = why


class Refused(Exception):
    """A page or action the reader may not have (403), or a form without its CSRF token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reader:
    """The signed-in person of a request, with their session's CSRF token and time zone."""

    session: users.Session

    @property
    def person(self) -> users.Person:
        return self.session.person

    @property
    def csrf(self) -> str:
        return self.session.csrf_token

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.session.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    def may(self, permission: str) -> bool:
        return self.person.may(permission)


def valid_zone(name: str) -> str:
    try:
        ZoneInfo(name)
        return name
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"


class Web:
    """What every view uses: the gateway's core, templates, the session and permission checks."""

    def __init__(self, core) -> None:
        self.core = core
        self.store = core.store
        self.settings = core.settings
        self.gov = core.governance
        self.rules = users.SessionRules(core.settings.console_idle_timeout,
                                        core.settings.console_session_lifetime)
        self.throttle = users.Throttle(core.settings.console_sign_in_attempts,
                                       core.settings.console_sign_in_attempts * 4,
                                       core.settings.console_sign_in_window)
        env = Environment(loader=FileSystemLoader(HERE / "templates"),
                          autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
        env.globals.update(words=words, jaeger=core.settings.jaeger_ui_url.rstrip("/"))
        env.filters.update(words.FILTERS)
        self.templates = Jinja2Templates(env=env)

    # ---- pages ----

    def page(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        reader: Reader | None = getattr(request.state, "reader", None)
        zone = reader.zone if reader else ZoneInfo("UTC")
        context.setdefault("notice", words.NOTICES.get(request.query_params.get("notice", ""), ""))
        return self.templates.TemplateResponse(request, template, {
            "reader": reader, "nav": words.nav(reader.person) if reader else [], "zone": zone,
            "when": lambda ts, z=zone: words.when(ts, z), "ago": words.ago,
            "idem": lambda: secrets.token_urlsafe(16), **context}, status_code=code)

    # ---- who is asking ----

    async def reader(self, request: Request, permission: str = "orders.view") -> Reader:
        state, session = await users.find_session(self.store, request.cookies.get(COOKIE, ""), self.rules)
        if session is None:
            raise SignInRequired(state)
        reader = Reader(session)
        request.state.reader = reader
        request.state.person = session.person
        await users.touch_session(self.store, session)
        if not reader.may(permission):
            raise Refused(words.refusal(session.person, permission))
        return reader

    async def form(self, request: Request, permission: str) -> tuple[Reader, FormData]:
        """The reader of a state-changing request and its form, once its CSRF token and origin are checked."""
        reader = await self.reader(request, "orders.view")
        form = await request.form()
        sent = str(form.get("csrf_token") or request.headers.get("x-csrf-token") or "")
        if not (sent and hmac.compare_digest(sent, reader.csrf)) or not same_origin(request):
            request.state.outcome = "csrf-refused"
            raise Refused("This form was not sent from your console session (its security token is missing "
                          "or out of date). Reload the page and try again.")
        if not reader.may(permission):
            raise Refused(words.refusal(reader.person, permission))
        return reader, form

    async def once(self, request: Request, reader: Reader, form: FormData,
                   act: Callable[[], Awaitable[str]]) -> Response:
        """Run an action at most once per form (its ``idempotency_key``): a double click or a
        resent form gets the first answer (the same page), not a second effect."""
        key = str(form.get("idempotency_key") or "")
        if not key or len(key) > 100:
            raise Problem(400, "invalid-request", "the form has no idempotency key; reload the page")
        fields = sorted((k, str(v)) for k, v in form.multi_items()
                        if k not in ("csrf_token", "idempotency_key"))
        fp = fingerprint(request.url.path, fields)
        client = reader.person.client_id
        state, _, body = await self.gov.idempotency_begin(client, key, fp)
        if state == "replay":
            request.state.outcome = "replayed"
            return RedirectResponse(json.loads(body)["location"], status_code=303)
        if state == "mismatch":
            raise Problem(422, "invalid-request",
                          "this form was already sent with other values; reload the page")
        if state == "pending":
            raise Problem(409, "conflict", "this action is still being carried out; wait a moment and reload")
        try:
            location = await act()
        except Exception:
            await self.gov.idempotency_finish(client, key, 500, "")  # not an answer: may be tried again
            raise
        await self.gov.idempotency_finish(client, key, 303, json.dumps({"location": location}))
        return RedirectResponse(location, status_code=303)

    async def call(self, coro, kind: str = "", name: str = ""):
        """A downstream call; its failure as a Problem (shown as a page in clear words)."""
        try:
            return await coro
        except Exception as err:  # noqa: BLE001
            raise from_grpc(err, kind, name) from None


def same_origin(request: Request) -> bool:
    """A state-changing request must come from the console's own pages (Origin, else Referer)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not sent by every client; the CSRF token still decides
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def with_notice(path: str, notice: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}notice={quote(notice)}"


def create_app(core, views: list[Callable[[FastAPI, Web], None]]) -> FastAPI:
    web = Web(core)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def _headers_and_audit(request: Request, call_next):
        request.state.trace_id = trace_id_from(request.headers.get("traceparent"))
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - a page in clear words, and the refusal still audited
            core.log.exception("console.unhandled", path=request.url.path)
            response = error_page(request, 500, "Something went wrong", CRASH)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            person = getattr(request.state, "person", None)
            route = request.scope.get("route")
            status = response.status_code
            await web.gov.audit(
                client=person, transport="console", method=request.method,
                route=("/console" + (getattr(route, "path_format", None) or request.url.path.removeprefix(
                    "/console")))[:200], resource=getattr(request.state, "resource", ""), status=status,
                outcome=getattr(request.state, "outcome", "") or ("ok" if status < 400 else f"http-{status}"),
                trace_id=request.state.trace_id,
                actor=person.display_name if person else getattr(request.state, "attempted", ""),
                detail=getattr(request.state, "detail", ""))
        return response

    def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="error" role="alert">{_esc(message)}</p>', status_code=status)
        return web.page(request, "error.html", code=status, title=title, message=message,
                        trace_id=getattr(request.state, "trace_id", ""))

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"/console/sign-in?why={exc.why}&next={quote(target)}"
        if request.headers.get("hx-request") or request.method != "GET":
            return Response(status_code=401, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        request.state.outcome = getattr(request.state, "outcome", "") or "forbidden"
        return error_page(request, 403, "Not allowed", exc.message)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return error_page(request, exc.status, words.problem_title(exc.status), words.problem_text(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        fields = ", ".join(sorted({str(e.get("loc", ("?",))[-1]) for e in exc.errors()}))
        return error_page(request, 422, "Check the form", f"Some values are not valid: {fields}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_page(request, 404, "Not found", "There is no such page in the console.")
        if exc.status_code == 405:
            return error_page(request, 405, "Not possible", "This page cannot be used that way.")
        return error_page(request, exc.status_code, "Something is wrong", "The request could not be handled.")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        core.log.exception("console.unhandled", path=request.url.path)
        return error_page(request, 500, "Something went wrong", CRASH)

    for add in views:
        add(app, web)
    return app


def _esc(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def now() -> datetime:
    return datetime.now(UTC)
