"""WMS use cases and the fulfilment transitions.

Each use case takes a store transaction (or a connection for reads). The
transitions (allocate, pick, pack, assign_shipment, ship, cancel) run in the
caller's transaction and move a fulfilment with a conditional
``UPDATE ... WHERE status = <expected>``: of two concurrent advancers (the
autopilot, a handheld, a command) exactly one wins, the other changes nothing.
Every transition appends a milestone, and every event carries the complete
fulfilment order as it is after the change.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import structlog
from opentelemetry import context as otel_context
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts, telemetry
from services.mesh.bus import PermanentError
from services.mesh.config import Settings
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain, replenishment
from .store import (
    customers,
    fulfilment_lines,
    fulfilments,
    items,
    milestones,
    outbox,
    receipts,
    stock,
    stock_movements,
    warehouses,
)

log = structlog.get_logger()

ADDRESS_FIELDS = ("name", "line1", "city", "postal_code", "country_code")
FINAL = ("SHIPPED", "CANCELLED", "REJECTED")


class NotReady(Exception):
    """A command arrived before the fulfilment can take it: retried with back-off."""


@dataclass(frozen=True)
class Delays:
    """Seconds the autopilot lets pass before picking, packing and shipping."""

    pick: float
    pack: float
    ship: float

    @classmethod
    def from_settings(cls, s: Settings) -> Delays:
        return cls(pick=s.wms_pick_delay, pack=s.wms_pack_delay, ship=s.wms_ship_delay)


def _due_in(seconds: float):
    return utcnow() + timedelta(seconds=seconds)


def _lines(pb_lines) -> list[domain.Line]:
    return [(line.sku, line.quantity) for line in pb_lines]


def _quantities(lines: Iterable[domain.Line]) -> list[SkuQuantity]:
    return [SkuQuantity(sku=sku, quantity=qty) for sku, qty in lines]


def _address_pb(row, prefix: str) -> Address:
    return Address(**{f: getattr(row, prefix + f) for f in ADDRESS_FIELDS})


def _address_values(address: Address, prefix: str) -> dict[str, str]:
    return {prefix + f: getattr(address, f) for f in ADDRESS_FIELDS}


def _status_pb(status: str) -> int:
    return wms_pb2.FulfilmentStatus.Value(f"FULFILMENT_STATUS_{status}")


def in_order_trace(name: str, traceparent: str):
    """A span in the order's own trace (the current one when it has none)."""
    context = telemetry.extract({"traceparent": traceparent}) if traceparent else None
    return telemetry.tracer().start_as_current_span(name, context=context)


@contextmanager
def order_context(traceparent: str):
    """Make the order's trace current without a span of its own, so the
    PRODUCER span of Tx.emit joins it."""
    if not traceparent:
        yield
        return
    token = otel_context.attach(telemetry.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


def _stock_key(warehouse_id: str, sku: str):
    return (stock.c.warehouse_id == warehouse_id) & (stock.c.sku == sku)


# ---- warehouses and stock ----


async def upsert_warehouse(tx: Tx, w: wms_pb2.Warehouse) -> None:
    if not w.warehouse_id:
        raise InvalidArgument([("warehouse.warehouse_id", "required")])
    values = {"name": w.name, **_address_values(w.address, "address_")}
    result = await tx.conn.execute(
        update(warehouses).where(warehouses.c.warehouse_id == w.warehouse_id).values(**values)
    )
    if not result.rowcount:
        await tx.conn.execute(warehouses.insert().values(warehouse_id=w.warehouse_id, **values))


async def list_warehouses(conn: AsyncConnection) -> list[wms_pb2.Warehouse]:
    rows = (await conn.execute(select(warehouses).order_by(warehouses.c.warehouse_id))).all()
    return [
        wms_pb2.Warehouse(warehouse_id=r.warehouse_id, name=r.name, address=_address_pb(r, "address_"))
        for r in rows
    ]


def position_pb(row) -> wms_pb2.InventoryPosition:
    return wms_pb2.InventoryPosition(
        sku=row.sku, warehouse_id=row.warehouse_id, on_hand=row.on_hand, allocated=row.allocated,
        available=row.on_hand - row.allocated, sequence=row.sequence,
    )


async def get_availability(conn: AsyncConnection, skus, warehouse_id: str = "") -> list[wms_pb2.InventoryPosition]:
    """Positions of the SKUs that have one (in one warehouse, or all when empty)."""
    query = select(stock).where(stock.c.sku.in_(list(skus))).order_by(stock.c.warehouse_id, stock.c.sku)
    if warehouse_id:
        query = query.where(stock.c.warehouse_id == warehouse_id)
    return [position_pb(r) for r in (await conn.execute(query)).all()]


async def list_inventory(
    conn: AsyncConnection, page_size: int, page_token: str, warehouse_id: str = ""
) -> tuple[list[wms_pb2.InventoryPosition], str]:
    """One page of positions by warehouse and SKU, and the token of the next page ('' at the end)."""
    query = select(stock).where(stock.c.warehouse_id == warehouse_id) if warehouse_id else select(stock)
    rows, token = await keyset_page(conn, query, [stock.c.warehouse_id, stock.c.sku], page_size, page_token)
    return [position_pb(r) for r in rows], token


async def _warehouse_exists(conn: AsyncConnection, warehouse_id: str) -> bool:
    query = select(warehouses.c.warehouse_id).where(warehouses.c.warehouse_id == warehouse_id)
    return await conn.scalar(query) is not None


async def _available(conn: AsyncConnection, warehouse_id: str, skus) -> dict[str, int]:
    """Available quantity by SKU, locking the stock rows (in SKU order) until commit."""
    rows = await conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.allocated)
        .where(stock.c.warehouse_id == warehouse_id, stock.c.sku.in_(list(skus)))
        .order_by(stock.c.sku)
        .with_for_update()
    )
    return {r.sku: r.on_hand - r.allocated for r in rows}


