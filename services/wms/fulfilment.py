"""Fulfilment use cases: allocation (and backorders), pick, pack, shipment, cancel,
exceptions and their resolution, and the milestone RPCs of the handheld tools.

Each use case reads the fulfilment (its row locked until commit), asks
``fulfilment_rules`` what the fact does to it, and applies the answer in the
caller's transaction with a conditional ``UPDATE ... WHERE status =
<expected>``: of two concurrent advancers (the autopilot, a handheld, a
command) exactly one wins, the other changes nothing. Every transition appends
a milestone, and every event carries the complete fulfilment order as it is
after the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts
from services.mesh.bus import PermanentError
from services.mesh.config import Settings
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.store import Tx, utcnow

from . import domain, replenishment, replicas, stock
from . import fulfilment_rules as rules
from .fulfilment_rules import Due, FulfilmentLine
from .statuses import (
    FulfilmentStatus,
    ShortagePolicy,
    exception_kind_pb,
    fulfilment_status_pb,
    shortage_policy_of,
    shortage_policy_pb,
)
from .store import fulfilment_lines, fulfilments, milestones
from .tracing import current_traceparent, order_context

log = structlog.get_logger()

Status = FulfilmentStatus


class NotReady(Exception):
    """A command arrived before the fulfilment can take it: retried with back-off."""


@dataclass(frozen=True)
class Delays:
    """Seconds the autopilot lets pass before picking, packing and shipping."""

    pick: float
    pack: float
    ship: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Delays:
        return cls(pick=settings.wms_pick_delay, pack=settings.wms_pack_delay, ship=settings.wms_ship_delay)

    def due_at(self, due: Due | None):
        """When the autopilot takes that step (None: it waits for someone else)."""
        if due is None:
            return None
        delay = {Due.PICK: self.pick, Due.PACK: self.pack, Due.SHIP: self.ship}[due]
        return utcnow() + timedelta(seconds=delay)


# ---- reading ----


async def _row(conn: AsyncConnection, order_id: str, *, lock: bool = False):
    query = select(fulfilments).where(fulfilments.c.order_id == order_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def _lines(conn: AsyncConnection, order_id: str) -> list[FulfilmentLine]:
    line = fulfilment_lines.c
    rows = await conn.execute(
        select(line.line_no, line.sku, line.quantity, line.shipped, line.cancelled, line.wave_quantity,
               line.exception_quantity)
        .where(line.order_id == order_id).order_by(line.line_no))
    return [FulfilmentLine(*row) for row in rows]


async def load_fulfilment(conn: AsyncConnection, order_id: str) -> rules.Fulfilment | None:
    """The fulfilment as the rules see it, its row locked until commit (None: no such order)."""
    row = await _row(conn, order_id, lock=True)
    if row is None:
        return None
    return rules.Fulfilment(
        order_id=row.order_id, warehouse_id=row.warehouse_id, status=Status(row.status),
        lines=tuple(await _lines(conn, order_id)), wave=row.wave, shipment_id=row.shipment_id,
        resume_status=row.resume_status)


async def wave_lines(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    """The current shipment's quantities by SKU."""
    return [(x.sku, x.wave_quantity) for x in await _lines(conn, order_id)]


async def fulfilment_pb(conn: AsyncConnection, order_id: str) -> wms_pb2.FulfilmentOrder:
    row = await _row(conn, order_id)
    if row is None:
        raise NotFound("fulfilment order", order_id)
    return await _order_pb(conn, row)


