"""ERP message handlers: commands addressed to ERP and the events it follows."""

from __future__ import annotations

from services.mesh import metrics
from services.mesh.bus import Envelope, NotBatchable
from services.mesh.store import Tx

from . import service


async def on_command(env: Envelope, tx: Tx) -> None:
    if env.subject == "cmd.erp.salesorder.create":
        await service.create_sales_order(tx, env.body.sales_order)
    elif env.subject == "cmd.erp.salesorder.cancel":
        await service.cancel_sales_order(tx, env.body)
    elif env.subject == "cmd.erp.salesorder.cancel_lines":
        await service.cancel_sales_order_lines(tx, env.body)
    elif env.subject == "cmd.erp.invoice.post":
        await service.post_invoice(tx, env.body)
    elif env.subject == "cmd.erp.return.authorize":
        await service.authorize_return(tx, env.body)
    elif env.subject == "cmd.erp.return.cancel":
        await service.cancel_return_authorization(tx, env.body)
    elif env.subject == "cmd.erp.creditmemo.post":
        await service.post_credit_memo(tx, env.body)


async def on_wms_event(env: Envelope, tx: Tx) -> None:
    if env.subject == "wms.inventory.adjusted":
        await on_wms_events([env], tx)


async def on_wms_events(envs: list[Envelope], tx: Tx) -> None:
    """Inventory movements (one, or a fetched batch: a receiving window) applied set-based."""
    if any(env.subject != "wms.inventory.adjusted" for env in envs):
        raise NotBatchable
    await service.apply_inventory_movements(tx, [(env.body, env.id) for env in envs])
    for env in envs:
        # Freshness of the ledger: the WMS movement (its event time) -> applied here.
        if (age := metrics.seconds_since(env.time)) is not None:
            metrics.observe_business("inventory_update_freshness", age)
