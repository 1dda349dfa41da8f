"""WMS replenishment: the reorder-point replica, the trigger that asks ERP for
stock once per crossing, and the stock commands a replenishment sends
(inbound receipts and transfers out).

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
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import replenishment_pb2 as repl
from crossdock.wms.v1 import wms_pb2
from services.mesh.bus import PermanentError
from services.mesh.errors import DomainError
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain, service
from .store import fulfilment_lines, fulfilments, receipts, reorder_points, stock, stock_transfers

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
    wanted = [p.sku for p in points]
    held = {r.sku: r for r in (await conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.allocated)
        .where(stock.c.warehouse_id == warehouse_id, stock.c.sku.in_(wanted)))).all()}
    f, fl = fulfilments.c, fulfilment_lines.c
    backordered = dict((await conn.execute(
        select(fl.sku, func.sum(fl.quantity - fl.shipped - fl.cancelled))
        .join(fulfilments, f.order_id == fl.order_id)
        .where(f.warehouse_id == warehouse_id, f.status == "BACKORDERED", fl.sku.in_(wanted))
        .group_by(fl.sku))).all())
    for p in points:
        s = held.get(p.sku)
        on_hand, allocated = (s.on_hand, s.allocated) if s is not None else (0, 0)
        waiting = int(backordered.get(p.sku) or 0)
        position = inventory_position(on_hand, allocated, waiting)
        action = trigger(p.below, position, p.reorder_point)
        key = (rp.warehouse_id == warehouse_id) & (rp.sku == p.sku)
        if action is Trigger.REQUEST:
            request_id = str(uuid.uuid4())
            changed = await conn.execute(update(reorder_points).where(key, rp.below.is_(False)).values(
                below=True, request_id=request_id, requested_at=utcnow()))
            if not changed.rowcount:
                continue
            quantity = order_up_to_quantity(position, p.reorder_point, p.reorder_quantity)
            await tx.emit("wms.replenishment.requested", repl.ReplenishmentRequested(
                request_id=request_id, sku=p.sku, warehouse_id=warehouse_id, position=position,
                reorder_point=p.reorder_point, reorder_quantity=p.reorder_quantity, quantity=quantity,
                on_hand=on_hand, allocated=allocated, backordered=waiting),
                key=f"{warehouse_id}/{p.sku}", event_id=request_id)
            log.info("wms.replenishment.requested", warehouse_id=warehouse_id, sku=p.sku,
                     position=position, reorder_point=p.reorder_point, quantity=quantity,
                     request_id=request_id)
        elif action is Trigger.REARM:
            await conn.execute(update(reorder_points).where(key, rp.below.is_(True)).values(below=False))
            log.info("wms.replenishment.rearmed", warehouse_id=warehouse_id, sku=p.sku, position=position)


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


# ---- stock commands (cmd.wms.stock.*) ----


def _lines(pb_lines) -> list[domain.Line]:
    return [(x.sku, x.quantity) for x in pb_lines]


async def receive(tx: Tx, cmd: repl.ReceiveStock, delays: service.Delays) -> None:
    """Book an inbound receipt once (idempotent on receipt_id) through the same use
    case as ReceiveStock: backorders it unblocks are allocated first come, first served."""
    if not cmd.receipt_id:
        raise PermanentError("cmd.wms.stock.receive without a receipt_id")
    booked = await tx.conn.scalar(select(receipts.c.receipt_id).where(receipts.c.receipt_id == cmd.receipt_id))
    if booked is not None:
        return
    if cmd.request_id:
        # The replenishment answering the open request: re-arm its trigger, so a
        # position still below after this receipt asks again.
        rp = reorder_points.c
        await tx.conn.execute(update(reorder_points).where(
            rp.warehouse_id == cmd.warehouse_id, rp.request_id == cmd.request_id, rp.below.is_(True))
            .values(below=False))
    try:
        await service.receive_stock(tx, wms_pb2.ReceiveStockRequest(
            receipt_id=cmd.receipt_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines), delays)
    except DomainError as err:  # invalid lines, unknown warehouse: retrying cannot help
        raise PermanentError(str(err)) from None
    await tx.emit("wms.stock.received", repl.StockReceived(
        receipt_id=cmd.receipt_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines,
        request_id=cmd.request_id), key=cmd.receipt_id)


async def transfer_out(tx: Tx, cmd: repl.TransferStockOut) -> None:
    """Issue a transfer's stock from the source warehouse once (idempotent on
    transfer_id), all or nothing, from available stock; else refuse it."""
    lines = _lines(cmd.lines)
    if not cmd.transfer_id or not cmd.warehouse_id:
        raise PermanentError("cmd.wms.stock.transfer_out needs transfer_id and warehouse_id")
    if not await insert_ignore(tx.conn, stock_transfers, dict(
            transfer_id=cmd.transfer_id, warehouse_id=cmd.warehouse_id,
            destination_warehouse_id=cmd.destination_warehouse_id, status="PENDING", at=utcnow())):
        return
    fields = dict(transfer_id=cmd.transfer_id, warehouse_id=cmd.warehouse_id,
                  destination_warehouse_id=cmd.destination_warehouse_id, lines=cmd.lines)

    async def refuse(code: str, reason: str) -> None:
        await tx.conn.execute(update(stock_transfers).where(
            stock_transfers.c.transfer_id == cmd.transfer_id).values(status="REFUSED"))
        await tx.emit("wms.stock.transfer_refused", repl.StockTransferRefused(
            reason_code=code, reason=reason, **fields), key=cmd.transfer_id)
        log.info("wms.transfer.refused", transfer_id=cmd.transfer_id, reason_code=code, reason=reason)

    if problems := domain.line_problems(lines):
        await refuse("INVALID_LINES", "; ".join(f"{f}: {d}" for f, d in problems))
        return
    if not await service._warehouse_exists(tx.conn, cmd.warehouse_id):
        await refuse("UNKNOWN_WAREHOUSE", f"no warehouse {cmd.warehouse_id!r}")
        return
    short = domain.shortages(lines, await service._available(tx.conn, cmd.warehouse_id, [s for s, _ in lines]))
    if short:
        await refuse("INSUFFICIENT_STOCK", ", ".join(f"{sku} short by {qty}" for sku, qty in short))
        return
    for sku, qty in lines:
        await service._move(tx, cmd.warehouse_id, sku, -qty, events.MOVEMENT_REASON_TRANSFER, cmd.transfer_id)
    await tx.conn.execute(update(stock_transfers).where(
        stock_transfers.c.transfer_id == cmd.transfer_id).values(status="ISSUED"))
    await tx.emit("wms.stock.transferred_out", repl.StockTransferredOut(**fields), key=cmd.transfer_id)