async def _order_pb(conn: AsyncConnection, row) -> wms_pb2.FulfilmentOrder:
    order_id = row.order_id
    lines = await _lines(conn, order_id)
    order = wms_pb2.FulfilmentOrder(
        fulfilment_id=row.fulfilment_id, order_id=row.order_id, warehouse_id=row.warehouse_id,
        lines=stock.quantities_pb((x.sku, x.quantity) for x in lines),
        status=fulfilment_status_pb(row.status), shortage_policy=shortage_policy_pb(row.shortage_policy),
        ship_to=stock.address_pb(row, "ship_to_"), shipment_id=row.shipment_id,
        carrier_id=row.carrier_id, tracking_number=row.tracking_number,
        package_weight_grams=row.package_weight_grams, wave=row.wave,
        progress=[wms_pb2.FulfilmentLine(sku=x.sku, ordered_quantity=x.quantity, shipped_quantity=x.shipped,
                                         cancelled_quantity=x.cancelled, wave_quantity=x.wave_quantity,
                                         exception_quantity=x.exception_quantity) for x in lines],
    )
    if row.status == Status.EXCEPTION:
        order.exception.CopyFrom(wms_pb2.FulfilmentException(
            kind=exception_kind_pb(row.exception_kind),
            lines=stock.quantities_pb((x.sku, x.exception_quantity) for x in lines if x.exception_quantity),
            detail=row.exception_detail))
        if row.exception_at is not None:
            order.exception.time.FromDatetime(row.exception_at)
    rows = await conn.execute(
        select(milestones).where(milestones.c.order_id == order_id).order_by(milestones.c.id))
    for milestone in rows:
        order.milestones.add(status=fulfilment_status_pb(milestone.status)).time.FromDatetime(milestone.at)
    return order


async def due_fulfilments(conn: AsyncConnection, statuses, limit: int = 100) -> list:
    """(order_id, status, traceparent) of fulfilments in these statuses whose next step is due,
    oldest first."""
    rows = await conn.execute(
        select(fulfilments.c.order_id, fulfilments.c.status, fulfilments.c.traceparent)
        .where(fulfilments.c.status.in_(list(statuses)), fulfilments.c.next_step_at <= utcnow())
        .order_by(fulfilments.c.next_step_at)
        .limit(limit)
    )
    return rows.all()


# ---- applying a decision ----


async def _announce(tx: Tx, subject: str, order_id: str, **details) -> None:
    row = await _row(tx.conn, order_id)
    message = contracts.message_type(subject)(fulfilment_order=await _order_pb(tx.conn, row), **details)
    with order_context(row.traceparent):
        await tx.emit(subject, message, key=order_id)


async def apply_change(tx: Tx, f: rules.Fulfilment, change: rules.Change, delays: Delays) -> bool:
    """Apply a Change (see ``fulfilment_rules.Change`` for the order of its parts);
    False, and nothing changed, when the fulfilment is no longer in ``change.expected``."""
    now = utcnow()
    values = dict(change.fields)
    if change.status is Status.EXCEPTION:
        values["exception_at"] = now
    result = await tx.conn.execute(
        update(fulfilments)
        .where(fulfilments.c.order_id == f.order_id, fulfilments.c.status == change.expected)
        .values(status=change.status, updated_at=now, next_step_at=delays.due_at(change.due), **values))
    if not result.rowcount:
        return False
    await tx.conn.execute(milestones.insert().values(order_id=f.order_id, status=change.status, at=now))
    line = fulfilment_lines.c
    for line_no, quantities in change.lines.items():
        await tx.conn.execute(update(fulfilment_lines).where(
            line.order_id == f.order_id, line.line_no == line_no).values(**quantities))
    for sku, delta in change.allocations:
        await stock.change_allocation(tx, f.warehouse_id, sku, delta)
    for move in change.movements:
        await stock.move_stock(tx, f.warehouse_id, [(move.sku, move.delta)], move.reason, move.reference,
                               allocated_deltas={move.sku: move.allocated_delta})
    await replenishment.check_positions(tx, f.warehouse_id, change.recheck)
    if change.announce:
        await _announce(tx, change.announce, f.order_id, **change.details)
    if change.then is not None:
        await apply_change(tx, f, change.then, delays)
    if change.allocate_again and not await allocate(tx, f.order_id, delays):
        await replenishment.check_positions(tx, f.warehouse_id, change.allocate_again)
    if change.serve_backorders:
        await allocate_backorders(tx, f.warehouse_id, delays)
    await replenishment.check_positions(tx, f.warehouse_id, change.recheck_after)
    return True


# ---- a new order, allocation, backorders ----


