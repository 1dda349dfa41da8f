"""Prometheus metrics of a service (``prometheus_client``), served over HTTP.

``CROSSDOCK_METRICS_PORT``: unset or ``0`` picks a free port and writes it to
``<data_dir>/<service><instance>-metrics.port`` (what ``crossdock status``
reads); a number serves on that port (Kubernetes: 9464); ``-1`` turns the
endpoint off. It listens on ``CROSSDOCK_METRICS_HOST`` (default: the gRPC
host). ``CROSSDOCK_METRICS_POLL_INTERVAL`` (default 5 s) is how often the
JetStream consumer info is read.

The runtime records what it sees in one-line calls (the gRPC interceptor,
``Consumer.process``, the consumer-info poller); domain code calls
``observe_business`` / ``business_exception`` where the event happens.

What the alerts in deploy/prometheus need besides: the dead letters waiting
per consumer (the DLQ stream's per-subject counts, read by the same poller),
whether the service is ready (its gRPC health) and connected to NATS, its
circuit breakers' state, the time its consumers waited for the ERP posting
rate limit, and the drift the last inventory reconciliation found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUSINESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

GRPC_SERVER_SECONDS = Histogram(
    "crossdock_grpc_server_handling_seconds", "gRPC server call latency (unary), by method and status code",
    ["method", "code"], buckets=_LATENCY_BUCKETS)
EVENT_LAG_SECONDS = Histogram(
    "crossdock_event_processing_lag_seconds",
    "Time from a message's ce-time (written to the outbox) to its handling, by consumer",
    ["consumer"], buckets=_BUSINESS_BUCKETS)
CONSUMER_PENDING = Gauge(
    "crossdock_consumer_pending_messages",
    "Messages in the stream not yet delivered to the consumer (queue depth)", ["stream", "consumer"])
CONSUMER_ACK_PENDING = Gauge(
    "crossdock_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged",
    ["stream", "consumer"])
CONSUMER_REDELIVERED = Gauge(
    "crossdock_consumer_redelivered_messages", "Messages being redelivered", ["stream", "consumer"])
DEAD_LETTERS = Gauge(
    "crossdock_dead_letters", "Dead letters waiting on dlq.<consumer> (replay or discard them)", ["consumer"])
# Unlabelled: a process is one service (the scrape's target labels say which; a
# "service" label here would clash with the target label of that name).
SERVICE_READY = Gauge(
    "crossdock_service_ready", "1 while the service's gRPC health is SERVING; 0 while it migrates, waits for "
    "NATS or drains")
NATS_CONNECTED = Gauge("crossdock_nats_connected", "1 while the service is connected to NATS")
BREAKER_OPENED = Counter(
    "crossdock_circuit_breaker_opened", "Times the circuit breaker of a downstream service opened",
    ["downstream"])
POSTING_THROTTLED = Counter(
    "crossdock_posting_throttled_seconds", "Seconds a consumer waited for the ERP posting rate limit "
    "(CROSSDOCK_ERP_POSTING_RATE)", ["consumer"])
RECONCILIATION_RUNS = Counter(
    "crossdock_reconciliation_runs", "Inventory reconciliation runs (ERP ledger vs WMS stock)", ["trigger"])
RECONCILIATION_LAST_RUN = Gauge(
    "crossdock_reconciliation_last_run_timestamp_seconds", "When the last reconciliation run of a scope "
    "(a warehouse, or * for all) finished", ["scope"])
RECONCILIATION_DRIFT = Gauge(
    "crossdock_reconciliation_drift_positions",
    "Stock positions the last reconciliation run of a scope found drifted, repaired by it or not",
    ["scope", "repaired"])
BUSINESS_EXCEPTIONS = Counter(
    "crossdock_business_exceptions", "Business exceptions: credit_rejected, shortage_backordered, "
    "shortage_cancelled, short_pick, damaged, stock_discrepancy, carrier_failed", ["kind"])
ORDERS_FINISHED = Counter(
    "crossdock_orders_finished", "Orders that reached a final status (INVOICED, REJECTED, CANCELLED)",
    ["status"])

# The business timings the brief names, in seconds.
TIMINGS = {
    name: Histogram(f"crossdock_{name}_seconds", doc, buckets=_BUSINESS_BUCKETS)
    for name, doc in {
        "order_completion": "End-to-end workflow completion: order created -> invoiced",
        "order_release_delay": "Order received -> released to the warehouse",
        "shipment_posting_lag": "Shipment confirmed in WMS -> shipment confirmation posted to ERP",
        "invoice_timing": "Shipment confirmation posted to ERP -> invoice posted by ERP",
        "inventory_update_freshness": "WMS inventory movement -> applied to the ERP ledger",
    }.items()
}


def observe_business(name: str, seconds: float) -> None:
    """Record one business timing (a key of ``TIMINGS``); negative clock skew counts as 0."""
    TIMINGS[name].observe(max(seconds, 0.0))


def business_exception(kind: str) -> None:
    BUSINESS_EXCEPTIONS.labels(kind).inc()


def order_finished(status: str) -> None:
    ORDERS_FINISHED.labels(status).inc()


def service_ready(ready: bool) -> None:
    SERVICE_READY.set(1 if ready else 0)


def nats_connected(connected: bool) -> None:
    NATS_CONNECTED.set(1 if connected else 0)


async def acquire_posting(limiter, consumer: str) -> None:
    """Wait for the ERP posting rate limit, counting the time waited."""
    start = time.perf_counter()
    await limiter.acquire()
    POSTING_THROTTLED.labels(consumer).inc(time.perf_counter() - start)


def reconciliation_run(*, trigger: str, scope: str, drifted: int, repaired: int) -> None:
    """The outcome of one inventory reconciliation run (scope: a warehouse id, or "" for all)."""
    scope = scope or "*"
    RECONCILIATION_RUNS.labels(trigger).inc()
    RECONCILIATION_DRIFT.labels(scope, "true").set(repaired)
    RECONCILIATION_DRIFT.labels(scope, "false").set(drifted - repaired)
    RECONCILIATION_LAST_RUN.labels(scope).set_to_current_time()


def seconds_since(when: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds from ``when`` (naive = UTC) to now; None when unknown."""
    if when is None:
        return None
    now = now or datetime.now(UTC)
    when, now = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (when, now))
    return (now - when).total_seconds()


