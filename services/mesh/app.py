"""The one composition root every service shares: ``ServiceApp`` and ``run``.

A service module provides ``metadata`` (its tables), a migrations folder and a
``bootstrap(app)`` that registers its gRPC servicer, its consumers and its
background loops. ``run`` does the rest: config, logs, migrations, streams,
health (NOT_SERVING while starting and draining), reflection, and a graceful
stop on SIGTERM/SIGINT — stop taking work, finish in-flight, drain NATS, close
the store.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import nats.errors
import structlog
from aiolimiter import AsyncLimiter
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from sqlalchemy import MetaData
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from crossdock.admin.v1 import admin_pb2_grpc

from . import contracts, faults, metrics, telemetry, tls
from .bus import BatchHandler, Bus, Consumer, Handlers, OutboxRelay
from .config import Settings, load_settings
from .deadletters import DeadLetterServicer
from .errors import DownstreamUnavailable
from .grpcutil import SERVER_OPTIONS, ErrorInterceptor, client_channel
from .log import configure_logging
from .store import Store

log = structlog.get_logger()

_STUBS: dict[str, tuple[str, str]] = {
    # service -> (module, stub class); imported lazily
    "erp": ("crossdock.erp.v1.erp_pb2_grpc", "ErpServiceStub"),
    "wms": ("crossdock.wms.v1.wms_pb2_grpc", "WmsServiceStub"),
    "tms": ("crossdock.tms.v1.tms_pb2_grpc", "TmsServiceStub"),
    "ordertoship": ("crossdock.ordertoship.v1.order_to_ship_pb2_grpc", "OrderToShipServiceStub"),
    "returns": ("crossdock.returns.v1.returns_pb2_grpc", "ReturnsServiceStub"),
}
_FULL_NAMES = {
    "erp": "crossdock.erp.v1.ErpService",
    "wms": "crossdock.wms.v1.WmsService",
    "tms": "crossdock.tms.v1.TmsService",
    "ordertoship": "crossdock.ordertoship.v1.OrderToShipService",
    "returns": "crossdock.returns.v1.ReturnsService",
}


TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ResilientStub:
    """A stub whose every call has a deadline and goes through the downstream's
    circuit breaker: after ``breaker_threshold`` transient failures in a row
    calls fail fast with DownstreamUnavailable until ``breaker_ttl`` passes."""

    def __init__(self, service: str, stub: Any, breakers: AsyncCircuitBreakerFactory,
                 timeout: float) -> None:
        self._service = service
        self._stub = stub
        self._breakers = breakers
        self._timeout = timeout

    def __getattr__(self, method: str):
        call = getattr(self._stub, method)

        async def invoke(request, timeout: float | None = None, **kw):
            breaker = await self._breakers.get_breaker(self._service)
            try:
                async with breaker:
                    return await call(request, timeout=timeout or self._timeout, **kw)
            except OpenedState:
                raise DownstreamUnavailable(self._service) from None

        return invoke

    async def is_open(self) -> bool:
        breaker = await self._breakers.get_breaker(self._service)
        return breaker.context.state == "opened"


class Clients:
    """Lazily created stubs to the other services (one channel each)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, ResilientStub] = {}
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.breaker_threshold, default_ttl=settings.breaker_ttl,
            # Only a downstream that is away counts against its breaker, not
            # its answers (NOT_FOUND, INVALID_ARGUMENT…).
            exclude=[(grpc.aio.AioRpcError, lambda e: e.code() not in TRANSIENT)],
        )
        self.breakers.add_listener(metrics.breaker_listener)  # crossdock_circuit_breaker_open

    def stub(self, service: str) -> ResilientStub:
        if service not in self._stubs:
            import importlib

            module, cls = _STUBS[service]
            channel = client_channel(self.settings.addr(service), [_FULL_NAMES[service]],
                                     tls_dir=self.settings.tls_dir)
            self._channels[service] = channel
            raw = getattr(importlib.import_module(module), cls)(channel)
            self._stubs[service] = ResilientStub(service, raw, self.breakers, self.settings.rpc_timeout)
        return self._stubs[service]

    def stub_of(self, service: str, stub_class: type, full_name: str) -> ResilientStub:
        """A stub of another API a service serves (e.g. its DeadLetterService), at its address."""
        key = f"{service}:{full_name}"
        if key not in self._stubs:
            channel = client_channel(self.settings.addr(service), [full_name], tls_dir=self.settings.tls_dir)
            self._channels[key] = channel
            self._stubs[key] = ResilientStub(service, stub_class(channel), self.breakers,
                                             self.settings.rpc_timeout)
        return self._stubs[key]

    @property
    def erp(self) -> Any:
        return self.stub("erp")

    @property
    def wms(self) -> Any:
        return self.stub("wms")

    @property
    def tms(self) -> Any:
        return self.stub("tms")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def check_dispatch(durable: str, handlers: Handlers) -> None:
    """A dispatch table must name exactly the contract's subjects routed to its consumer."""
    routed, handled = set(contracts.routed_subjects(durable)), set(handlers)
    if routed != handled:
        raise ValueError(
            f"consumer {durable}: no handler for {sorted(routed - handled) or 'none'}; "
            f"handlers for subjects it does not receive: {sorted(handled - routed) or 'none'} "
            "(services/mesh/contracts.py SUBSCRIPTIONS)")


