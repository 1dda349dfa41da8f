"""The guard of the gateway's gRPC port: ONE server interceptor in front of every
RPC the port serves, driven by one table (``POLICIES``: method -> scope).

For each call it authenticates the bearer API key (``authorization`` metadata),
checks the method's scope and, for operations, that the client is bound to no
customer; refuses control characters in any text field of the request; takes
the client's quota; and records every state-changing call in the audit log
with its final status, whatever the outcome (refusals included) — the same
rules as the HTTP routes (``http_api.require``). A method with no entry in the
table is refused (deny by default): a new RPC cannot be served by accident
without a policy, and ``tests/gateway`` checks that every method server
reflection lists has one. Tenant rules that depend on the record (an order of
another customer answers NOT_FOUND) stay with the servicers, which read the
admitted caller with ``caller()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2

from services.mesh.errors import DomainError, InvalidArgument
from services.mesh.grpcutil import abort_with, call_unary, responses, wrap_handler

from . import validation
from .governance import ApiClient, Governance, trace_id_from


@dataclass(frozen=True)
class Policy:
    """Who may call a method: ``scope`` ("" = anyone, no key needed); ``internal``:
    only a client bound to no customer; ``audited``: a state change, recorded."""

    scope: str
    internal: bool = False
    audited: bool = False


PUBLIC = Policy("")
ADMIN_READ = Policy("admin", internal=True)
ADMIN_WRITE = Policy("admin", internal=True, audited=True)

_OTS = "/crossdock.ordertoship.v1.OrderToShipService/"
_RET = "/crossdock.returns.v1.ReturnsService/"
_DLQ = "/crossdock.admin.v1.DeadLetterService/"
_CLIENTS = "/crossdock.admin.v1.ApiClientService/"
_USERS = "/crossdock.admin.v1.UserService/"

POLICIES: dict[str, Policy] = {
    _OTS + "SubmitOrder": Policy("orders:write", audited=True),
    _OTS + "GetOrder": Policy("orders:read"),
    _OTS + "ListOrders": Policy("orders:read"),
    _OTS + "CancelOrder": Policy("orders:write", audited=True),
    # The exception work list is an operations tool: not forwarded by the edge
    # (UNIMPLEMENTED), and refused before that to anyone but an operator.
    _OTS + "ListExceptions": ADMIN_READ,
    _OTS + "GetException": ADMIN_READ,
    _OTS + "ResolveException": ADMIN_WRITE,
    _OTS + "SetExceptionPolicy": ADMIN_WRITE,
    _OTS + "ListExceptionPolicies": ADMIN_READ,
    # Timeline notes are the console's own (written for a person): not forwarded either.
    _OTS + "AddTimelineNote": ADMIN_WRITE,
    _RET + "CreateReturn": Policy("returns:write", audited=True),
    _RET + "GetReturn": Policy("returns:read"),
    _RET + "ListReturns": Policy("returns:read"),
    _RET + "CancelReturn": Policy("returns:write", audited=True),
    _RET + "AddTimelineNote": ADMIN_WRITE,
    _DLQ + "ListDeadLetters": ADMIN_READ,
    _DLQ + "GetDeadLetter": ADMIN_READ,
    _DLQ + "ReplayDeadLetter": ADMIN_WRITE,
    _DLQ + "DiscardDeadLetter": ADMIN_WRITE,
    _CLIENTS + "CreateApiClient": ADMIN_WRITE,
    _CLIENTS + "ListApiClients": ADMIN_READ,
    _CLIENTS + "RevokeApiClient": ADMIN_WRITE,
    _USERS + "CreateUser": ADMIN_WRITE,
    _USERS + "ListUsers": ADMIN_READ,
    _USERS + "DisableUser": ADMIN_WRITE,
    _USERS + "ResetPassword": ADMIN_WRITE,
    # Probes and the schema: what /healthz and /openapi.json are over HTTP.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
}


class Unauthenticated(DomainError):
    code = code_pb2.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = code_pb2.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class QuotaExceeded(DomainError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, wait: int) -> None:
        super().__init__("too many requests for this API key")
        self.wait = wait

    def details(self) -> list:
        return [*super().details(),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self.wait))]


# The admitted caller of the RPC in progress and the resource it touched (each RPC is its own task).
_caller: ContextVar[ApiClient | None] = ContextVar("caller", default=None)
_resource: ContextVar[str] = ContextVar("resource", default="")

_RESOURCE_FIELDS = ("order_id", "return_id", "dead_letter_id", "client_id", "username", "exception_id")


def caller() -> ApiClient:
    """The client the guard admitted for this call."""
    client = _caller.get()
    if client is None:  # a servicer reached without the guard: a wiring error, never a pass
        raise RuntimeError("no admitted caller: is the method in guard.POLICIES?")
    return client


def set_resource(resource: str) -> None:
    """Name the record a state-changing call created or changed (for the audit log)."""
    _resource.set(resource)


def _code(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:  # some versions give the integer
        if c.value[0] == code:
            return c.name
    return default


HTTP_LIKE = {"OK": 200, "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
             "NOT_FOUND": 404, "FAILED_PRECONDITION": 409, "ALREADY_EXISTS": 409, "ABORTED": 409,
             "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
             "DEADLINE_EXCEEDED": 504}


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, policies: dict[str, Policy] | None = None) -> None:
        self.policies = POLICIES if policies is None else policies
        self.governance: Governance | None = None

    def bind(self, governance: Governance) -> None:
        """Given the gateway's governance once its store exists (bootstrap)."""
        self.governance = governance

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # no such method: UNIMPLEMENTED
        method = handler_call_details.method
        policy = self.policies.get(method)
        if policy == PUBLIC:
            return handler

        async def around(inner, request, context):
            async with self._admitted(method, policy, request, context):
                return await call_unary(inner, request, context)

        async def stream_around(inner, request, context):
            async with self._admitted(method, policy, request, context):
                async for message in responses(inner, request, context):
                    yield message

        return wrap_handler(handler, around, stream_around)

    @contextlib.asynccontextmanager
    async def _admitted(self, method: str, policy: Policy | None, request: Any,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        md = dict(context.invocation_metadata() or ())
        _caller.set(None)
        _resource.set(_resource_of(request))
        outcome = "OK"
        try:
            await self._admit(method, policy, request, md, context)
            yield
            outcome = _code(context, "OK") if context.code() is not None else "OK"
        except grpc.aio.AbortError:
            outcome = _code(context, "UNKNOWN")
            raise
        except BaseException as exc:
            outcome = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "INTERNAL"
            raise
        finally:
            if policy is not None and policy.audited:
                await self._audit(method, outcome, md)

    async def _admit(self, method: str, policy: Policy | None, request: Any, md: dict,
                     context: grpc.aio.ServicerContext) -> None:
        gov = self.governance
        if policy is None:
            await abort_with(context, PermissionDenied(f"{method} has no access policy on this port"))
        scheme, _, token = md.get("authorization", "").partition(" ")
        client = await gov.authenticate(token.strip()) if gov and scheme.lower() == "bearer" else None
        _caller.set(client)
        if client is None:
            await abort_with(context, Unauthenticated("a valid bearer API key is required"))
        if policy.scope not in client.scopes:
            await abort_with(context, PermissionDenied(f"this API key lacks the {policy.scope!r} scope"))
        if policy.internal and client.customer_id:
            await abort_with(context, PermissionDenied(
                "operations are open only to internal clients (bound to no customer)"))
        if isinstance(request, Message) and (violations := validation.text_violations(request)):
            await abort_with(context, InvalidArgument(violations))
        wait = gov.over_quota(client)
        if wait is not None:
            await abort_with(context, QuotaExceeded(wait), (("retry-after", str(wait)),))

    async def _audit(self, method: str, outcome: str, md: dict) -> None:
        if self.governance is None:
            return
        await self.governance.audit(
            client=_caller.get(), transport="grpc", method="RPC", route=method, resource=_resource.get(),
            status=HTTP_LIKE.get(outcome, 500), outcome=outcome.lower(),
            trace_id=trace_id_from(md.get("traceparent")))


def _resource_of(request: Any) -> str:
    if isinstance(request, Message):
        for name in _RESOURCE_FIELDS:
            if name in request.DESCRIPTOR.fields_by_name and (value := getattr(request, name)):
                return str(value)[:128]
    return ""