def observe_event_lag(consumer: str, ce_time: datetime | None) -> None:
    if (lag := seconds_since(ce_time)) is not None:
        EVENT_LAG_SECONDS.labels(consumer).observe(max(lag, 0.0))


# ---- consumers' counters (read from Consumer.stats at scrape time) ----

class _ConsumerStatsCollector(Collector):
    def __init__(self) -> None:
        self.consumers: list = []

    def collect(self) -> Iterable:
        families = {
            "handled": CounterMetricFamily("crossdock_messages_handled",
                                           "Messages handled (effect committed)", labels=["consumer"]),
            "duplicates": CounterMetricFamily("crossdock_messages_duplicate",
                                              "Redelivered messages dropped by the inbox",
                                              labels=["consumer"]),
            "retries": CounterMetricFamily("crossdock_message_retries",
                                           "Handling attempts that failed and were retried",
                                           labels=["consumer"]),
            "dead_lettered": CounterMetricFamily("crossdock_messages_dead_lettered",
                                                 "Messages parked on the dead-letter stream",
                                                 labels=["consumer"]),
        }
        for c in self.consumers:
            for field, family in families.items():
                family.add_metric([c.durable], getattr(c.stats, field))
        yield from families.values()


_consumer_stats = _ConsumerStatsCollector()
REGISTRY.register(_consumer_stats)


def track_consumers(consumers: list) -> None:
    _consumer_stats.consumers = consumers


async def poll_jetstream(bus, consumers: list, stopping: asyncio.Event, interval: float) -> None:
    """Queue depth and lag of this service's consumers from JetStream consumer info, and the
    dead letters waiting for each of them (the DLQ stream's message count per subject)."""
    while not stopping.is_set():
        if consumers:
            try:
                state = (await bus.js.stream_info("DLQ", subjects_filter="dlq.>")).state
            except Exception:  # noqa: BLE001 - broker away: keep the last values
                state = None
            if state is not None:
                waiting = state.subjects or {}
                for c in consumers:
                    DEAD_LETTERS.labels(c.durable).set(waiting.get(f"dlq.{c.durable}", 0))
        for c in consumers:
            try:
                info = await bus.js.consumer_info(c.stream, c.durable)
            except Exception:  # noqa: BLE001 - broker away or consumer not created yet
                continue
            CONSUMER_PENDING.labels(c.stream, c.durable).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(c.stream, c.durable).set(info.num_ack_pending or 0)
            CONSUMER_REDELIVERED.labels(c.stream, c.durable).set(info.num_redelivered or 0)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass


# ---- circuit breakers (purgatory) ----

class _BreakerCollector(Collector):
    """``crossdock_circuit_breaker_open``: 1 while a downstream's breaker is open and
    failing calls fast (opened less than its ttl ago), else 0 (closed, or half-open:
    the next call is let through as a trial)."""

    def __init__(self) -> None:
        self.breakers: dict[str, dict] = {}

    def listen(self, name: str, event_type: str, event) -> None:
        """A purgatory hook (``AsyncCircuitBreakerFactory.add_listener``)."""
        b = self.breakers.setdefault(name, {"state": "closed", "opened_at": None, "ttl": 0.0})
        if event_type == "circuit_breaker_created":
            b["ttl"] = float(event.ttl)
        elif event_type == "state_changed":
            if event.state == "opened" and b["state"] != "opened":
                BREAKER_OPENED.labels(name).inc()
            b["state"], b["opened_at"] = event.state, event.opened_at

    def collect(self) -> Iterable:
        family = GaugeMetricFamily(
            "crossdock_circuit_breaker_open",
            "1 while the circuit breaker of a downstream service is open (calls fail fast)",
            labels=["downstream"])
        now = time.time()
        for name, b in sorted(self.breakers.items()):
            is_open = b["state"] == "opened" and (b["opened_at"] or 0) + b["ttl"] > now
            family.add_metric([name], 1 if is_open else 0)
        yield family


_breakers = _BreakerCollector()
REGISTRY.register(_breakers)
breaker_listener = _breakers.listen


# ---- gRPC server latency ----

class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Observes the latency and status code of every unary call."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def unary(request, context: grpc.aio.ServicerContext):
            start = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                code = _code_name(context, "UNKNOWN")
                raise
            except Exception:
                code = "UNKNOWN"
                raise
            finally:
                if code == "OK":
                    code = _code_name(context, "OK")
                GRPC_SERVER_SECONDS.labels(method, code).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _code_name(context, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:  # some versions give the integer code
        if c.value[0] == code:
            return c.name
    return default


# ---- the HTTP endpoint ----

def port_file(data_dir: Path, service: str, instance: str = "") -> Path:
    return data_dir / f"{service}{instance}-metrics.port"


def serve(service: str, settings) -> int | None:
    """Start the /metrics endpoint (a thread); returns its port, None when turned off."""
    if settings.metrics_port < 0:
        return None
    host = settings.metrics_host or settings.grpc_host
    server, _thread = start_http_server(settings.metrics_port, addr=host)
    bound = server.server_port
    port_file(settings.resolved_data_dir, service, settings.instance).write_text(str(bound))
    log.info("metrics.serving", port=bound)
    return bound
