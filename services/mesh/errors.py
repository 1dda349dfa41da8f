"""Domain errors, and their translation into gRPC status with google.rpc details.

Domain code raises these; the server interceptor turns them into
INVALID_ARGUMENT (with BadRequest field violations), NOT_FOUND (ResourceInfo),
FAILED_PRECONDITION (PreconditionFailure) or ALREADY_EXISTS, each with an
ErrorInfo whose ``reason`` is a stable machine code.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "crossdock"


class DomainError(Exception):
    code = code_pb2.UNKNOWN
    reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason

    def details(self) -> list:
        return [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)]

    def to_status(self) -> status_pb2.Status:
        packed = []
        for detail in self.details():
            any_ = any_pb2.Any()
            any_.Pack(detail)
            packed.append(any_)
        return status_pb2.Status(code=self.code, message=self.message, details=packed)


class InvalidArgument(DomainError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[tuple[str, str]], message: str | None = None) -> None:
        self.violations = violations
        summary = "; ".join(f"{f}: {d}" for f, d in violations)
        super().__init__(message or f"invalid request: {summary}")

    def details(self) -> list:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in self.violations
            ]
        )
        return [*super().details(), bad]


class NotFound(DomainError):
    code = code_pb2.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(message or f"{resource_type} {name!r} not found")

    def details(self) -> list:
        info = error_details_pb2.ResourceInfo(resource_type=self.resource_type, resource_name=self.name)
        return [*super().details(), info]


class FailedPrecondition(DomainError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, reason: str | None = None, subject: str = "") -> None:
        super().__init__(message, reason=reason)
        self.subject = subject

    def details(self) -> list:
        pre = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=self.reason, subject=self.subject, description=self.message
                )
            ]
        )
        return [*super().details(), pre]


class AlreadyExists(DomainError):
    code = code_pb2.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class DownstreamUnavailable(DomainError):
    """A system this call depends on is down (its circuit breaker is open)."""

    code = code_pb2.UNAVAILABLE
    reason = "DOWNSTREAM_UNAVAILABLE"

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(f"{service} is unavailable; try again shortly")


def status_details(err: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to an error, if any (client side)."""
    return rpc_status.from_call(err)  # type: ignore[arg-type]