class ServiceApp:
    def __init__(self, name: str, settings: Settings, metadata: MetaData, *,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.name = name
        self.settings = settings
        self.log = structlog.get_logger().bind(service=name)
        self.store = Store(name, settings.store_url(name), metadata)
        self.bus = Bus(name, settings.nats_url, replicas=settings.stream_replicas)
        self.clients = Clients(settings)
        # Outermost first: the trace span, then latency, then the service's own (the
        # gateway's guard: it sees every call's final status), then error mapping.
        chain = [*telemetry.server_interceptors(), metrics.ServerMetricsInterceptor(),
                 *interceptors, ErrorInterceptor()]
        if faults.enabled():
            chain.append(faults.FaultInterceptor())
        self.server = grpc.aio.server(interceptors=chain, options=SERVER_OPTIONS)
        # Shared by the consumers that post into a rate-limited system (ERP).
        self.posting_limiter = (AsyncLimiter(settings.erp_posting_rate, 1)
                                if settings.erp_posting_rate else None)
        self.health = health.aio.HealthServicer()
        self.relay = OutboxRelay(self.store, self.bus, poll_interval=settings.outbox_poll_interval)
        self.consumers: list[Consumer] = []
        self._loops: list[Callable[[asyncio.Event], Awaitable[None]]] = []
        self._service_names: list[str] = []
        self.stopping = asyncio.Event()

    # ---- registration (called from a service's bootstrap) ----

    def add_servicer(self, add_to_server: Callable[[Any, grpc.aio.Server], None],
                     servicer: Any, full_name: str) -> None:
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    def add_consumer(self, durable: str, handlers: Handlers, *, rate_limited: bool = False,
                     batch_handler: BatchHandler | None = None) -> None:
        """The durable consumer ``durable`` of ``contracts.SUBSCRIPTIONS`` (its stream and
        subjects come from there) with its dispatch table, which must handle exactly the
        subjects routed to it. ``rate_limited`` handlers share ``posting_limiter``; a
        ``batch_handler`` takes a fetched batch at once (set-based), else one by one."""
        subscription = contracts.SUBSCRIPTIONS[durable]
        if subscription.service != self.name:
            raise ValueError(f"consumer {durable} belongs to {subscription.service}, not {self.name}")
        check_dispatch(durable, handlers)
        s = self.settings
        self.consumers.append(
            Consumer(
                store=self.store, bus=self.bus, durable=durable, stream=subscription.stream,
                subjects=list(subscription.filters), handlers=handlers, max_deliver=s.max_deliver,
                ack_wait=s.ack_wait, backoff=(s.retry_backoff, s.retry_backoff_max),
                limiter=self.posting_limiter if rate_limited else None,
                tx_batch=s.consumer_tx_batch, tx_max_s=s.consumer_tx_max_ms / 1000,
                batch_handler=batch_handler,
            )
        )

    def add_loop(self, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """A background loop; it must return soon after the event is set."""
        self._loops.append(loop)

    # ---- lifecycle ----

    async def serve(self, migrations_dir: Path) -> None:
        s = self.settings
        # /metrics from the start: not ready (crossdock_service_ready 0) while it
        # migrates and waits for NATS is what an operator must be able to see.
        metrics.service_ready(False)
        metrics.nats_connected(False)
        metrics.serve(self.name, s)
        await self.store.migrate(migrations_dir)
        # A broker that is down or restarting delays the start; it does not fail it.
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(120), wait=wait_exponential_jitter(0.2, 5), reraise=True,
            retry=retry_if_exception_type((OSError, TimeoutError, nats.errors.Error)),
            before_sleep=lambda rs: self.log.warning("nats.unavailable_at_start",
                                                     attempt=rs.attempt_number)):
            with attempt:
                if self.bus.nc is None or self.bus.nc.is_closed:
                    await self.bus.connect()
                await self.bus.ensure_streams()

        self.add_servicer(admin_pb2_grpc.add_DeadLetterServiceServicer_to_server,
                          DeadLetterServicer(self.bus), "crossdock.admin.v1.DeadLetterService")
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [*self._service_names, reflection.SERVICE_NAME, health.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{s.grpc_host}:{s.port_for(self.name)}"
        if s.tls_dir and self.name != "gateway":  # the gateway's public port: API keys, as before
            port = self.server.add_secure_port(address, tls.server_credentials(s.tls_dir, self.name))
        else:
            port = self.server.add_insecure_port(address)
        (s.resolved_data_dir / f"{self.name}{s.instance}.port").write_text(str(port))
        await self.server.start()
        metrics.track_consumers(self.consumers)

        tasks = [asyncio.create_task(self.relay.run(), name="outbox-relay")]
        tasks += [asyncio.create_task(c.run(), name=c.durable) for c in self.consumers]
        tasks += [asyncio.create_task(loop(self.stopping), name=loop.__name__) for loop in self._loops]
        tasks.append(asyncio.create_task(metrics.poll_jetstream(self.bus, self.consumers, self.stopping,
                                                               s.metrics_poll_interval),
                                         name="metrics-poller"))
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics.service_ready(True)
        self.log.info("service.started", port=port, consumers=[c.durable for c in self.consumers])

        await self.stopping.wait()
        self.log.info("service.stopping")
        metrics.service_ready(False)
        await self.health.enter_graceful_shutdown()
        for c in self.consumers:
            c.stop()
        self.log.debug("shutdown.step", step="server.stop")
        await self.server.stop(grace=5)
        self.log.debug("shutdown.step", step="tasks")
        # Consumers finish the message in hand; loops see the event.
        done, pending = await asyncio.wait(tasks[1:], timeout=10) if tasks[1:] else (set(), set())
        for t in pending:
            t.cancel()
        # A last flush of the outbox before leaving (whatever stays is sent
        # by the next start).
        self.relay.stop()
        try:
            await asyncio.wait_for(self.relay.relay_once(), timeout=5)
        except Exception:  # noqa: BLE001
            pass
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.log.debug("shutdown.step", step="close")
        await self.clients.close()
        self.log.debug("shutdown.step", step="bus.close")
        await self.bus.close()
        await self.store.close()
        self.log.info("service.stopped")


def run(name: str, metadata: MetaData, migrations_dir: Path,
        bootstrap: Callable[[ServiceApp], None], *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
    """Entry point of ``python -m services.<name>`` (and ``python -m gateway``);
    ``interceptors`` go between the metrics and the error mapping."""
    settings = load_settings()
    tls.set_identity(name)  # the certificate its channels show (CROSSDOCK_TLS_DIR)
    configure_logging(name, settings.log_level, settings.log_format)
    telemetry.setup_tracing(name, settings.instance)

    async def main() -> None:
        app = ServiceApp(name, settings, metadata, interceptors=interceptors)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.stopping.set)
        bootstrap(app)
        await app.serve(migrations_dir)

    try:
        asyncio.run(main())
    finally:
        telemetry.shutdown_tracing()
