"""TMS message handlers: commands addressed to TMS and the events it follows."""

from __future__ import annotations

from services.mesh.bus import Envelope
from services.mesh.store import Tx

from . import service


async def on_command(env: Envelope, tx: Tx) -> None:
    if env.subject == "cmd.tms.shipment.book":
        await service.book_shipment(tx, env.body)


async def on_wms_event(env: Envelope, tx: Tx) -> None:
    if env.subject == "wms.fulfilment.shipped":
        await service.mark_dispatched(tx, env.body.fulfilment_order)


async def on_master_data(env: Envelope, tx: Tx) -> None:
    if env.subject == "erp.item.upserted":
        await service.replicate_item(tx, env.body.item, env.body.revision)
    elif env.subject == "erp.customer.upserted":
        await service.replicate_customer(tx, env.body.customer, env.body.revision)
