"""Sign-in and sign-out. The sign-in form is protected by its own double-submit
token (a cookie and a field: there is no session yet); failed attempts are
throttled per username and per address; the session cookie is HttpOnly,
SameSite=Strict, Secure over TLS, scoped to /console."""

from __future__ import annotations

import hmac
import math
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from .. import users
from .web import COOKIE, SIGN_IN_COOKIE, Refused, Web, same_origin, valid_zone, words


def _next(target: str) -> str:
    # Only a path of the console itself (never another site).
    return target if target.startswith("/console/") and not target.startswith("//") else "/console/orders"


def add(app: FastAPI, web: Web) -> None:
    def cookie_flags(request: Request) -> dict:
        return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https",
                "path": "/console"}

    def sign_in_page(request: Request, status: int = 200, error: str = "", username: str = "",
                     target: str = "/console/orders"):
        token = secrets.token_urlsafe(24)
        response = web.page(request, "sign_in.html", code=status, error=error, username=username,
                            target=target, form_token=token,
                            why=words.SIGN_IN_WHY.get(request.query_params.get("why", ""), ""))
        response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, **cookie_flags(request))
        return response

    @app.get("/")
    async def home():
        return RedirectResponse("/console/orders", status_code=303)

    @app.get("/sign-in")
    async def sign_in_form(request: Request):
        return sign_in_page(request, target=_next(request.query_params.get("next", "")))

    @app.post("/sign-in")
    async def sign_in(request: Request):
        form = await request.form()
        username = str(form.get("username") or "").strip().lower()[:64]
        password = str(form.get("password") or "")[:1024]
        target = _next(str(form.get("next") or ""))
        request.state.attempted = username
        request.state.resource = username
        sent, kept = str(form.get("form_token") or ""), request.cookies.get(SIGN_IN_COOKIE, "")
        if not (sent and kept and hmac.compare_digest(sent, kept)) or not same_origin(request):
            request.state.outcome = "csrf-refused"
            raise Refused("This sign-in form was not sent from the console. Reload the page and try again.")
        address = request.client.host if request.client else ""
        wait = await users.sign_in_wait(web.store, username, address, web.throttle)
        if wait > 0:
            request.state.outcome = "sign-in-throttled"
            return sign_in_page(request, 429,
                                f"Too many failed sign-ins. Try again in {math.ceil(wait / 60)} minute(s).",
                                username, target)
        person = await users.authenticate(web.store, username, password)
        if person is None:
            await users.record_failure(web.store, username, address, web.throttle)
            request.state.outcome = "sign-in-refused"
            return sign_in_page(request, 401, "The username or password is not right, or the account is "
                                "disabled.", username, target)
        token, _ = await users.open_session(web.store, person,
                                            valid_zone(str(form.get("time_zone") or "UTC")))
        request.state.person = person
        request.state.outcome = "signed-in"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token, **cookie_flags(request))
        response.delete_cookie(SIGN_IN_COOKIE, path="/console")
        return response

    @app.post("/sign-out")
    async def sign_out(request: Request):
        reader, _ = await web.form(request, "orders.view")
        await users.close_session(web.store, reader.session.token_hash)
        request.state.outcome = "signed-out"
        response = RedirectResponse("/console/sign-in?notice=signed-out", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response
