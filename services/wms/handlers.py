"""WMS message handlers: commands addressed to WMS and the master data it replicates."""

from __future__ import annotations

from services.mesh.bus import Envelope, Handler, PermanentError
from services.mesh.store import Tx

from . import replenishment, returns, service
from .autopilot import ReturnsAutopilot


def on_command(delays: service.Delays, pilot: ReturnsAutopilot) -> Handler:
    async def on_command(env: Envelope, tx: Tx) -> None:
        if env.subject.startswith("cmd.wms.stock."):
            await replenishment.on_stock_command(env, tx, delays)
            return
        if env.subject == "cmd.wms.return.expect":
            await returns.expect_return(tx, env.body, pilot.receive_in)
            return
        if env.subject == "cmd.wms.return.cancel":
            await returns.cancel_return(tx, env.body)
            return
        if not env.body.order_id:
            raise PermanentError(f"{env.subject} without an order_id")
        if env.subject == "cmd.wms.fulfilment.create":
            await service.create_fulfilment(tx, env.body, delays)
        elif env.subject == "cmd.wms.fulfilment.cancel":
            await service.cancel_fulfilment(tx, env.body, delays)
        elif env.subject == "cmd.wms.fulfilment.assign_shipment":
            await service.assign_shipment(tx, env.body, delays)
        elif env.subject == "cmd.wms.fulfilment.resolve":
            await service.resolve_exception(tx, env.body, delays)

    return on_command


async def on_master_data(env: Envelope, tx: Tx) -> None:
    if env.subject == "erp.item.upserted":
        await service.replicate_item(tx, env.body.item, env.body.revision)
    elif env.subject == "erp.customer.upserted":
        await service.replicate_customer(tx, env.body.customer, env.body.revision)
