"""ERP message handlers: a dispatch table per consumer (subject -> handler), each handing
the message to the ERP backend (``backend.py``) inside the consumer's transaction.

The subjects each table must cover are those routed to its consumer in
``services/mesh/contracts.py``; a subject missing here is refused at start.
"""

from __future__ import annotations

from services.mesh import metrics
from services.mesh.bus import Envelope, Handlers, NotBatchable, body_to
from services.mesh.store import Tx

from .backend import ErpBackend


def commands(erp: ErpBackend) -> Handlers:
    """erp-commands: what the process services ask the ERP to post."""
    async def create_sales_order(env: Envelope, tx: Tx) -> None:
        await erp.sales_orders.create(tx, env.body.sales_order)

    return {
        "cmd.erp.salesorder.create": create_sales_order,
        "cmd.erp.salesorder.cancel": body_to(erp.sales_orders.cancel),
        "cmd.erp.salesorder.cancel_lines": body_to(erp.sales_orders.cancel_lines),
        "cmd.erp.invoice.post": body_to(erp.invoicing.post),
        "cmd.erp.return.authorize": body_to(erp.returns.authorize),
        "cmd.erp.return.cancel": body_to(erp.returns.cancel),
        "cmd.erp.creditmemo.post": body_to(erp.returns.post_credit_memo),
    }


def inventory_movements(erp: ErpBackend):
    """Inventory movements (one, or a fetched batch: a receiving window) applied set-based."""
    async def on_inventory_movements(envs: list[Envelope], tx: Tx) -> None:
        if any(env.subject != "wms.inventory.adjusted" for env in envs):
            raise NotBatchable
        await erp.ledger.apply_movements(tx, [(env.body, env.id) for env in envs])
        for env in envs:
            # Freshness of the ledger: the WMS movement (its event time) -> applied here.
            if (age := metrics.seconds_since(env.time)) is not None:
                metrics.observe_business("inventory_update_freshness", age)

    return on_inventory_movements


def wms_events(erp: ErpBackend) -> Handlers:
    """erp-wms-events: the stock movements the ledger follows."""
    batch = inventory_movements(erp)

    async def on_inventory_adjusted(env: Envelope, tx: Tx) -> None:
        await batch([env], tx)

    return {"wms.inventory.adjusted": on_inventory_adjusted}


def replenishment_events(erp: ErpBackend) -> Handlers:
    """erp-replenishment: WMS's requests, and what became of the transfers and deliveries."""
    return {
        "wms.replenishment.requested": body_to(erp.replenishment.plan),
        "wms.stock.transferred_out": body_to(erp.replenishment.transfer_issued),
        "wms.stock.transfer_refused": body_to(erp.replenishment.transfer_refused),
        "wms.stock.received": body_to(erp.replenishment.received),
    }
