"""Order-to-ship message handlers: every ERP, WMS and TMS fact about an order."""

from __future__ import annotations

import structlog

from services.mesh.bus import Envelope
from services.mesh.store import Tx

from . import service

log = structlog.get_logger()


async def on_system_event(env: Envelope, tx: Tx) -> None:
    if not await service.advance(tx, env.subject, env.body, event_time=env.time):
        log.info("event.for_unknown_order", subject=env.subject, id=env.id, key=env.key)


async def on_master_data(env: Envelope, tx: Tx) -> None:
    if env.subject == "erp.customer.upserted":
        await service.replicate_customer(tx, env.body.customer)
    elif env.subject == "erp.item.upserted":
        await service.replicate_item(tx, env.body.item)