async def _move(tx: Tx, warehouse_id: str, sku: str, delta: int, reason: int, reference: str,
                *, allocated_delta: int = 0) -> None:
    """Change on-hand stock (and the allocation a shipment consumes) and publish the movement."""
    await _move_many(tx, warehouse_id, [(sku, delta)], reason, reference, allocated_deltas={sku: allocated_delta})


async def _move_many(tx: Tx, warehouse_id: str, moves: list[domain.Line], reason: int, reference: str,
                     *, allocated_deltas: dict[str, int] | None = None) -> None:
    """Change on-hand stock of distinct SKUs (and the allocations a shipment consumes) and publish
    one movement each: a handful of statements however many SKUs (a receipt of many lines)."""
    skus = [sku for sku, _ in moves]
    allocated_deltas = allocated_deltas or {}
    dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
    await tx.conn.execute(dialect.insert(stock).on_conflict_do_nothing(), [
        {"sku": sku, "warehouse_id": warehouse_id, "on_hand": 0, "allocated": 0, "sequence": 0} for sku in skus])
    current = {r.sku: r for r in (await tx.conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.allocated, stock.c.sequence)
        .where(stock.c.warehouse_id == warehouse_id, stock.c.sku.in_(skus))
        .order_by(stock.c.sku).with_for_update())).all()}
    after = {sku: (current[sku].on_hand + delta, current[sku].allocated + allocated_deltas.get(sku, 0),
                   current[sku].sequence + 1) for sku, delta in moves}
    await tx.conn.execute(
        update(stock).where(stock.c.warehouse_id == bindparam("w"), stock.c.sku == bindparam("s"))
        .values(on_hand=bindparam("on_hand_after"), allocated=bindparam("allocated_after"),
                sequence=bindparam("sequence_after")),
        [{"w": warehouse_id, "s": sku, "on_hand_after": after[sku][0], "allocated_after": after[sku][1],
          "sequence_after": after[sku][2]} for sku in skus])
    event_ids = await tx.emit_many([
        ("wms.inventory.adjusted", events.InventoryAdjusted(
            sku=sku, warehouse_id=warehouse_id, delta=delta, on_hand_after=after[sku][0],
            sequence=after[sku][2], reason=reason, reference=reference), f"{warehouse_id}/{sku}")
        for sku, delta in moves])
    now = utcnow()
    reason_name = events.MovementReason.Name(reason).removeprefix("MOVEMENT_REASON_")
    await tx.conn.execute(stock_movements.insert(), [
        dict(warehouse_id=warehouse_id, sku=sku, sequence=after[sku][2], delta=delta,
             on_hand_after=after[sku][0], reason=reason_name, reference=reference[:100], event_id=event_id, at=now)
        for (sku, delta), event_id in zip(moves, event_ids, strict=True)])
    await replenishment.check_positions(tx, warehouse_id, skus)


async def receive_stock(tx: Tx, req: wms_pb2.ReceiveStockRequest, delays: Delays) -> list[wms_pb2.InventoryPosition]:
    """Book a receipt once (idempotent on receipt_id), then serve the backorders it unblocks.

    Each line raises on-hand stock and publishes ``wms.inventory.adjusted``.
    In the same transaction the warehouse's backordered fulfilments are
    allocated first come, first served (``domain.fcfs_allocation``).
    """
    lines = _lines(req.lines)
    problems = [(f, "required") for f in ("receipt_id", "warehouse_id") if not getattr(req, f)]
    problems += domain.line_problems(lines)
    if problems:
        raise InvalidArgument(problems)
    if not await _warehouse_exists(tx.conn, req.warehouse_id):
        raise NotFound("warehouse", req.warehouse_id)
    if await insert_ignore(tx.conn, receipts, {"receipt_id": req.receipt_id,
                                               "warehouse_id": req.warehouse_id,
                                               "received_at": utcnow()}):
        await _move_many(tx, req.warehouse_id, lines, events.MOVEMENT_REASON_RECEIPT, req.receipt_id)
        await allocate_backorders(tx, req.warehouse_id, delays)
    return await get_availability(tx.conn, [sku for sku, _ in lines], req.warehouse_id)


async def _replicate(tx: Tx, table, key: str, key_value: str, revision: int, values: dict) -> bool:
    """Insert or replace a replica row unless it already holds this revision or a newer one.

    Revision 0 (an event from before revisions existed) always applies.
    """
    current = (await tx.conn.execute(select(table.c.revision).where(table.c[key] == key_value))).first()
    if current is not None and revision and current.revision >= revision:
        log.info("replica.stale_ignored", table=table.name, key=key_value, revision=revision,
                 held=current.revision)
        return False
    await tx.conn.execute(delete(table).where(table.c[key] == key_value))
    await tx.conn.execute(table.insert().values(
        **{key: key_value}, revision=revision, updated_at=utcnow(), **values))
    return True