async def create_fulfilment(tx: Tx, cmd: events.CreateFulfilment, delays: Delays) -> None:
    """Record a fulfilment order once (idempotent on order_id) and allocate, backorder or reject it.

    A new order waits in BACKORDERED (without a milestone) until, in this same
    transaction, it is allocated, rejected or confirmed as backordered. An
    order cancelled before it was created (a tombstone) stays cancelled.
    """
    if (existing := await _row(tx.conn, cmd.order_id)) is not None:
        if existing.status == Status.CANCELLED and not existing.warehouse_id:
            log.info("wms.fulfilment.create_after_cancel", order_id=cmd.order_id)
        return
    policy = shortage_policy_of(cmd.shortage_policy)
    if policy is None:
        raise PermanentError(f"unknown shortage policy {cmd.shortage_policy}")
    now = utcnow()
    lines = stock.lines_of(cmd.lines)
    await tx.conn.execute(fulfilments.insert().values(
        fulfilment_id=f"FUL-{cmd.order_id}", order_id=cmd.order_id, warehouse_id=cmd.warehouse_id,
        status=Status.BACKORDERED, shortage_policy=policy, **stock.address_values(cmd.ship_to, "ship_to_"),
        created_at=now, updated_at=now, traceparent=current_traceparent(), wave=1,
    ))
    if lines:
        await tx.conn.execute(fulfilment_lines.insert(), [
            {"order_id": cmd.order_id, "line_no": i, "sku": sku, "quantity": qty}
            for i, (sku, qty) in enumerate(lines)
        ])
    f = await load_fulfilment(tx.conn, cmd.order_id)
    known = await stock.warehouse_exists(tx.conn, cmd.warehouse_id)
    available = await stock.available(tx.conn, cmd.warehouse_id, [sku for sku, _ in lines]) if known else {}
    await apply_change(tx, f, rules.decide_new_order(f, policy, known, available), delays)


async def allocate(tx: Tx, order_id: str, delays: Delays) -> bool:
    """BACKORDERED -> ALLOCATED, all or nothing: only when every open quantity fits in available stock.

    The stock rows stay locked until commit, so allocated never exceeds on-hand
    (the store's check constraint refuses it anyway).
    """
    f = await load_fulfilment(tx.conn, order_id)
    if f is None:
        return False
    available = await stock.available(tx.conn, f.warehouse_id, [sku for sku, _ in f.open_lines()])
    change = rules.decide_allocation(f, available)
    return change is not None and await apply_change(tx, f, change, delays)


async def allocate_backorders(tx: Tx, warehouse_id: str, delays: Delays) -> None:
    """Allocate the warehouse's backordered orders that now fit, first come first served."""
    line = fulfilment_lines.c
    rows = await tx.conn.execute(
        select(fulfilments.c.order_id, fulfilments.c.created_at, line.sku,
               (line.quantity - line.shipped - line.cancelled).label("open"))
        .join(fulfilment_lines, line.order_id == fulfilments.c.order_id)
        .where(fulfilments.c.warehouse_id == warehouse_id, fulfilments.c.status == Status.BACKORDERED)
        .order_by(fulfilments.c.order_id, line.line_no)
    )
    waiting: dict[str, tuple] = {}
    for row in rows:
        open_lines = waiting.setdefault(row.order_id, (row.created_at, []))[1]
        if row.open > 0:
            open_lines.append((row.sku, row.open))
    backorders = [domain.Backorder(order_id, created_at, tuple(open_lines))
                  for order_id, (created_at, open_lines) in waiting.items() if open_lines]
    available = await stock.available(tx.conn, warehouse_id, {sku for b in backorders for sku, _ in b.lines})
    for order_id in domain.fcfs_allocation(backorders, available):
        await allocate(tx, order_id, delays)


# ---- pick, pack, ship ----


async def pick(tx: Tx, order_id: str, delays: Delays, picked: dict[str, int] | None = None) -> bool:
    """ALLOCATED -> PICKED; with less found than allocated, a SHORT_PICK exception instead."""
    f = await load_fulfilment(tx.conn, order_id)
    change = rules.decide_pick(f, picked) if f is not None else None
    return change is not None and await apply_change(tx, f, change, delays)


