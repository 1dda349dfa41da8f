"""Keeping a fulfilment's or a return's events in the trace of the command that created it,
whoever (autopilot, handheld, receipt) moves it on later."""

from __future__ import annotations

from contextlib import contextmanager

from opentelemetry import context as otel_context

from services.mesh import telemetry


def current_traceparent() -> str:
    """The W3C traceparent of the current span ('' outside one): stored with a new record."""
    carrier: dict[str, str] = {}
    telemetry.inject(carrier)
    return carrier.get("traceparent", "")


def in_order_trace(name: str, traceparent: str):
    """A span in the order's own trace (the current one when it has none)."""
    context = telemetry.extract({"traceparent": traceparent}) if traceparent else None
    return telemetry.tracer().start_as_current_span(name, context=context)


@contextmanager
def order_context(traceparent: str):
    """Make the order's trace current without a span of its own, so the
    PRODUCER span of Tx.emit joins it."""
    if not traceparent:
        yield
        return
    token = otel_context.attach(telemetry.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)