async def replicate_item(tx: Tx, item: erp_pb2.Item, revision: int = 0) -> None:
    await _replicate(tx, items, "sku", item.sku, revision, dict(
        weight_grams=item.weight_grams, description=item.description, uom=item.uom,
        currency_code=item.unit_price.currency_code, unit_price_minor=item.unit_price.amount_minor,
        active=item.active))


async def replicate_customer(tx: Tx, c: erp_pb2.Customer, revision: int = 0) -> None:
    await _replicate(tx, customers, "customer_id", c.customer_id, revision, dict(
        name=c.name, currency_code=c.currency_code, credit_limit_minor=c.credit_limit.amount_minor,
        blocked=c.blocked))


# ---- stock as of a movement sequence (inventory reconciliation) ----

MAX_AS_OF = 1000


async def inventory_as_of(conn: AsyncConnection, refs) -> list[wms_pb2.InventoryAsOf]:
    """On hand of each position right after the given sequence, from the movement history,
    with the current position and the first later movement (and whether its event is still
    in the outbox, i.e. not yet published)."""
    refs = list(refs)
    problems = []
    if len(refs) > MAX_AS_OF:
        problems.append(("positions", f"at most {MAX_AS_OF} per call"))
    for i, r in enumerate(refs):
        if not r.sku or not r.warehouse_id or r.sequence < 0:
            problems.append((f"positions[{i}]", "sku, warehouse_id and a sequence >= 0 are required"))
    if problems:
        raise InvalidArgument(problems)
    if not refs:
        return []
    pairs = list({(r.warehouse_id, r.sku) for r in refs})
    current = {(r.warehouse_id, r.sku): r for r in (await conn.execute(
        select(stock.c.warehouse_id, stock.c.sku, stock.c.on_hand, stock.c.sequence)
        .where(tuple_(stock.c.warehouse_id, stock.c.sku).in_(pairs)))).all()}
    wanted = list({(r.warehouse_id, r.sku, s) for r in refs for s in (r.sequence, r.sequence + 1)})
    m = stock_movements.c
    moves = {(r.warehouse_id, r.sku, r.sequence): r for r in (await conn.execute(
        select(m.warehouse_id, m.sku, m.sequence, m.on_hand_after, m.event_id, m.at)
        .where(tuple_(m.warehouse_id, m.sku, m.sequence).in_(wanted)))).all()}
    next_ids = [mv.event_id for (_w, _s, seq), mv in moves.items() if mv.event_id]
    unpublished = set((await conn.execute(
        select(outbox.c.event_id).where(outbox.c.event_id.in_(next_ids)))).scalars()) if next_ids else set()
    out = []
    for r in refs:
        pos = current.get((r.warehouse_id, r.sku))
        at = moves.get((r.warehouse_id, r.sku, r.sequence))
        nxt = moves.get((r.warehouse_id, r.sku, r.sequence + 1))
        a = wms_pb2.InventoryAsOf(
            sku=r.sku, warehouse_id=r.warehouse_id, sequence=r.sequence, exists=pos is not None,
            known=r.sequence == 0 or at is not None,
            on_hand_at_sequence=at.on_hand_after if at is not None else 0,
            current_sequence=pos.sequence if pos is not None else 0,
            current_on_hand=pos.on_hand if pos is not None else 0,
            next_movement_unpublished=nxt is not None and nxt.event_id in unpublished)
        if at is not None:
            a.sequence_time.FromDatetime(at.at)
        if nxt is not None:
            a.next_movement_time.FromDatetime(nxt.at)
        out.append(a)
    return out


# ---- fulfilment orders ----
#
# A fulfilment ships in one or more waves. Each line has an ordered quantity;
# open = ordered - shipped - cancelled. Allocation takes all open quantities
# at once (all or nothing) into the wave (wave_quantity, allocated in stock).
# An exception (short pick, damage, stock discrepancy) writes off what is
# missing from the wave and parks it in exception_quantity until
# order-to-ship decides: SHIP_PARTIAL leaves it open (a later wave ships it),
# CANCEL_LINES cancels it. A ship confirmation ships the wave; what is still
# open goes back to BACKORDERED as the next wave.


@dataclass(frozen=True)
class FLine:
    line_no: int
    sku: str
    quantity: int
    shipped: int
    cancelled: int
    wave: int
    exception: int

    @property
    def open(self) -> int:
        return self.quantity - self.shipped - self.cancelled


async def _fulfilment(conn: AsyncConnection, order_id: str):
    return (await conn.execute(select(fulfilments).where(fulfilments.c.order_id == order_id))).first()


async def _flines(conn: AsyncConnection, order_id: str) -> list[FLine]:
    c = fulfilment_lines.c
    rows = await conn.execute(
        select(c.line_no, c.sku, c.quantity, c.shipped, c.cancelled, c.wave_quantity, c.exception_quantity)
        .where(c.order_id == order_id).order_by(c.line_no))
    return [FLine(*r) for r in rows]


