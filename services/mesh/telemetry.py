"""Tracing: one trace per order across gRPC calls and JetStream messages.

A tracer provider is always installed, so that context propagates through the
``traceparent`` header of every message even when no exporter is configured.

- gRPC client and server spans come from ``opentelemetry-instrumentation-grpc``
  (``server_interceptors()`` / ``client_interceptors()``, wired in ``app.py``
  and ``grpcutil.py``).
- ``Tx.emit`` opens a PRODUCER span per message and injects *its* context into
  the outbox row's headers; ``Consumer.process`` opens a CONSUMER span whose
  parent is that producer span, so the outbox relay hop stays inside the trace.
- Export: over OTLP/gRPC when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp``)
  is set; as JSON lines to ``CROSSDOCK_TRACE_FILE`` when that is set; nowhere
  otherwise. ``OTEL_TRACES_EXPORTER=none`` turns export off. Spans are batched
  (``BatchSpanProcessor``): a collector that is away only loses spans, it
  never fails or blocks the service.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

_provider: TracerProvider | None = None


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line (for a machine without a collector)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            lines = [json.dumps(span_dict(s)) for s in spans]
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
            return SpanExportResult.SUCCESS
        except Exception:  # noqa: BLE001 - exporting must never fail the service
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def span_dict(s: ReadableSpan) -> dict:
    ctx = s.get_span_context()
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
        "name": s.name,
        "kind": s.kind.name,
        "service": s.resource.attributes.get("service.name", ""),
        "start_ns": s.start_time,
        "end_ns": s.end_time,
        "status": s.status.status_code.name,
        "attributes": {k: (v if isinstance(v, str | int | float | bool) else str(v))
                       for k, v in (s.attributes or {}).items()},
    }


def _otlp_wanted() -> bool:
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
                 if e.strip()}
    if "none" in exporters:
        return False
    return "otlp" in exporters or bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str, instance: str = "") -> TracerProvider:
    """Install the tracer provider of this process (once) with the configured exporters."""
    global _provider
    if _provider is not None:
        return _provider
    attributes = {"service.name": f"crossdock-{service}", "service.namespace": "crossdock"}
    if instance:
        attributes["service.instance.id"] = f"{service}{instance}"
    provider = TracerProvider(resource=Resource.create(attributes))
    if _otlp_wanted():
        # Imported only when used (it pulls in the OTLP protos).
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if path := os.environ.get("CROSSDOCK_TRACE_FILE"):
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path)))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing(timeout_ms: int = 5000) -> None:
    """Flush the spans still batched (at the end of a graceful stop); never raises."""
    if _provider is None:
        return
    try:
        _provider.force_flush(timeout_ms)
        _provider.shutdown()
    except Exception:  # noqa: BLE001 - best effort
        pass


def server_interceptors() -> list:
    """gRPC aio server interceptor producing a SERVER span per call."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list:
    """gRPC aio client interceptors producing a CLIENT span per call (and injecting context)."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer() -> trace.Tracer:
    return trace.get_tracer("crossdock")


@contextmanager
def producer_span(subject: str, message_id: str):
    """A PRODUCER span for one message written to the outbox; yields its headers to inject."""
    with tracer().start_as_current_span(
        f"{subject} publish", kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.operation.type": "publish",
                    "messaging.destination.name": subject, "messaging.message.id": message_id},
    ) as span:
        yield span


def inject(headers: MutableMapping[str, str]) -> None:
    propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(dict(headers))


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
