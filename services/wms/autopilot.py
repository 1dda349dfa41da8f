"""The autopilots: move due fulfilments on (pick, pack, ship), and due returns
(receive, inspect by rules), without a handheld.

Its state is the store's (status and next_step_at), so a restart resumes where
it stopped. Each fulfilment advances in its own transaction through the same
transitions as the milestone RPCs, in a span of the order's own trace; one
that lost a race changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from services.mesh.config import Settings
from services.mesh.store import Store

from . import domain, fulfilment, returns
from .fulfilment import Delays
from .statuses import FulfilmentStatus, ReturnStatus
from .tracing import in_order_trace

log = structlog.get_logger()

POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Mishaps:
    """How often the autopilot finds a unit short at picking or damaged at packing
    (CROSSDOCK_WMS_SHORT_PICK_RATE, CROSSDOCK_WMS_DAMAGE_RATE)."""

    short_pick_rate: float = 0.0
    damage_rate: float = 0.0

    @classmethod
    def from_settings(cls, s: Settings) -> Mishaps:
        return cls(s.wms_short_pick_rate, s.wms_damage_rate)


async def _one_unit_less(tx, order_id: str, rate: float) -> dict[str, int] | None:
    """With probability ``rate``: the wave as found with one unit of one line missing."""
    if rate <= 0 or random.random() >= rate:
        return None
    wave = {sku: qty for sku, qty in await fulfilment.wave_lines(tx.conn, order_id) if qty}
    if not wave:
        return None
    sku = random.choice(sorted(wave))
    return {sku: 1}


def autopilot(store: Store, delays: Delays,
              mishaps: Mishaps = Mishaps()) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def pick(tx, order_id):
        missing = await _one_unit_less(tx, order_id, mishaps.short_pick_rate)
        found = None
        if missing:
            wave = await fulfilment.wave_lines(tx.conn, order_id)
            found = {sku: qty - missing.get(sku, 0) for sku, qty in wave}
        return await fulfilment.pick(tx, order_id, delays, found)

    async def pack(tx, order_id):
        damaged = await _one_unit_less(tx, order_id, mishaps.damage_rate)
        return await fulfilment.pack(tx, order_id, delays, 0, damaged)

    steps = {
        FulfilmentStatus.ALLOCATED: pick,
        FulfilmentStatus.PICKED: pack,
        FulfilmentStatus.LABELLED: lambda tx, order_id: fulfilment.ship(tx, order_id, delays),
    }

    async def autopilot(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with store.read() as conn:
                    due = await fulfilment.due_fulfilments(conn, steps)
                for order_id, status, traceparent in due:
                    if stop.is_set():
                        break
                    with in_order_trace(f"wms.autopilot advance {status.lower()}", traceparent):
                        async with store.transaction() as tx:
                            await steps[status](tx, order_id)
            except Exception:  # noqa: BLE001 - keep going; the store still says what is due
                log.exception("wms.autopilot.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S)

    return autopilot


@dataclass(frozen=True)
class ReturnsAutopilot:
    """Receives expected returns and inspects them by rules, for demos and tests
    (CROSSDOCK_WMS_RETURN_AUTOPILOT, _RECEIVE_DELAY, _INSPECT_DELAY, _RULES)."""

    enabled: bool
    receive_delay: float
    inspect_delay: float
    rules: dict[str, str]

    @classmethod
    def from_settings(cls, s: Settings) -> ReturnsAutopilot:
        return cls(s.wms_return_autopilot, s.wms_return_receive_delay, s.wms_return_inspect_delay,
                   domain.parse_return_rules(s.wms_return_rules))

    @property
    def receive_in(self) -> float | None:
        """Seconds until the autopilot receives a new expected return (None: a handheld will)."""
        return self.receive_delay if self.enabled else None

    @property
    def inspect_in(self) -> float | None:
        return self.inspect_delay if self.enabled else None


def returns_autopilot(store: Store, pilot: ReturnsAutopilot) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def returns_autopilot(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with store.read() as conn:
                    due = await returns.due_returns(conn)
                for rma_number, status, traceparent in due:
                    if stop.is_set():
                        break
                    with in_order_trace(f"wms.autopilot return {status.lower()}", traceparent):
                        async with store.transaction() as tx:
                            if status == ReturnStatus.EXPECTED:
                                await returns.receive(tx, rma_number, {}, pilot.inspect_in)
                            else:
                                await returns.autopilot_inspect(tx, rma_number, pilot.rules)
            except Exception:  # noqa: BLE001 - keep going; the store still says what is due
                log.exception("wms.returns_autopilot.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S)

    return returns_autopilot
