"""ERP message handlers: a dispatch table per consumer (subject -> handler).

The subjects each table must cover are those routed to its consumer in
``services/mesh/contracts.py``; a subject missing here is refused at start.
"""

from __future__ import annotations

from services.mesh import metrics
from services.mesh.bus import Envelope, Handlers, NotBatchable, body_to
from services.mesh.config import Settings
from services.mesh.store import Tx

from . import replenishment, service


async def create_sales_order(env: Envelope, tx: Tx) -> None:
    await service.create_sales_order(tx, env.body.sales_order)


COMMANDS: Handlers = {
    "cmd.erp.salesorder.create": create_sales_order,
    "cmd.erp.salesorder.cancel": body_to(service.cancel_sales_order),
    "cmd.erp.salesorder.cancel_lines": body_to(service.cancel_sales_order_lines),
    "cmd.erp.invoice.post": body_to(service.post_invoice),
    "cmd.erp.return.authorize": body_to(service.authorize_return),
    "cmd.erp.return.cancel": body_to(service.cancel_return_authorization),
    "cmd.erp.creditmemo.post": body_to(service.post_credit_memo),
}


async def on_inventory_adjusted(env: Envelope, tx: Tx) -> None:
    await on_inventory_movements([env], tx)


async def on_inventory_movements(envs: list[Envelope], tx: Tx) -> None:
    """Inventory movements (one, or a fetched batch: a receiving window) applied set-based."""
    if any(env.subject != "wms.inventory.adjusted" for env in envs):
        raise NotBatchable
    await service.apply_inventory_movements(tx, [(env.body, env.id) for env in envs])
    for env in envs:
        # Freshness of the ledger: the WMS movement (its event time) -> applied here.
        if (age := metrics.seconds_since(env.time)) is not None:
            metrics.observe_business("inventory_update_freshness", age)


WMS_EVENTS: Handlers = {"wms.inventory.adjusted": on_inventory_adjusted}


def replenishment_events(settings: Settings) -> Handlers:
    async def planned(env: Envelope, tx: Tx) -> None:
        await replenishment.plan(tx, env.body, settings)

    async def transfer_issued(env: Envelope, tx: Tx) -> None:
        await replenishment.transfer_issued(tx, env.body, settings)

    async def transfer_refused(env: Envelope, tx: Tx) -> None:
        await replenishment.transfer_refused(tx, env.body, settings)

    return {
        "wms.replenishment.requested": planned,
        "wms.stock.transferred_out": transfer_issued,
        "wms.stock.transfer_refused": transfer_refused,
        "wms.stock.received": body_to(replenishment.received),
    }
