"""Requests that change stock from outside the warehouse floor: receipts (the
ReceiveStock RPC and ``cmd.wms.stock.receive``), bin counts (ReportStockCount)
and transfers out (``cmd.wms.stock.transfer_out``). Stock moves through
``stock.move_stock``; what a receipt or a count does to fulfilments
(backorders served, discrepancies raised) is ``fulfilment.py``'s.
"""

from __future__ import annotations

import structlog
from sqlalchemy import update

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import replenishment_pb2 as repl
from crossdock.wms.v1 import wms_pb2
from services.mesh.bus import PermanentError
from services.mesh.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain, fulfilment, replenishment, stock
from . import fulfilment_rules as rules
from .fulfilment import Delays
from .statuses import TransferStatus
from .store import stock_transfers

log = structlog.get_logger()


# ---- receipts ----


async def receive_stock(tx: Tx, req: wms_pb2.ReceiveStockRequest,
                        delays: Delays) -> list[wms_pb2.InventoryPosition]:
    """Book a receipt once (idempotent on receipt_id), then serve the backorders it unblocks.

    Each line raises on-hand stock and publishes ``wms.inventory.adjusted``.
    In the same transaction the warehouse's backordered fulfilments are
    allocated first come, first served (``domain.fcfs_allocation``).
    """
    lines = stock.lines_of(req.lines)
    if await stock.book_receipt(tx, req.receipt_id, req.warehouse_id, lines):
        await fulfilment.allocate_backorders(tx, req.warehouse_id, delays)
    return await stock.get_availability(tx.conn, [sku for sku, _ in lines], req.warehouse_id)


async def receive(tx: Tx, cmd: repl.ReceiveStock, delays: Delays) -> None:
    """Book an inbound receipt once (idempotent on receipt_id) through the same use
    case as ReceiveStock: backorders it unblocks are allocated first come, first served."""
    if not cmd.receipt_id:
        raise PermanentError("cmd.wms.stock.receive without a receipt_id")
    if await stock.receipt_booked(tx.conn, cmd.receipt_id):
        return
    if cmd.request_id:
        await replenishment.rearm_for_receipt(tx, cmd.warehouse_id, cmd.request_id)
    try:
        await receive_stock(tx, wms_pb2.ReceiveStockRequest(
            receipt_id=cmd.receipt_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines), delays)
    except DomainError as err:  # invalid lines, unknown warehouse: retrying cannot help
        raise PermanentError(str(err)) from None
    await tx.emit("wms.stock.received", repl.StockReceived(
        receipt_id=cmd.receipt_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines,
        request_id=cmd.request_id), key=cmd.receipt_id)


# ---- bin counts ----


async def report_stock_count(tx: Tx, req: wms_pb2.ReportStockCountRequest,
                             delays: Delays) -> tuple[wms_pb2.InventoryPosition, list[str]]:
    """Correct on-hand to a count; when it no longer covers the allocations, the most recently
    allocated orders that are not picked yet lose the difference (STOCK_DISCREPANCY)."""
    problems = [(f, "required") for f in ("warehouse_id", "sku") if not getattr(req, f)]
    if req.counted_on_hand < 0:
        problems.append(("counted_on_hand", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)
    subject = f"{req.warehouse_id}/{req.sku}"
    affected: list[str] = []
    while True:
        position = await stock.get_position(tx.conn, req.warehouse_id, req.sku)
        if position is None:
            raise NotFound("inventory position", subject)
        candidates = await fulfilment.allocated_waves(tx.conn, req.warehouse_id, req.sku)
        count = rules.decide_stock_count(position.on_hand, position.allocated, req.counted_on_hand,
                                         candidates)
        lost_a_race = False
        for wave, take in count.takes:
            if not await fulfilment.stock_discrepancy(tx, wave.order_id, req.sku, take, req.counted_on_hand,
                                                      delays):
                lost_a_race = True  # that order moved on meanwhile: decide again from what is there now
                break
            affected.append(wave.order_id)
        if not lost_a_race:
            break
    if count.refused:
        raise FailedPrecondition(
            f"the count {req.counted_on_hand} is below what picked orders hold "
            f"({position.allocated - sum(take for _, take in count.takes)})",
            reason="COUNT_BELOW_PICKED", subject=subject)
    if count.adjustment:
        await stock.move_stock(tx, req.warehouse_id, [(req.sku, count.adjustment)],
                               events.MOVEMENT_REASON_ADJUSTMENT, f"count {req.reference}".strip())
    if count.adjustment > 0:
        await fulfilment.allocate_backorders(tx, req.warehouse_id, delays)
    return stock.position_pb(await stock.get_position(tx.conn, req.warehouse_id, req.sku)), affected


# ---- transfers out ----


async def transfer_out(tx: Tx, cmd: repl.TransferStockOut) -> None:
    """Issue a transfer's stock from the source warehouse once (idempotent on
    transfer_id), all or nothing, from available stock; else refuse it."""
    lines = stock.lines_of(cmd.lines)
    if not cmd.transfer_id or not cmd.warehouse_id:
        raise PermanentError("cmd.wms.stock.transfer_out needs transfer_id and warehouse_id")
    if not await insert_ignore(tx.conn, stock_transfers, dict(
            transfer_id=cmd.transfer_id, warehouse_id=cmd.warehouse_id,
            destination_warehouse_id=cmd.destination_warehouse_id, status=TransferStatus.PENDING,
            at=utcnow())):
        return
    fields = dict(transfer_id=cmd.transfer_id, warehouse_id=cmd.warehouse_id,
                  destination_warehouse_id=cmd.destination_warehouse_id, lines=cmd.lines)
    known = await stock.warehouse_exists(tx.conn, cmd.warehouse_id)
    available = await stock.available(tx.conn, cmd.warehouse_id, [sku for sku, _ in lines]) if known else {}
    refusal = domain.transfer_refusal(lines, known, cmd.warehouse_id, available)
    status = TransferStatus.REFUSED if refusal else TransferStatus.ISSUED
    if refusal is None:
        for sku, qty in lines:
            await stock.move_stock(tx, cmd.warehouse_id, [(sku, -qty)], events.MOVEMENT_REASON_TRANSFER,
                                   cmd.transfer_id)
    await tx.conn.execute(update(stock_transfers).where(
        stock_transfers.c.transfer_id == cmd.transfer_id).values(status=status))
    if refusal is None:
        await tx.emit("wms.stock.transferred_out", repl.StockTransferredOut(**fields), key=cmd.transfer_id)
        return
    code, reason = refusal
    await tx.emit("wms.stock.transfer_refused", repl.StockTransferRefused(
        reason_code=code, reason=reason, **fields), key=cmd.transfer_id)
    log.info("wms.transfer.refused", transfer_id=cmd.transfer_id, reason_code=code, reason=reason)
