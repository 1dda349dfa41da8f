"""The autopilot: moves due fulfilments on (pick, pack, ship) without a handheld.

Its state is the store's (status and next_step_at), so a restart resumes where
it stopped. Each fulfilment advances in its own transaction through the same
transitions as the milestone RPCs, in a span of the order's own trace; one
that lost a race changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from services.mesh.store import Store

from . import service

log = structlog.get_logger()

POLL_INTERVAL_S = 0.1


def autopilot(store: Store, delays: service.Delays) -> Callable[[asyncio.Event], Awaitable[None]]:
    steps = {
        "ALLOCATED": lambda tx, order_id: service.pick(tx, order_id, delays),
        "PICKED": service.pack,
        "LABELLED": service.ship,
    }

    async def autopilot(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with store.read() as conn:
                    due = await service.due_fulfilments(conn, steps)
                for order_id, status, traceparent in due:
                    if stop.is_set():
                        break
                    with service.in_order_trace(f"wms.autopilot advance {status.lower()}", traceparent):
                        async with store.transaction() as tx:
                            await steps[status](tx, order_id)
            except Exception:  # noqa: BLE001 - keep going; the store still says what is due
                log.exception("wms.autopilot.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S)

    return autopilot
