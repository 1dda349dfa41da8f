"""RFC 9457 problem details: the one error shape of the HTTP API, with stable types,
and the mapping of the process services' gRPC status to it."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from services.mesh.errors import DomainError, status_details

PROBLEM_BASE = "https://crossdock.dev/problems/"
PROBLEM_MEDIA = "application/problem+json"

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable",
}


class Problem(Exception):
    def __init__(self, status: int, slug: str, detail: str = "", *,
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or slug)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def body(self, instance: str = "") -> dict:
        body = {"type": PROBLEM_BASE + self.slug, "title": TITLES.get(self.status, "Error"),
                "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "description"],
            "properties": {"field": {"type": "string"}, "description": {"type": "string"}}}},
    },
}


def responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the problems a route may answer."""
    out: dict = {}
    for code in codes:
        entry: dict = {"description": TITLES[code], "content": {PROBLEM_MEDIA: {"schema": PROBLEM_SCHEMA}}}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                "description": "seconds to wait"}}
        out[code] = entry
    return out


def not_found(kind: str, name: str) -> Problem:
    # The same answer for an id that does not exist and another tenant's id.
    return Problem(404, "not-found", f"{kind} {name!r} not found")


def bad_page_token(description: str = "not a page token of this listing") -> Problem:
    # A page token is opaque: a client that sends one it did not get is sending a bad request.
    return Problem(400, "invalid-page-token", "page_token is not a page token of this listing",
                   errors=[{"field": "query.page_token", "description": description}])


def from_grpc(err: Exception, kind: str = "", name: str = "") -> Problem:
    """A process/system service's error as a problem (never its stack, never a 500)."""
    if isinstance(err, DomainError):  # raised locally, e.g. an open circuit breaker
        if err.code == 14:
            return Problem(503, "unavailable", err.message, headers={"Retry-After": "5"})
        return Problem(502, "upstream-error", "an upstream service failed")
    if not isinstance(err, grpc.aio.AioRpcError):
        return Problem(502, "upstream-error", "an upstream service failed")
    code = err.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        errors = []
        status = status_details(err)
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                errors += [{"field": v.field, "description": v.description} for v in bad.field_violations]
        if token := [e for e in errors if e["field"] == "page_token"]:
            return bad_page_token(token[0]["description"])
        return Problem(422, "invalid-request", err.details() or "invalid request", errors=errors)
    if code == grpc.StatusCode.NOT_FOUND:
        if kind and name:  # the record the route looked up
            return not_found(kind, name)
        # Something the request refers to is missing (an item, a warehouse...): as the service said it.
        return Problem(404, "not-found", err.details() or "not found")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED):
        reason = ""
        status = status_details(err)
        for detail in status.details if status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
        return Problem(409, "conflict", err.details() or "conflict",
                       errors=[{"field": "", "description": reason}] if reason else None)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED):
        return Problem(503, "unavailable", "an upstream service is unavailable; try again shortly",
                       headers={"Retry-After": "5"})
    return Problem(502, "upstream-error", "an upstream service failed")