async def pack(tx: Tx, order_id: str, delays: Delays, weight_grams: int = 0,
               damaged: dict[str, int] | None = None) -> bool:
    """PICKED -> PACKED with the given package weight, else the item master's; then it waits for a shipment.

    Units damaged at packing are written off: a DAMAGED exception instead.
    """
    f = await load_fulfilment(tx.conn, order_id)
    if f is None or f.status is not Status.PICKED:
        return False
    weights = await replicas.unit_weights(tx.conn, [sku for sku, _ in f.wave_lines()])
    change = rules.decide_pack(f, weight_grams, damaged, weights)
    return change is not None and await apply_change(tx, f, change, delays)


async def assign_shipment(tx: Tx, cmd: events.AssignShipment, delays: Delays) -> None:
    """PACKED -> LABELLED with the booked carrier and tracking number (of the current wave)."""
    f = await load_fulfilment(tx.conn, cmd.order_id)
    if f is None:
        raise PermanentError(f"no fulfilment order {cmd.order_id!r}")
    outcome = rules.decide_assign_shipment(f, cmd.shipment_id, cmd.carrier_id, cmd.tracking_number, cmd.wave)
    if isinstance(outcome, rules.Ignored):
        if outcome.why:
            (log.warning if outcome.warn else log.info)(
                outcome.why, order_id=cmd.order_id, status=f.status, shipment_id=cmd.shipment_id,
                current=f.shipment_id, wave=cmd.wave, current_wave=f.wave)
        return
    if isinstance(outcome, rules.NotYet) or not await apply_change(tx, f, outcome, delays):
        raise NotReady(f"fulfilment order {cmd.order_id!r} is {f.status}, not packed yet")


async def ship(tx: Tx, order_id: str, delays: Delays) -> bool:
    """LABELLED -> SHIPPED: the wave's stock leaves (on-hand and allocation drop, one movement per line).

    When quantities are still open (a short pick shipped partially) the
    fulfilment goes back to BACKORDERED as the next wave, and is allocated at
    once when the stock is there.
    """
    f = await load_fulfilment(tx.conn, order_id)
    change = rules.decide_ship(f) if f is not None else None
    return change is not None and await apply_change(tx, f, change, delays)


# ---- cancel ----


async def cancel_fulfilment(tx: Tx, cmd: events.CancelFulfilment, delays: Delays) -> None:
    """Cancel before labelling (releasing any allocation, which may serve backorders); refuse after.

    A cancel that overtakes its create leaves a CANCELLED tombstone (no lines,
    no warehouse): the late create finds it and allocates nothing.
    """
    f = await load_fulfilment(tx.conn, cmd.order_id)
    outcome = rules.decide_cancel(f, cmd.reason)
    if isinstance(outcome, rules.Tombstone):
        now = utcnow()
        await tx.conn.execute(fulfilments.insert().values(
            fulfilment_id=f"FUL-{cmd.order_id}", order_id=cmd.order_id, warehouse_id="",
            status=Status.CANCELLED, shortage_policy=ShortagePolicy.UNSPECIFIED, created_at=now,
            updated_at=now, traceparent=current_traceparent(), wave=1))
        await tx.conn.execute(milestones.insert().values(
            order_id=cmd.order_id, status=Status.CANCELLED, at=now))
        await _announce(tx, "wms.fulfilment.cancelled", cmd.order_id, reason=outcome.reason)
    elif isinstance(outcome, rules.Announce):
        await _announce(tx, outcome.subject, cmd.order_id, **outcome.details)
    elif not await apply_change(tx, f, outcome, delays):
        raise NotReady(f"fulfilment order {cmd.order_id!r} changed while cancelling")


# ---- exceptions ----


async def resolve_exception(tx: Tx, cmd: events.ResolveFulfilmentException, delays: Delays) -> None:
    """Order-to-ship's decision on an open exception, then the fulfilment moves on
    (``fulfilment_rules.decide_resolution``)."""
    f = await load_fulfilment(tx.conn, cmd.order_id)
    if f is None:
        raise PermanentError(f"no fulfilment order {cmd.order_id!r}")
    weights = await replicas.unit_weights(tx.conn, [sku for sku, _ in f.wave_lines()]) \
        if f.resume_status == Status.PACKED else {}
    try:
        change = rules.decide_resolution(f, cmd.action, cmd.wave, weights)
    except rules.UnknownAction as err:
        raise PermanentError(str(err)) from None
    if change is None:
        log.info("wms.resolve.ignored", order_id=cmd.order_id, status=f.status, wave=f.wave)
        return
    await apply_change(tx, f, change, delays)


