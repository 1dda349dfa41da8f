"""The audit log: every state-changing call of the API, the gRPC edge and the console, with
the person's name for the console's, newest first."""

from __future__ import annotations

from fastapi import FastAPI, Request

from ..problems import Problem
from .web import Web


def add(app: FastAPI, web: Web) -> None:
    @app.get("/audit")
    async def audit(request: Request):
        await web.reader(request, "audit.view")
        before = request.query_params.get("before", "")
        if before and not before.isdigit():
            raise Problem(422, "invalid-request", "before: a number")
        transport = request.query_params.get("transport", "")
        if transport not in ("", "http", "grpc", "console"):
            raise Problem(422, "invalid-request", "transport: http, grpc or console")
        resource = request.query_params.get("resource", "")[:128]
        rows = await web.gov.audit_page(limit=50, before_id=int(before) if before else None, client_id="",
                                        transport=transport, resource=resource)
        return web.page(request, "audit.html", rows=rows, q={"transport": transport, "resource": resource},
                        next_before=rows[-1]["id"] if len(rows) == 50 else None)
