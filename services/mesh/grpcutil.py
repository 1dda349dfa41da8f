"""gRPC plumbing: the error-mapping interceptor, a way to wrap every kind of
method handler (unary or streaming), and client channels."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc_status import rpc_status

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


def client_channel(addr: str, services: list[str], *, max_receive_bytes: int | None = None,
                   tls_dir: str = "") -> grpc.aio.Channel:
    """THE way to open a channel to a Crossdock service (services, gateway, CLI): one
    address, or several replicas ("h:p,h:p") round robin; UNAVAILABLE retried with
    back-off for ``services``; client spans. ``max_receive_bytes``: above gRPC's 4 MB.
    ``tls_dir`` (CROSSDOCK_TLS_DIR): mutual TLS with the mesh CA, showing this process's
    own certificate (services/mesh/tls.py); empty: plaintext."""
    # OpenTelemetry is imported when a channel is opened, not when the CLI starts.
    from . import telemetry

    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _retry_service_config(services)),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if max_receive_bytes:
        options.append(("grpc.max_receive_message_length", max_receive_bytes))
    if "," in addr:
        addr = "ipv4:" + addr
        options.append(("grpc.lb_policy_name", "round_robin"))
        if tls_dir:  # several addresses: no one host name; every mesh certificate names localhost
            options.append(("grpc.ssl_target_name_override", "localhost"))
    if tls_dir:
        from . import tls

        return grpc.aio.secure_channel(addr, tls.channel_credentials(tls_dir), options=options,
                                       interceptors=telemetry.client_interceptors())
    return grpc.aio.insecure_channel(addr, options=options, interceptors=telemetry.client_interceptors())


# around(inner, request, context): runs one call of ``inner`` (a unary response);
# stream_around(inner, request, context): yields one call's responses.
Around = Callable[[Callable, Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamAround = Callable[[Callable, Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


async def call_unary(inner: Callable, request: Any, context: grpc.aio.ServicerContext) -> Any:
    """One call of a unary-response behaviour, whether it is a coroutine function or not."""
    result = inner(request, context)
    return await result if inspect.isawaitable(result) else result


async def responses(inner: Callable, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """The responses of a streaming behaviour, whichever of gRPC's styles it uses: an async
    generator, a coroutine writing with ``context.write`` (nothing to yield), or a plain iterator."""
    result = inner(request, context)
    if inspect.isasyncgen(result):
        async for message in result:
            yield message
    elif inspect.isawaitable(result):
        await result
    else:
        for message in result:
            yield message


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around,
                 stream_around: StreamAround) -> grpc.RpcMethodHandler:
    """The same method handler, every call going through ``around`` (unary and
    client-streaming methods) or ``stream_around`` (server- and bidi-streaming ones)."""
    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request, context):
            return await around(inner, request, context)

        make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler)
        return make(unary, **kw)
    inner = handler.unary_stream or handler.stream_stream

    async def streaming(request, context):
        async for message in stream_around(inner, request, context):
            yield message

    make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler)
    return make(streaming, **kw)


async def abort_with(context: grpc.aio.ServicerContext, err: DomainError,
                     trailing: tuple[tuple[str, str], ...] = ()) -> None:
    """End the call with a domain error as a rich status (google.rpc.Status in
    ``grpc-status-details-bin``, plus ``trailing``); raises grpc.aio.AbortError."""
    status = rpc_status.to_status(err.to_status())
    await context.abort(status.code, status.details, (*status.trailing_metadata, *trailing))


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns DomainError into a rich status (google.rpc.Status with its details), a
    downstream that is away into UNAVAILABLE, anything else into a bare INTERNAL
    (logged, never its text): for unary and streaming methods alike. A stream that
    fails after some responses ends with that status after them."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        async def around(inner, request, context):
            try:
                return await call_unary(inner, request, context)
            except Exception as exc:  # noqa: BLE001 - mapped, then re-raised as an abort
                await _map_error(exc, context, method)
                raise

        async def stream_around(inner, request, context):
            try:
                async for message in responses(inner, request, context):
                    yield message
            except Exception as exc:  # noqa: BLE001
                await _map_error(exc, context, method)
                raise

        return wrap_handler(handler, around, stream_around)


async def _map_error(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call with the status ``exc`` stands for (returns only for an abort already made)."""
    if isinstance(exc, grpc.aio.AbortError):
        return
    if isinstance(exc, DomainError):
        await abort_with(context, exc)
    if isinstance(exc, NotImplementedError):  # a method the servicer leaves to the generated base
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
    if isinstance(exc, grpc.aio.AioRpcError):
        # A downstream call failed: say which, keep its code when it is one a caller can act on.
        if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"a downstream system is unavailable: {exc.details()}")
        log.error("rpc.downstream_error", method=method, code=exc.code().name, details=exc.details())
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    log.exception("rpc.internal_error", method=method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
