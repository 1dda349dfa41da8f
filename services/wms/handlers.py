"""WMS message handlers: a dispatch table per consumer (subject -> handler).

Commands addressed to WMS, the master data it replicates and the reorder
points it watches. The subjects each table must cover are those routed to its
consumer in ``services/mesh/contracts.py``; a subject missing here is refused
at start.
"""

from __future__ import annotations

from services.mesh.bus import Envelope, Handler, Handlers, PermanentError, body_to
from services.mesh.store import Tx

from . import fulfilment, replenishment, replicas, returns, stock_commands
from .autopilot import ReturnsAutopilot
from .fulfilment import Delays


def _for_an_order(use_case, delays: Delays) -> Handler:
    """A fulfilment command: it must name its order."""
    async def handle(env: Envelope, tx: Tx) -> None:
        if not env.body.order_id:
            raise PermanentError(f"{env.subject} without an order_id")
        await use_case(tx, env.body, delays)
    return handle


def commands(delays: Delays, pilot: ReturnsAutopilot) -> Handlers:
    async def expect_return(env: Envelope, tx: Tx) -> None:
        await returns.expect_return(tx, env.body, pilot.receive_in)

    async def receive_stock(env: Envelope, tx: Tx) -> None:
        await stock_commands.receive(tx, env.body, delays)

    return {
        "cmd.wms.fulfilment.create": _for_an_order(fulfilment.create_fulfilment, delays),
        "cmd.wms.fulfilment.cancel": _for_an_order(fulfilment.cancel_fulfilment, delays),
        "cmd.wms.fulfilment.assign_shipment": _for_an_order(fulfilment.assign_shipment, delays),
        "cmd.wms.fulfilment.resolve": _for_an_order(fulfilment.resolve_exception, delays),
        "cmd.wms.return.expect": expect_return,
        "cmd.wms.return.cancel": body_to(returns.cancel_return),
        "cmd.wms.stock.receive": receive_stock,
        "cmd.wms.stock.transfer_out": body_to(stock_commands.transfer_out),
    }


async def item_upserted(env: Envelope, tx: Tx) -> None:
    await replicas.replicate_item(tx, env.body.item, env.body.revision)


async def customer_upserted(env: Envelope, tx: Tx) -> None:
    await replicas.replicate_customer(tx, env.body.customer, env.body.revision)


async def reorder_point_upserted(env: Envelope, tx: Tx) -> None:
    await replenishment.replicate_reorder_point(tx, env.body.reorder_point)


MASTER_DATA: Handlers = {"erp.item.upserted": item_upserted, "erp.customer.upserted": customer_upserted}
REORDER_POINTS: Handlers = {"erp.reorderpoint.upserted": reorder_point_upserted}