async def allocated_waves(conn: AsyncConnection, warehouse_id: str, sku: str) -> list[rules.AllocatedWave]:
    """What allocated, not yet picked orders hold of a SKU, most recently allocated first."""
    line = fulfilment_lines.c
    rows = await conn.execute(
        select(fulfilments.c.order_id, line.line_no, line.wave_quantity)
        .join(fulfilment_lines, line.order_id == fulfilments.c.order_id)
        .where(fulfilments.c.warehouse_id == warehouse_id, fulfilments.c.status == Status.ALLOCATED,
               line.sku == sku, line.wave_quantity > 0)
        .order_by(fulfilments.c.updated_at.desc(), fulfilments.c.order_id.desc()))
    return [rules.AllocatedWave(*row) for row in rows]


async def stock_discrepancy(tx: Tx, order_id: str, sku: str, take: int, counted: int, delays: Delays) -> bool:
    """ALLOCATED -> EXCEPTION (STOCK_DISCREPANCY): a bin count found ``take`` of the order's
    allocated units of ``sku`` missing; their allocation is released. False: the order moved on."""
    f = await load_fulfilment(tx.conn, order_id)
    change = rules.decide_discrepancy(f, sku, take, counted) if f is not None else None
    return change is not None and await apply_change(tx, f, change, delays)


# ---- milestone RPCs (handheld tools) ----


async def _confirmed(tx: Tx, order_id: str, advanced: bool, expected: str,
                     reason: str) -> wms_pb2.FulfilmentOrder:
    row = await _row(tx.conn, order_id)
    if row is None:
        raise NotFound("fulfilment order", order_id)
    if not advanced:
        raise FailedPrecondition(
            f"fulfilment order {order_id!r} is {row.status}, not {expected}",
            reason=f"FULFILMENT_{row.status}" if row.status in rules.FINAL else reason,
            subject=f"fulfilments/{order_id}",
        )
    return await _order_pb(tx.conn, row)


def _by_sku(lines, what: str) -> dict[str, int] | None:
    """SKU -> quantity of a request's lines (None when there are none)."""
    if not lines:
        return None
    out: dict[str, int] = {}
    for i, q in enumerate(lines):
        if not q.sku:
            raise InvalidArgument([(f"{what}[{i}].sku", "required")])
        if q.sku in out:
            raise InvalidArgument([(f"{what}[{i}].sku", f"duplicate SKU {q.sku!r}")])
        out[q.sku] = q.quantity
    return out


async def confirm_pick(tx: Tx, order_id: str, delays: Delays, picked_lines=()) -> wms_pb2.FulfilmentOrder:
    advanced = await pick(tx, order_id, delays, _by_sku(picked_lines, "picked_lines"))
    return await _confirmed(tx, order_id, advanced, Status.ALLOCATED, "FULFILMENT_NOT_ALLOCATED")


async def confirm_pack(tx: Tx, order_id: str, delays: Delays, weight_grams: int,
                       damaged_lines=()) -> wms_pb2.FulfilmentOrder:
    if weight_grams < 0:
        raise InvalidArgument([("package_weight_grams", "must not be negative")])
    damaged = _by_sku(damaged_lines, "damaged_lines")
    if damaged and any(q <= 0 for q in damaged.values()):
        raise InvalidArgument([("damaged_lines", "quantities must be positive")])
    advanced = await pack(tx, order_id, delays, weight_grams, damaged)
    return await _confirmed(tx, order_id, advanced, Status.PICKED, "FULFILMENT_NOT_PICKED")


async def confirm_ship(tx: Tx, order_id: str, delays: Delays) -> wms_pb2.FulfilmentOrder:
    advanced = await ship(tx, order_id, delays)
    return await _confirmed(tx, order_id, advanced, Status.LABELLED, "NO_SHIPMENT_ASSIGNED")