async def wave_lines(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    """The current shipment's quantities by SKU."""
    return [(x.sku, x.wave) for x in await _flines(conn, order_id)]


async def _lines_of(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    """The lines as ordered."""
    return [(x.sku, x.quantity) for x in await _flines(conn, order_id)]


async def _set_line(tx: Tx, order_id: str, line_no: int, **values) -> None:
    await tx.conn.execute(update(fulfilment_lines).where(
        fulfilment_lines.c.order_id == order_id, fulfilment_lines.c.line_no == line_no).values(**values))


async def fulfilment_pb(conn: AsyncConnection, order_id: str) -> wms_pb2.FulfilmentOrder:
    row = await _fulfilment(conn, order_id)
    if row is None:
        raise NotFound("fulfilment order", order_id)
    return await _order_pb(conn, row)


async def _order_pb(conn: AsyncConnection, row) -> wms_pb2.FulfilmentOrder:
    order_id = row.order_id
    lines = await _flines(conn, order_id)
    fo = wms_pb2.FulfilmentOrder(
        fulfilment_id=row.fulfilment_id, order_id=row.order_id, warehouse_id=row.warehouse_id,
        lines=_quantities((x.sku, x.quantity) for x in lines),
        status=_status_pb(row.status),
        shortage_policy=wms_pb2.ShortagePolicy.Value(f"SHORTAGE_POLICY_{row.shortage_policy}"),
        ship_to=_address_pb(row, "ship_to_"), shipment_id=row.shipment_id,
        carrier_id=row.carrier_id, tracking_number=row.tracking_number,
        package_weight_grams=row.package_weight_grams, wave=row.wave,
        progress=[wms_pb2.FulfilmentLine(sku=x.sku, ordered_quantity=x.quantity, shipped_quantity=x.shipped,
                                         cancelled_quantity=x.cancelled, wave_quantity=x.wave,
                                         exception_quantity=x.exception) for x in lines],
    )
    if row.status == "EXCEPTION":
        fo.exception.CopyFrom(wms_pb2.FulfilmentException(
            kind=wms_pb2.ExceptionKind.Value(f"EXCEPTION_KIND_{row.exception_kind}"),
            lines=_quantities((x.sku, x.exception) for x in lines if x.exception),
            detail=row.exception_detail))
        if row.exception_at is not None:
            fo.exception.time.FromDatetime(row.exception_at)
    rows = await conn.execute(
        select(milestones).where(milestones.c.order_id == order_id).order_by(milestones.c.id)
    )
    for m in rows:
        fo.milestones.add(status=_status_pb(m.status)).time.FromDatetime(m.at)
    return fo


async def _milestone(tx: Tx, order_id: str, status: str, at) -> None:
    await tx.conn.execute(milestones.insert().values(order_id=order_id, status=status, at=at))


async def _advance(tx: Tx, order_id: str, expected: str, status: str, **values) -> bool:
    """Move expected -> status (plus column values) and record the milestone; False if not in expected."""
    now = utcnow()
    result = await tx.conn.execute(
        update(fulfilments)
        .where(fulfilments.c.order_id == order_id, fulfilments.c.status == expected)
        .values(status=status, updated_at=now, **values)
    )
    if not result.rowcount:
        return False
    await _milestone(tx, order_id, status, now)
    return True


async def _emit(tx: Tx, subject: str, order_id: str, **fields) -> None:
    row = await _fulfilment(tx.conn, order_id)
    message = contracts.message_type(subject)(fulfilment_order=await _order_pb(tx.conn, row), **fields)
    with order_context(row.traceparent):
        await tx.emit(subject, message, key=order_id)


async def create_fulfilment(tx: Tx, cmd: events.CreateFulfilment, delays: Delays) -> None:
    """Record a fulfilment order once (idempotent on order_id) and allocate, backorder or reject it.

    A new order waits in BACKORDERED (without a milestone) until, in this same
    transaction, it is allocated, rejected or confirmed as backordered.
    """
    if await _fulfilment(tx.conn, cmd.order_id) is not None:
        return
    if cmd.shortage_policy not in wms_pb2.ShortagePolicy.values():
        raise PermanentError(f"unknown shortage policy {cmd.shortage_policy}")
    now = utcnow()
    lines = _lines(cmd.lines)
    policy = wms_pb2.ShortagePolicy.Name(cmd.shortage_policy).removeprefix("SHORTAGE_POLICY_")
    trace: dict[str, str] = {}
    telemetry.inject(trace)
    await tx.conn.execute(fulfilments.insert().values(
        fulfilment_id=f"FUL-{cmd.order_id}", order_id=cmd.order_id, warehouse_id=cmd.warehouse_id,
        status="BACKORDERED", shortage_policy=policy, **_address_values(cmd.ship_to, "ship_to_"),
        created_at=now, updated_at=now, traceparent=trace.get("traceparent", ""), wave=1,
    ))
    if lines:
        await tx.conn.execute(fulfilment_lines.insert(), [
            {"order_id": cmd.order_id, "line_no": i, "sku": sku, "quantity": qty}
            for i, (sku, qty) in enumerate(lines)
        ])
    if problems := domain.line_problems(lines):
        await _reject(tx, cmd.order_id, "INVALID_LINES", "; ".join(f"{f}: {d}" for f, d in problems))
        return
    if not await _warehouse_exists(tx.conn, cmd.warehouse_id):
        await _reject(tx, cmd.order_id, "UNKNOWN_WAREHOUSE", f"no warehouse {cmd.warehouse_id!r}")
        return
    short = domain.shortages(lines, await _available(tx.conn, cmd.warehouse_id, [s for s, _ in lines]))
    if not short:
        await allocate(tx, cmd.order_id, delays)
    elif cmd.shortage_policy == wms_pb2.SHORTAGE_POLICY_CANCEL:
        await _reject(tx, cmd.order_id, "INSUFFICIENT_STOCK", "not enough stock and policy CANCEL", short)
    else:
        await _milestone(tx, cmd.order_id, "BACKORDERED", now)
        await _emit(tx, "wms.fulfilment.backordered", cmd.order_id, shortages=_quantities(short))
        await replenishment.check_positions(tx, cmd.warehouse_id, [sku for sku, _ in lines])


async def _reject(tx: Tx, order_id: str, code: str, reason: str,
                  short: Iterable[domain.Line] = ()) -> None:
    await _advance(tx, order_id, "BACKORDERED", "REJECTED")
    await _emit(tx, "wms.fulfilment.rejected", order_id, reason_code=code, reason=reason,
                shortages=_quantities(short))


def _open(lines: list[FLine]) -> list[domain.Line]:
    """What is still to ship, by SKU (lines with nothing open left out)."""
    return [(x.sku, x.open) for x in lines if x.open > 0]


async def allocate(tx: Tx, order_id: str, delays: Delays) -> bool:
    """BACKORDERED -> ALLOCATED, all or nothing: only when every open quantity fits in available stock.

    The stock rows stay locked until commit, so allocated never exceeds on-hand
    (the store's check constraint refuses it anyway).
    """
    row = await _fulfilment(tx.conn, order_id)
    lines = await _flines(tx.conn, order_id)
    wanted = _open(lines)
    available = await _available(tx.conn, row.warehouse_id, [sku for sku, _ in wanted])
    if not wanted or domain.shortages(wanted, available) or not await _advance(
        tx, order_id, "BACKORDERED", "ALLOCATED", next_step_at=_due_in(delays.pick)
    ):
        return False
    for x in lines:
        if x.open > 0:
            await _set_line(tx, order_id, x.line_no, wave_quantity=x.open)
            await tx.conn.execute(update(stock).where(_stock_key(row.warehouse_id, x.sku))
                                  .values(allocated=stock.c.allocated + x.open))
    await replenishment.check_positions(tx, row.warehouse_id, [sku for sku, _ in wanted])
    await _emit(tx, "wms.fulfilment.allocated", order_id)
    return True


async def allocate_backorders(tx: Tx, warehouse_id: str, delays: Delays) -> None:
    """Allocate the warehouse's backordered orders that now fit, first come first served."""
    c = fulfilment_lines.c
    rows = await tx.conn.execute(
        select(fulfilments.c.order_id, fulfilments.c.created_at, c.sku,
               (c.quantity - c.shipped - c.cancelled).label("open"))
        .join(fulfilment_lines, c.order_id == fulfilments.c.order_id)
        .where(fulfilments.c.warehouse_id == warehouse_id, fulfilments.c.status == "BACKORDERED")
        .order_by(fulfilments.c.order_id, c.line_no)
    )
    waiting: dict[str, tuple] = {}
    for r in rows:
        lines = waiting.setdefault(r.order_id, (r.created_at, []))[1]
        if r.open > 0:
            lines.append((r.sku, r.open))
    backorders = [domain.Backorder(oid, at, tuple(lines)) for oid, (at, lines) in waiting.items() if lines]
    available = await _available(tx.conn, warehouse_id, {sku for b in backorders for sku, _ in b.lines})
    for order_id in domain.fcfs_allocation(backorders, available):
        await allocate(tx, order_id, delays)


async def _write_off(tx: Tx, warehouse_id: str, sku: str, qty: int, why: str, order_id: str) -> None:
    """Units allocated to an order that are not there (or not sellable): on-hand and allocation drop."""
    await _move(tx, warehouse_id, sku, -qty, events.MOVEMENT_REASON_ADJUSTMENT, f"{why} {order_id}",
                allocated_delta=-qty)


async def _raise_exception(tx: Tx, order_id: str, expected: str, kind: str, resume: str,
                           missing: dict[int, int], detail: str, *, write_off: str = "") -> bool:
    """expected -> EXCEPTION: the missing quantities leave the wave and wait for a decision.

    With ``write_off`` (the movement's reference prefix) the missing units also
    leave the books: on-hand and allocation drop (``_write_off``).
    """
    if not await _advance(tx, order_id, expected, "EXCEPTION", next_step_at=None, exception_kind=kind,
                          exception_detail=detail, exception_at=utcnow(), resume_status=resume):
        return False
    row = await _fulfilment(tx.conn, order_id)
    lines = await _flines(tx.conn, order_id)
    for x in lines:
        if qty := missing.get(x.line_no, 0):
            await _set_line(tx, order_id, x.line_no, wave_quantity=x.wave - qty,
                            exception_quantity=x.exception + qty)
            if write_off:
                await _write_off(tx, row.warehouse_id, x.sku, qty, write_off, order_id)
    short = [(x.sku, missing[x.line_no]) for x in lines if missing.get(x.line_no)]
    await _emit(tx, "wms.fulfilment.exception", order_id, kind=wms_pb2.ExceptionKind.Value(f"EXCEPTION_KIND_{kind}"),
                lines=_quantities(short), detail=detail)
    return True


def _missing(lines: list[FLine], found: dict[str, int] | None, what: str) -> dict[int, int]:
    """line_no -> quantity missing from the wave, given what was found per SKU (None: everything)."""
    if found is None:
        return {}
    problems = [(f"{what}[{sku}]", "not on the order") for sku in found if sku not in {x.sku for x in lines}]
    missing = {}
    for x in lines:
        got = found.get(x.sku, x.wave)
        if got < 0 or got > x.wave:
            problems.append((f"{what}[{x.sku}]", f"between 0 and the {x.wave} in this shipment"))
        elif got < x.wave:
            missing[x.line_no] = x.wave - got
    if problems:
        raise InvalidArgument(problems)
    return missing


async def pick(tx: Tx, order_id: str, delays: Delays, picked: dict[str, int] | None = None) -> bool:
    """ALLOCATED -> PICKED; with less found than allocated, a SHORT_PICK exception instead."""
    row = await _fulfilment(tx.conn, order_id)
    if row is None or row.status != "ALLOCATED":
        return False
    lines = await _flines(tx.conn, order_id)
    if missing := _missing(lines, picked, "picked_lines"):
        return await _raise_exception(
            tx, order_id, "ALLOCATED", "SHORT_PICK", "PICKED", missing,
            "found less than allocated: " + ", ".join(
                f"{x.sku} {x.wave - missing[x.line_no]} of {x.wave}" for x in lines if x.line_no in missing),
            write_off="short-pick")
    if not await _advance(tx, order_id, "ALLOCATED", "PICKED", next_step_at=_due_in(delays.pack)):
        return False
    await _emit(tx, "wms.fulfilment.picked", order_id)
    return True


async def _weight(tx: Tx, order_id: str, declared: int = 0) -> int:
    lines = [(x.sku, x.wave) for x in await _flines(tx.conn, order_id) if x.wave]
    rows = await tx.conn.execute(select(items).where(items.c.sku.in_([sku for sku, _ in lines])))
    return domain.package_weight(lines, {r.sku: r.weight_grams for r in rows}, declared)


async def pack(tx: Tx, order_id: str, weight_grams: int = 0, damaged: dict[str, int] | None = None) -> bool:
    """PICKED -> PACKED with the given package weight, else the item master's; then it waits for a shipment.

    Units damaged at packing are written off: a DAMAGED exception instead.
    """
    row = await _fulfilment(tx.conn, order_id)
    if row is None or row.status != "PICKED":
        return False
    lines = await _flines(tx.conn, order_id)
    if damaged:
        found = {x.sku: x.wave - damaged.get(x.sku, 0) for x in lines}
        found.update({sku: -1 for sku in damaged if sku not in found})
        missing = _missing(lines, found, "damaged_lines")
        if missing:
            return await _raise_exception(
                tx, order_id, "PICKED", "DAMAGED", "PACKED", missing,
                "damaged at packing: " + ", ".join(
                    f"{x.sku} {missing[x.line_no]}" for x in lines if x.line_no in missing),
                write_off="damaged")
    weight = await _weight(tx, order_id, weight_grams)
    if not await _advance(tx, order_id, "PICKED", "PACKED", package_weight_grams=weight, next_step_at=None):
        return False
    await _emit(tx, "wms.fulfilment.packed", order_id)
    return True


async def resolve_exception(tx: Tx, cmd: events.ResolveFulfilmentException, delays: Delays) -> None:
    """Order-to-ship's decision on an open exception, then the fulfilment moves on.

    SHIP_PARTIAL leaves the missing quantity open (a later shipment), CANCEL_LINES
    cancels it. With nothing left in the wave, the order goes back to waiting
    for stock (or is cancelled when nothing is open at all); otherwise it
    resumes where it stopped (allocated, picked or packed).
    """
    row = await _fulfilment(tx.conn, cmd.order_id)
    if row is None:
        raise PermanentError(f"no fulfilment order {cmd.order_id!r}")
    if row.status != "EXCEPTION" or (cmd.wave and cmd.wave != row.wave):
        log.info("wms.resolve.ignored", order_id=cmd.order_id, status=row.status, wave=row.wave)
        return
    if cmd.action not in (wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL, wms_pb2.EXCEPTION_ACTION_CANCEL_LINES):
        raise PermanentError(f"unknown exception action {cmd.action}")
    lines = await _flines(tx.conn, cmd.order_id)
    for x in lines:
        if x.exception:
            extra = {"cancelled": x.cancelled + x.exception} \
                if cmd.action == wms_pb2.EXCEPTION_ACTION_CANCEL_LINES else {}
            await _set_line(tx, cmd.order_id, x.line_no, exception_quantity=0, **extra)
    lines = await _flines(tx.conn, cmd.order_id)
    clear = dict(exception_kind="", exception_detail="", exception_at=None, resume_status="")
    if any(x.wave for x in lines):
        resume = row.resume_status
        values = {"ALLOCATED": dict(next_step_at=_due_in(delays.pick)),
                  "PICKED": dict(next_step_at=_due_in(delays.pack)),
                  "PACKED": dict(next_step_at=None,
                                 package_weight_grams=await _weight(tx, cmd.order_id))}[resume]
        await _advance(tx, cmd.order_id, "EXCEPTION", resume, **values, **clear)
        await _emit(tx, f"wms.fulfilment.{resume.lower()}", cmd.order_id)
    elif open_lines := _open(lines):
        await _advance(tx, cmd.order_id, "EXCEPTION", "BACKORDERED", next_step_at=None, **clear)
        await _emit(tx, "wms.fulfilment.backordered", cmd.order_id, shortages=_quantities(open_lines))
        if not await allocate(tx, cmd.order_id, delays):
            await replenishment.check_positions(tx, row.warehouse_id, [sku for sku, _ in open_lines])
    else:
        await _advance(tx, cmd.order_id, "EXCEPTION", "CANCELLED", next_step_at=None, **clear)
        await _emit(tx, "wms.fulfilment.cancelled", cmd.order_id, reason="every missing line cancelled")


async def report_stock_count(tx: Tx, req: wms_pb2.ReportStockCountRequest,
                             delays: Delays) -> tuple[wms_pb2.InventoryPosition, list[str]]:
    """Correct on-hand to a count; when it no longer covers the allocations, the most recently
    allocated orders that are not picked yet lose the difference (STOCK_DISCREPANCY)."""
    problems = [(f, "required") for f in ("warehouse_id", "sku") if not getattr(req, f)]
    if req.counted_on_hand < 0:
        problems.append(("counted_on_hand", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)
    key = _stock_key(req.warehouse_id, req.sku)
    pos = (await tx.conn.execute(select(stock).where(key))).first()
    if pos is None:
        raise NotFound("inventory position", f"{req.warehouse_id}/{req.sku}")
    deficit = pos.allocated - req.counted_on_hand
    affected = []
    if deficit > 0:
        c = fulfilment_lines.c
        candidates = (await tx.conn.execute(
            select(fulfilments.c.order_id, c.line_no, c.wave_quantity)
            .join(fulfilment_lines, c.order_id == fulfilments.c.order_id)
            .where(fulfilments.c.warehouse_id == req.warehouse_id, fulfilments.c.status == "ALLOCATED",
                   c.sku == req.sku, c.wave_quantity > 0)
            .order_by(fulfilments.c.updated_at.desc(), fulfilments.c.order_id.desc()))).all()
        for cand in candidates:
            if deficit <= 0:
                break
            take = min(deficit, cand.wave_quantity)
            if await _raise_exception(tx, cand.order_id, "ALLOCATED", "STOCK_DISCREPANCY", "ALLOCATED",
                                      {cand.line_no: take},
                                      f"bin count of {req.sku} is {req.counted_on_hand}: {take} "
                                      "allocated unit(s) are not there"):
                await tx.conn.execute(update(stock).where(key).values(allocated=stock.c.allocated - take))
                deficit -= take
                affected.append(cand.order_id)
    pos = (await tx.conn.execute(select(stock).where(key))).one()
    if (delta := req.counted_on_hand - pos.on_hand) != 0:
        if req.counted_on_hand < pos.allocated:
            raise FailedPrecondition(
                f"the count {req.counted_on_hand} is below what picked orders hold ({pos.allocated})",
                reason="COUNT_BELOW_PICKED", subject=f"{req.warehouse_id}/{req.sku}")
        await _move(tx, req.warehouse_id, req.sku, delta, events.MOVEMENT_REASON_ADJUSTMENT,
                    f"count {req.reference}".strip())
    if delta > 0:
        await allocate_backorders(tx, req.warehouse_id, delays)
    return position_pb((await tx.conn.execute(select(stock).where(key))).one()), affected


async def assign_shipment(tx: Tx, cmd: events.AssignShipment, delays: Delays) -> None:
    """PACKED -> LABELLED with the booked carrier and tracking number (of the current wave)."""
    row = await _fulfilment(tx.conn, cmd.order_id)
    if row is None:
        raise PermanentError(f"no fulfilment order {cmd.order_id!r}")
    if row.status in ("LABELLED", "SHIPPED") and row.shipment_id == cmd.shipment_id:
        return
    if cmd.wave and cmd.wave < row.wave:
        log.info("wms.assign_shipment.earlier_wave", order_id=cmd.order_id, wave=cmd.wave, current=row.wave)
        return
    if row.status in ("CANCELLED", "REJECTED"):
        log.warning("wms.assign_shipment.ignored", order_id=cmd.order_id, status=row.status)
        return
    if row.shipment_id and row.shipment_id != cmd.shipment_id and row.status != "PACKED":
        log.warning("wms.assign_shipment.stale", order_id=cmd.order_id, shipment_id=cmd.shipment_id,
                    current=row.shipment_id)
        return
    if not await _advance(tx, cmd.order_id, "PACKED", "LABELLED", shipment_id=cmd.shipment_id,
                          carrier_id=cmd.carrier_id, tracking_number=cmd.tracking_number,
                          next_step_at=_due_in(delays.ship)):
        raise NotReady(f"fulfilment order {cmd.order_id!r} is {row.status}, not packed yet")


async def ship(tx: Tx, order_id: str, delays: Delays) -> bool:
    """LABELLED -> SHIPPED: the wave's stock leaves (on-hand and allocation drop, one movement per line).

    When quantities are still open (a short pick shipped partially) the
    fulfilment goes back to BACKORDERED as the next wave, and is allocated at
    once when the stock is there.
    """
    if not await _advance(tx, order_id, "LABELLED", "SHIPPED", next_step_at=None):
        return False
    row = await _fulfilment(tx.conn, order_id)
    lines = await _flines(tx.conn, order_id)
    for x in lines:
        if x.wave:
            await _move(tx, row.warehouse_id, x.sku, -x.wave, events.MOVEMENT_REASON_SHIPMENT, order_id,
                        allocated_delta=-x.wave)
            await _set_line(tx, order_id, x.line_no, shipped=x.shipped + x.wave, wave_quantity=0)
    remaining = [(x.sku, x.open - x.wave) for x in lines if x.open - x.wave > 0]
    await _emit(tx, "wms.fulfilment.shipped", order_id, wave=row.wave,
                shipped_lines=_quantities((x.sku, x.wave) for x in lines if x.wave),
                remaining_lines=_quantities(remaining))
    if remaining:
        await _advance(tx, order_id, "SHIPPED", "BACKORDERED", wave=row.wave + 1, shipment_id="", carrier_id="",
                       tracking_number="", package_weight_grams=0)
        await _emit(tx, "wms.fulfilment.backordered", order_id, shortages=_quantities(remaining))
        if not await allocate(tx, order_id, delays):
            await replenishment.check_positions(tx, row.warehouse_id, [sku for sku, _ in remaining])
    return True


async def cancel_fulfilment(tx: Tx, cmd: events.CancelFulfilment, delays: Delays) -> None:
    """Cancel before labelling (releasing any allocation, which may serve backorders); refuse after."""
    row = await _fulfilment(tx.conn, cmd.order_id)
    if row is None:
        order = wms_pb2.FulfilmentOrder(order_id=cmd.order_id)
        await tx.emit("wms.fulfilment.cancelled",
                      events.FulfilmentCancelled(fulfilment_order=order, reason=cmd.reason), key=cmd.order_id)
    elif row.status in ("LABELLED", "SHIPPED"):
        await _emit(tx, "wms.fulfilment.cancel_refused", cmd.order_id,
                    reason=f"fulfilment is already {row.status}: too late to cancel")
    elif row.status in ("CANCELLED", "REJECTED"):
        await _emit(tx, "wms.fulfilment.cancelled", cmd.order_id, reason=cmd.reason)
    else:
        if not await _advance(tx, cmd.order_id, row.status, "CANCELLED", next_step_at=None):
            raise NotReady(f"fulfilment order {cmd.order_id!r} changed while cancelling")
        released = False
        for x in await _flines(tx.conn, cmd.order_id):
            if x.wave:
                await tx.conn.execute(update(stock).where(_stock_key(row.warehouse_id, x.sku))
                                      .values(allocated=stock.c.allocated - x.wave))
                released = True
            await _set_line(tx, cmd.order_id, x.line_no, wave_quantity=0, exception_quantity=0,
                            cancelled=x.quantity - x.shipped)
        await _emit(tx, "wms.fulfilment.cancelled", cmd.order_id, reason=cmd.reason)
        if released:
            await allocate_backorders(tx, row.warehouse_id, delays)
        await replenishment.check_positions(tx, row.warehouse_id,
                                            [s for s, _ in await _lines_of(tx.conn, cmd.order_id)])


async def due_fulfilments(conn: AsyncConnection, statuses, limit: int = 100) -> list:
    """(order_id, status, traceparent) of fulfilments in the given statuses whose next step is due, oldest first."""
    rows = await conn.execute(
        select(fulfilments.c.order_id, fulfilments.c.status, fulfilments.c.traceparent)
        .where(fulfilments.c.status.in_(list(statuses)), fulfilments.c.next_step_at <= utcnow())
        .order_by(fulfilments.c.next_step_at)
        .limit(limit)
    )
    return rows.all()


# ---- milestone RPCs (handheld tools) ----


async def _confirmed(tx: Tx, order_id: str, advanced: bool, expected: str, reason: str) -> wms_pb2.FulfilmentOrder:
    row = await _fulfilment(tx.conn, order_id)
    if row is None:
        raise NotFound("fulfilment order", order_id)
    if not advanced:
        raise FailedPrecondition(
            f"fulfilment order {order_id!r} is {row.status}, not {expected}",
            reason=f"FULFILMENT_{row.status}" if row.status in FINAL else reason,
            subject=f"fulfilments/{order_id}",
        )
    return await fulfilment_pb(tx.conn, order_id)


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
    return await _confirmed(tx, order_id, advanced, "ALLOCATED", "FULFILMENT_NOT_ALLOCATED")


async def confirm_pack(tx: Tx, order_id: str, weight_grams: int, damaged_lines=()) -> wms_pb2.FulfilmentOrder:
    if weight_grams < 0:
        raise InvalidArgument([("package_weight_grams", "must not be negative")])
    damaged = _by_sku(damaged_lines, "damaged_lines")
    if damaged and any(q <= 0 for q in damaged.values()):
        raise InvalidArgument([("damaged_lines", "quantities must be positive")])
    advanced = await pack(tx, order_id, weight_grams, damaged)
    return await _confirmed(tx, order_id, advanced, "PICKED", "FULFILMENT_NOT_PICKED")


async def confirm_ship(tx: Tx, order_id: str, delays: Delays) -> wms_pb2.FulfilmentOrder:
    advanced = await ship(tx, order_id, delays)
    return await _confirmed(tx, order_id, advanced, "LABELLED", "NO_SHIPMENT_ASSIGNED")
