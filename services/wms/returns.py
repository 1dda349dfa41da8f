"""WMS use cases for returns (RMAs): expect, receive, inspect, cancel.

A return receipt moves EXPECTED -> RECEIVED -> INSPECTED (or CANCELLED /
REJECTED) with a conditional ``UPDATE ... WHERE status = <expected>``, so of
two concurrent advancers (the returns autopilot, a handheld, a command)
exactly one wins. Received goods wait in quarantine: only the units restocked
at inspection enter stock, as a movement with reason RETURN that the ERP
ledger follows. Every event carries the complete receipt as it is after the
change.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts
from services.mesh.bus import PermanentError
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.store import Tx, utcnow

from . import domain, stock
from .statuses import ReturnStatus, return_status_pb
from .store import return_receipt_lines, return_receipts
from .tracing import current_traceparent, order_context

log = structlog.get_logger()

Status = ReturnStatus


async def _receipt(conn: AsyncConnection, rma_number: str):
    return (await conn.execute(
        select(return_receipts).where(return_receipts.c.rma_number == rma_number))).first()


async def _lines(conn: AsyncConnection, rma_number: str) -> list:
    return (await conn.execute(
        select(return_receipt_lines).where(return_receipt_lines.c.rma_number == rma_number)
        .order_by(return_receipt_lines.c.line_number))).all()


async def receipt_pb(conn: AsyncConnection, rma_number: str) -> wms_pb2.ReturnReceipt:
    row = await _receipt(conn, rma_number)
    if row is None:
        raise NotFound("return receipt", rma_number)
    r = wms_pb2.ReturnReceipt(
        rma_number=row.rma_number, return_id=row.return_id, order_id=row.order_id,
        warehouse_id=row.warehouse_id, status=return_status_pb(row.status), status_reason=row.status_reason,
        lines=[wms_pb2.ReturnReceiptLine(
            line_number=x.line_number, sku=x.sku, reason_code=x.reason_code,
            expected_quantity=x.expected_quantity, received_quantity=x.received_quantity,
            restocked_quantity=x.restocked_quantity, scrapped_quantity=x.scrapped_quantity,
            refused_quantity=x.refused_quantity, note=x.note) for x in await _lines(conn, rma_number)])
    r.expect_time.FromDatetime(row.expected_at)
    if row.received_at:
        r.receive_time.FromDatetime(row.received_at)
    if row.inspected_at:
        r.inspect_time.FromDatetime(row.inspected_at)
    return r


async def _emit(tx: Tx, subject: str, rma_number: str, **fields) -> None:
    row = await _receipt(tx.conn, rma_number)
    message = contracts.message_type(subject)(return_receipt=await receipt_pb(tx.conn, rma_number),
                                              **fields)
    with order_context(row.traceparent):
        await tx.emit(subject, message, key=row.return_id or rma_number)


async def _advance(tx: Tx, rma_number: str, expected: str, status: str, **values) -> bool:
    result = await tx.conn.execute(
        update(return_receipts)
        .where(return_receipts.c.rma_number == rma_number, return_receipts.c.status == expected)
        .values(status=status, updated_at=utcnow(), **values))
    return bool(result.rowcount)


def _due_in(seconds: float | None):
    return None if seconds is None else utcnow() + timedelta(seconds=seconds)


# ---- commands ----

async def expect_return(tx: Tx, cmd: events.ExpectReturn, receive_delay: float | None) -> None:
    """Record the expected return once (idempotent on rma_number); say again how it stands
    on a repeat. ``receive_delay``: when the autopilot receives it (None: a handheld will)."""
    if not cmd.rma_number:
        raise PermanentError("ExpectReturn without rma_number")
    if await _receipt(tx.conn, cmd.rma_number) is not None:
        await _say_again(tx, cmd.rma_number)
        return
    now = utcnow()
    await tx.conn.execute(return_receipts.insert().values(
        rma_number=cmd.rma_number, return_id=cmd.return_id, order_id=cmd.order_id,
        warehouse_id=cmd.warehouse_id, status=Status.EXPECTED, status_reason="",
        next_step_at=_due_in(receive_delay), expected_at=now, updated_at=now,
        traceparent=current_traceparent()))
    lines = [(x.line_number, x.sku, x.expected_quantity) for x in cmd.lines]
    if lines:
        await tx.conn.execute(return_receipt_lines.insert(), [
            dict(rma_number=cmd.rma_number, line_number=x.line_number, sku=x.sku,
                 reason_code=x.reason_code, expected_quantity=x.expected_quantity, note=x.note)
            for x in cmd.lines])
    problem = ""
    if not lines or any(not sku or qty <= 0 for _, sku, qty in lines):
        problem = "INVALID_LINES", "every line needs a SKU and a positive quantity"
    elif len({n for n, _, _ in lines}) != len(lines):
        problem = "INVALID_LINES", "a line appears twice"
    elif not await stock.warehouse_exists(tx.conn, cmd.warehouse_id):
        problem = "UNKNOWN_WAREHOUSE", f"no warehouse {cmd.warehouse_id!r}"
    if problem:
        await _advance(tx, cmd.rma_number, Status.EXPECTED, Status.REJECTED, status_reason=problem[1],
                       next_step_at=None)
        await _emit(tx, "wms.return.rejected", cmd.rma_number, reason_code=problem[0],
                    reason=problem[1])
        return
    await _emit(tx, "wms.return.expected", cmd.rma_number)


async def _say_again(tx: Tx, rma_number: str) -> None:
    row = await _receipt(tx.conn, rma_number)
    if row.status == Status.REJECTED:
        await _emit(tx, "wms.return.rejected", rma_number, reason_code="REJECTED",
                    reason=row.status_reason)
    elif row.status == Status.CANCELLED:
        await _emit(tx, "wms.return.cancelled", rma_number, reason=row.status_reason)
    else:
        await _emit(tx, "wms.return.expected", rma_number)


async def cancel_return(tx: Tx, cmd: events.CancelReturn) -> None:
    """Stop expecting a return; refused once the goods are at the dock. A cancel that
    comes before the expectation leaves a tombstone (a late expect finds it cancelled)."""
    if not cmd.rma_number:
        raise PermanentError("CancelReturn without rma_number")
    reason = cmd.reason or "cancelled"
    row = await _receipt(tx.conn, cmd.rma_number)
    if row is None:
        now = utcnow()
        await tx.conn.execute(return_receipts.insert().values(
            rma_number=cmd.rma_number, return_id=cmd.return_id, status=Status.CANCELLED,
            status_reason=reason, expected_at=now, updated_at=now))
    elif row.status == Status.EXPECTED:
        if not await _advance(tx, cmd.rma_number, Status.EXPECTED, Status.CANCELLED, status_reason=reason,
                              next_step_at=None):
            raise RuntimeError(f"return {cmd.rma_number} changed while cancelling")  # retried
    elif row.status in (Status.RECEIVED, Status.INSPECTED):
        await _emit(tx, "wms.return.cancel_refused", cmd.rma_number,
                    reason=f"the return is already {row.status.lower()}: too late to cancel")
        return
    row = await _receipt(tx.conn, cmd.rma_number)
    await _emit(tx, "wms.return.cancelled", cmd.rma_number, reason=row.status_reason)


# ---- at the dock (handheld RPCs and the autopilot) ----

async def receive(tx: Tx, rma_number: str, quantities: dict[int, int],
                  inspect_delay: float | None) -> bool:
    """EXPECTED -> RECEIVED with the quantities that came back (all as expected when empty)."""
    row = await _receipt(tx.conn, rma_number)
    if row is None:
        raise NotFound("return receipt", rma_number)
    lines = await _lines(tx.conn, rma_number)
    expected = {x.line_number: x.expected_quantity for x in lines}
    if problems := domain.receipt_problems(expected, quantities):
        raise InvalidArgument(problems)
    received = {n: quantities.get(n, 0) if quantities else q for n, q in expected.items()}
    if not await _advance(tx, rma_number, Status.EXPECTED, Status.RECEIVED, received_at=utcnow(),
                          next_step_at=_due_in(inspect_delay)):
        return False
    for line_number, qty in received.items():
        await tx.conn.execute(update(return_receipt_lines).where(
            return_receipt_lines.c.rma_number == rma_number,
            return_receipt_lines.c.line_number == line_number).values(received_quantity=qty))
    await _emit(tx, "wms.return.received", rma_number)
    return True


async def inspect(tx: Tx, rma_number: str, dispositions: list[domain.Disposition],
                  notes: dict[int, str] | None = None) -> bool:
    """RECEIVED -> INSPECTED: each line's restocked units go back into stock (one movement
    with reason RETURN per line); scrapped and refused units never enter stock."""
    row = await _receipt(tx.conn, rma_number)
    if row is None:
        raise NotFound("return receipt", rma_number)
    lines = {x.line_number: x for x in await _lines(tx.conn, rma_number)}
    received = {n: x.received_quantity for n, x in lines.items()}
    if problems := domain.inspection_problems(received, dispositions):
        raise InvalidArgument(problems)
    if not await _advance(tx, rma_number, Status.RECEIVED, Status.INSPECTED, inspected_at=utcnow(),
                          next_step_at=None):
        return False
    notes = notes or {}
    for d in dispositions:
        line = lines[d.line_number]
        await tx.conn.execute(update(return_receipt_lines).where(
            return_receipt_lines.c.rma_number == rma_number,
            return_receipt_lines.c.line_number == d.line_number).values(
            restocked_quantity=d.restock, scrapped_quantity=d.scrap, refused_quantity=d.refuse,
            note=notes.get(d.line_number) or line.note))
        if d.restock:
            await stock.move_stock(tx, row.warehouse_id, [(line.sku, d.restock)],
                                   events.MOVEMENT_REASON_RETURN, rma_number)
    await _emit(tx, "wms.return.inspected", rma_number)
    return True


def _not_in(row, rma_number: str, expected: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"return {rma_number} is {row.status}, not {expected}",
        reason=f"RETURN_{row.status}", subject=f"returns/{rma_number}")


async def receive_return(tx: Tx, req: wms_pb2.ReceiveReturnRequest,
                         inspect_delay: float | None) -> wms_pb2.ReturnReceipt:
    if not req.rma_number:
        raise InvalidArgument([("rma_number", "required")])
    quantities = {x.line_number: x.received_quantity for x in req.lines}
    if len(quantities) != len(req.lines):
        raise InvalidArgument([("lines", "a line appears twice")])
    if not await receive(tx, req.rma_number, quantities, inspect_delay):
        raise _not_in(await _receipt(tx.conn, req.rma_number), req.rma_number, Status.EXPECTED)
    return await receipt_pb(tx.conn, req.rma_number)


async def inspect_return(tx: Tx, req: wms_pb2.InspectReturnRequest) -> wms_pb2.ReturnReceipt:
    if not req.rma_number:
        raise InvalidArgument([("rma_number", "required")])
    dispositions = [domain.Disposition(x.line_number, x.restocked_quantity, x.scrapped_quantity,
                                       x.refused_quantity) for x in req.lines]
    notes = {x.line_number: x.note for x in req.lines if x.note}
    row = await _receipt(tx.conn, req.rma_number)
    if row is not None and row.status != Status.RECEIVED:
        raise _not_in(row, req.rma_number, Status.RECEIVED)
    if not await inspect(tx, req.rma_number, dispositions, notes):
        raise _not_in(await _receipt(tx.conn, req.rma_number), req.rma_number, Status.RECEIVED)
    return await receipt_pb(tx.conn, req.rma_number)


async def autopilot_inspect(tx: Tx, rma_number: str, rules: dict[str, str]) -> bool:
    lines = await _lines(tx.conn, rma_number)
    dispositions = [domain.autopilot_disposition(x.line_number, x.received_quantity, x.reason_code,
                                                 rules) for x in lines if x.received_quantity]
    notes = {x.line_number: "autopilot: " + rules.get(x.reason_code, rules.get("*", "REFUSE")).lower()
             for x in lines}
    return await inspect(tx, rma_number, dispositions, notes)


async def due_returns(conn: AsyncConnection, limit: int = 100) -> list:
    """(rma_number, status, traceparent) of receipts the autopilot should move on now, oldest first."""
    rows = await conn.execute(
        select(return_receipts.c.rma_number, return_receipts.c.status, return_receipts.c.traceparent)
        .where(return_receipts.c.status.in_([Status.EXPECTED, Status.RECEIVED]),
               return_receipts.c.next_step_at <= utcnow())
        .order_by(return_receipts.c.next_step_at).limit(limit))
    return rows.all()
