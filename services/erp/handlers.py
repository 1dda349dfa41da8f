"""ERP message handlers: commands addressed to ERP and the events it follows."""

from __future__ import annotations

from services.mesh.bus import Envelope
from services.mesh.store import Tx

from . import service


async def on_command(env: Envelope, tx: Tx) -> None:
    if env.subject == "cmd.erp.salesorder.create":
        await service.create_sales_order(tx, env.body.sales_order)
    elif env.subject == "cmd.erp.salesorder.cancel":
        await service.cancel_sales_order(tx, env.body)
    elif env.subject == "cmd.erp.invoice.post":
        await service.post_invoice(tx, env.body)


async def on_wms_event(env: Envelope, tx: Tx) -> None:
    if env.subject == "wms.inventory.adjusted":
        await service.apply_inventory_movement(tx, env.body, env.id)
