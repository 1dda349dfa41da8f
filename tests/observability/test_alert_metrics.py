"""The metrics the alerts read (deploy/prometheus), each measured where it happens: dead
letters waiting (a real nats-server), circuit breakers (purgatory, as Clients builds
them), time waited for the ERP posting limit (aiolimiter), the last reconciliation."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from aiolimiter import AsyncLimiter
from prometheus_client import REGISTRY

from services.mesh import metrics
from services.mesh.app import Clients
from services.mesh.bus import Bus
from services.mesh.config import load_settings
from tests.helpers import eventually


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_dead_letters_waiting_are_counted_per_consumer_from_the_dlq_stream(nats_server):
    bus = Bus("test", nats_server.url)
    await bus.connect()
    await bus.ensure_streams()
    mine, other = f"c-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    for subject in (f"dlq.{mine}", f"dlq.{mine}", f"dlq.{other}"):
        await bus.js.publish(subject, b"x")
    consumers = [SimpleNamespace(stream="CMD_ERP", durable=mine)]  # not created: its info is skipped
    stopping = asyncio.Event()
    poller = asyncio.create_task(metrics.poll_jetstream(bus, consumers, stopping, 0.05))
    try:
        await eventually(lambda: value("crossdock_dead_letters", consumer=mine) == 2, what="2 waiting")
        assert value("crossdock_dead_letters", consumer=other) is None  # another service's consumer
        first = await bus.js.get_msg("DLQ", 1)
        await bus.js.delete_msg("DLQ", first.seq)  # what a replay or a discard does
        await eventually(lambda: value("crossdock_dead_letters", consumer=mine) == 1, what="1 left")
    finally:
        stopping.set()
        await poller
        await bus.close()


async def test_an_open_breaker_is_reported_until_its_ttl_lets_a_trial_call_through():
    clients = Clients(load_settings(breaker_threshold=2, breaker_ttl=0.3))
    name = f"down-{uuid.uuid4().hex[:8]}"
    breaker = await clients.breakers.get_breaker(name)
    assert value("crossdock_circuit_breaker_open", downstream=name) == 0
    for _ in range(2):
        try:
            async with breaker:
                raise ConnectionError("downstream away")
        except ConnectionError:
            pass
    assert value("crossdock_circuit_breaker_open", downstream=name) == 1
    assert value("crossdock_circuit_breaker_opened_total", downstream=name) == 1
    # Past its ttl the next call is a trial: no longer failing fast.
    await eventually(lambda: value("crossdock_circuit_breaker_open", downstream=name) == 0,
                     what="the breaker's ttl to pass")
    async with breaker:
        pass  # the trial succeeds: closed
    assert value("crossdock_circuit_breaker_open", downstream=name) == 0
    assert value("crossdock_circuit_breaker_opened_total", downstream=name) == 1


async def test_time_waited_for_the_posting_limit_is_counted_per_consumer():
    consumer = f"c-{uuid.uuid4().hex[:8]}"
    limiter = AsyncLimiter(4, 1)  # 4 postings per second, a burst of 4
    for _ in range(4):
        await metrics.acquire_posting(limiter, consumer)
    burst = value("crossdock_posting_throttled_seconds_total", consumer=consumer)
    for _ in range(2):
        await metrics.acquire_posting(limiter, consumer)
    # Two more in the same second had to wait for the limit (at least a quarter second).
    assert value("crossdock_posting_throttled_seconds_total", consumer=consumer) - burst >= 0.25


def test_the_last_reconciliation_run_of_a_scope_replaces_the_previous_figures():
    scope = f"WH-{uuid.uuid4().hex[:8]}"
    metrics.reconciliation_run(trigger="schedule", scope=scope, drifted=3, repaired=1)
    assert value("crossdock_reconciliation_drift_positions", scope=scope, repaired="false") == 2
    assert value("crossdock_reconciliation_drift_positions", scope=scope, repaired="true") == 1
    first = value("crossdock_reconciliation_last_run_timestamp_seconds", scope=scope)
    metrics.reconciliation_run(trigger="request", scope=scope, drifted=0, repaired=0)
    assert value("crossdock_reconciliation_drift_positions", scope=scope, repaired="false") == 0
    assert value("crossdock_reconciliation_last_run_timestamp_seconds", scope=scope) >= first
    metrics.reconciliation_run(trigger="request", scope="", drifted=1, repaired=0)
    assert value("crossdock_reconciliation_drift_positions", scope="*", repaired="false") == 1
