"""WMS replenishment: the reorder-point rules and replica, and the trigger that asks
ERP for stock once per crossing. (The stock commands a replenishment sends,
inbound receipts and transfers out, are ``stock_commands.py``'s.)

Rules (pure functions at the top, unit-tested):

- **Inventory position** of a SKU in a warehouse = on hand - allocated -
  backordered demand (the quantities of the fulfilment lines of that
  warehouse's BACKORDERED fulfilments, less what earlier shipments carried or
  exception decisions cancelled). It is what the warehouse could still
  promise.
- **Crossing.** Each (warehouse, SKU) with a reorder point has a trigger flag
  (``reorder_points.below``). When the position is below the reorder point and
  the flag is clear, the flag is set and ONE ``wms.replenishment.requested``
  is published; further picks, allocations and backorders while it is set ask
  for nothing. The flag is cleared (re-armed) when the position is back at or
  above the reorder point, or when the replenishment answering the open
  request is received (``cmd.wms.stock.receive`` with its ``request_id``): a
  position still below after that receipt then asks again at once, so
  backorders never wait for a crossing that cannot come.
- **Quantity** (order up to): reorder_point + reorder_quantity - position.
  After the delivery (and with no other change) the position is
  reorder_point + reorder_quantity.

The check runs in the transaction of the change that moved the position (the
stock rows and the trigger row are locked until commit; SQLite has one
writer), so concurrent picks cannot publish two requests for one crossing: the
flag is set with a conditional UPDATE, and only the transaction that changed
it publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import Enum

import structlog
from sqlalchemy import func, select, update

from crossdock.erp.v1 import replenishment_pb2 as erp_repl
from crossdock.wms.v1 import replenishment_pb2 as repl
from services.mesh.bus import PermanentError
from services.mesh.store import Tx, insert_ignore, utcnow

from .statuses import FulfilmentStatus
from .store import fulfilment_lines, fulfilments, reorder_points, stock

log = structlog.get_logger()


# ---- rules (pure) ----


class Trigger(Enum):
    REQUEST = "request"  # crossed below: publish one request, set the flag
    REARM = "rearm"  # back at or above: clear the flag


def inventory_position(on_hand: int, allocated: int, backordered: int) -> int:
    """What the warehouse could still promise: on hand - allocated - backordered demand."""
    return on_hand - allocated - backordered


def trigger(below: bool, position: int, reorder_point: int) -> Trigger | None:
    """What a position means for a trigger that is (or is not) already below."""
    if position < reorder_point and not below:
        return Trigger.REQUEST
    if position >= reorder_point and below:
        return Trigger.REARM
    return None


def order_up_to_quantity(position: int, reorder_point: int, reorder_quantity: int) -> int:
    """Order up to reorder_point + reorder_quantity (at least one unit)."""
    return max(reorder_point + reorder_quantity - position, 1)


# ---- the trigger (runs inside the changing transaction) ----


async def check_positions(tx: Tx, warehouse_id: str, skus: Iterable[str]) -> None:
    """Re-evaluate the replenishment trigger of these SKUs in this warehouse."""
    skus = sorted(set(skus))
    if not skus:
        return
    conn = tx.conn
    rp = reorder_points.c
    points = (await conn.execute(
        select(reorder_points).where(rp.warehouse_id == warehouse_id, rp.sku.in_(skus))
        .order_by(rp.sku).with_for_update())).all()
    if not points:
        return
    wanted = [point.sku for point in points]
    held = {row.sku: (row.on_hand, row.allocated) for row in (await conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.allocated)
        .where(stock.c.warehouse_id == warehouse_id, stock.c.sku.in_(wanted)))).all()}
    order, line = fulfilments.c, fulfilment_lines.c
    backordered = dict((await conn.execute(
        select(line.sku, func.sum(line.quantity - line.shipped - line.cancelled))
        .join(fulfilments, order.order_id == line.order_id)
        .where(order.warehouse_id == warehouse_id, order.status == FulfilmentStatus.BACKORDERED,
               line.sku.in_(wanted))
        .group_by(line.sku))).all())
    for point in points:
        on_hand, allocated = held.get(point.sku, (0, 0))
        waiting = int(backordered.get(point.sku) or 0)
        position = inventory_position(on_hand, allocated, waiting)
        action = trigger(point.below, position, point.reorder_point)
        key = (rp.warehouse_id == warehouse_id) & (rp.sku == point.sku)
        if action is Trigger.REQUEST:
            request_id = str(uuid.uuid4())
            changed = await conn.execute(update(reorder_points).where(key, rp.below.is_(False)).values(
                below=True, request_id=request_id, requested_at=utcnow()))
            if not changed.rowcount:
                continue
            quantity = order_up_to_quantity(position, point.reorder_point, point.reorder_quantity)
            await tx.emit("wms.replenishment.requested", repl.ReplenishmentRequested(
                request_id=request_id, sku=point.sku, warehouse_id=warehouse_id, position=position,
                reorder_point=point.reorder_point, reorder_quantity=point.reorder_quantity,
                quantity=quantity, on_hand=on_hand, allocated=allocated, backordered=waiting),
                key=f"{warehouse_id}/{point.sku}", event_id=request_id)
            log.info("wms.replenishment.requested", warehouse_id=warehouse_id, sku=point.sku,
                     position=position, reorder_point=point.reorder_point, quantity=quantity,
                     request_id=request_id)
        elif action is Trigger.REARM:
            await conn.execute(update(reorder_points).where(key, rp.below.is_(True)).values(below=False))
            log.info("wms.replenishment.rearmed", warehouse_id=warehouse_id, sku=point.sku, position=position)


# ---- the reorder-point replica (erp.reorderpoint.upserted) ----


async def replicate_reorder_point(tx: Tx, point: erp_repl.ReorderPoint) -> None:
    """Apply a reorder point unless this replica holds its revision or a newer one
    (revision 0 always applies); the trigger keeps its state and is re-evaluated."""
    if not point.sku or not point.warehouse_id:
        raise PermanentError("a reorder point needs sku and warehouse_id")
    rp = reorder_points.c
    key = (rp.warehouse_id == point.warehouse_id) & (rp.sku == point.sku)
    values = dict(reorder_point=point.reorder_point, reorder_quantity=point.reorder_quantity,
                  revision=point.revision, updated_at=utcnow())
    if not await insert_ignore(tx.conn, reorder_points, dict(
            warehouse_id=point.warehouse_id, sku=point.sku, below=False, request_id="", **values)):
        current = (await tx.conn.execute(select(rp.revision).where(key).with_for_update())).one()
        if point.revision and current.revision >= point.revision:
            log.info("replica.stale_ignored", table="reorder_points", key=f"{point.warehouse_id}/{point.sku}",
                     revision=point.revision, held=current.revision)
            return
        await tx.conn.execute(update(reorder_points).where(key).values(**values))
    await check_positions(tx, point.warehouse_id, [point.sku])


async def rearm_for_receipt(tx: Tx, warehouse_id: str, request_id: str) -> None:
    """The replenishment answering an open request is received: clear its trigger, so a
    position still below after this receipt asks again (backorders never wait for a
    crossing that cannot come)."""
    rp = reorder_points.c
    await tx.conn.execute(update(reorder_points).where(
        rp.warehouse_id == warehouse_id, rp.request_id == request_id, rp.below.is_(True)).values(below=False))
