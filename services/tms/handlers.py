"""TMS message handlers: a dispatch table per consumer (subject -> handler).

The subjects each table must cover are those routed to its consumer in
``services/mesh/contracts.py``; a subject missing here is refused at start.
"""

from __future__ import annotations

from services.mesh.bus import Envelope, Handlers, body_to
from services.mesh.store import Tx

from . import service


async def dispatched(env: Envelope, tx: Tx) -> None:
    await service.mark_dispatched(tx, env.body.fulfilment_order)


async def item_upserted(env: Envelope, tx: Tx) -> None:
    await service.replicate_item(tx, env.body.item, env.body.revision)


async def customer_upserted(env: Envelope, tx: Tx) -> None:
    await service.replicate_customer(tx, env.body.customer, env.body.revision)


COMMANDS: Handlers = {"cmd.tms.shipment.book": body_to(service.book_shipment)}
WMS_EVENTS: Handlers = {"wms.fulfilment.shipped": dispatched}
MASTER_DATA: Handlers = {"erp.item.upserted": item_upserted, "erp.customer.upserted": customer_upserted}
