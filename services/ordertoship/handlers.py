"""Order-to-ship message handlers: a dispatch table per consumer (subject -> handler).

Every ERP, WMS and TMS fact about an order goes to the workflow
(``service.advance`` -> ``workflow.react``). The subjects each table must
cover are those routed to its consumer in ``services/mesh/contracts.py``; a
subject missing here is refused at start.
"""

from __future__ import annotations

import structlog

from services.mesh.bus import Envelope, Handlers
from services.mesh.store import Tx

from . import service

log = structlog.get_logger()


async def on_system_event(env: Envelope, tx: Tx) -> None:
    if not await service.advance(tx, env.subject, env.body, event_time=env.time):
        log.info("event.for_unknown_order", subject=env.subject, id=env.id, key=env.key)


async def customer_upserted(env: Envelope, tx: Tx) -> None:
    await service.replicate_customer(tx, env.body.customer)


async def item_upserted(env: Envelope, tx: Tx) -> None:
    await service.replicate_item(tx, env.body.item)


def _to_workflow(*subjects: str) -> Handlers:
    return dict.fromkeys(subjects, on_system_event)


ERP_EVENTS = _to_workflow(
    "erp.salesorder.accepted", "erp.salesorder.rejected", "erp.salesorder.cancelled",
    "erp.salesorder.lines_cancelled", "erp.invoice.posted")
WMS_EVENTS = _to_workflow(
    "wms.fulfilment.allocated", "wms.fulfilment.backordered", "wms.fulfilment.rejected",
    "wms.fulfilment.picked", "wms.fulfilment.packed", "wms.fulfilment.shipped",
    "wms.fulfilment.cancelled", "wms.fulfilment.cancel_refused", "wms.fulfilment.exception")
TMS_EVENTS = _to_workflow("tms.shipment.booked", "tms.shipment.booking_failed")
MASTER_DATA: Handlers = {"erp.customer.upserted": customer_upserted, "erp.item.upserted": item_upserted}
