"""gRPC plumbing: the error-mapping interceptor and client channels."""

from __future__ import annotations

import json

import grpc
import structlog
from grpc_status import rpc_status

from . import telemetry
from .errors import DomainError

log = structlog.get_logger()

MAX_MESSAGE_BYTES = 1 * 1024 * 1024

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def _retry_service_config(services: list[str]) -> str:
    # Lookups between services are reads: retry UNAVAILABLE with jittered
    # exponential back-off (gRPC's own retry policy), within the call deadline.
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": s} for s in services],
                    "retryPolicy": {
                        "maxAttempts": 4,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def client_channel(addr: str, services: list[str]) -> grpc.aio.Channel:
    """A channel to one address, or to several replicas ("h:p,h:p") round robin."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _retry_service_config(services)),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if "," in addr:
        addr = "ipv4:" + addr
        options.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.insecure_channel(addr, options=options, interceptors=telemetry.client_interceptors())


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns DomainError into a rich status; anything else into a bare INTERNAL."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def unary(request, context: grpc.aio.ServicerContext):
            try:
                return await inner(request, context)
            except DomainError as err:
                status = rpc_status.to_status(err.to_status())
                await context.abort(status.code, status.details, status.trailing_metadata)
            except grpc.aio.AbortError:
                raise
            except grpc.aio.AioRpcError as err:
                # A downstream call failed: say which, keep its code when it is
                # one a caller can act on.
                code = err.code()
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        f"a downstream system is unavailable: {err.details()}")
                raise
            except Exception:
                log.exception("rpc.internal_error", method=method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
