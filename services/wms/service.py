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
from sqlalchemy import delete, select, tuple_, update
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
    await insert_ignore(tx.conn, stock, {"sku": sku, "warehouse_id": warehouse_id,
                                         "on_hand": 0, "allocated": 0, "sequence": 0})
    key = _stock_key(warehouse_id, sku)
    await tx.conn.execute(update(stock).where(key).values(
        on_hand=stock.c.on_hand + delta, allocated=stock.c.allocated + allocated_delta,
        sequence=stock.c.sequence + 1))
    row = (await tx.conn.execute(select(stock).where(key))).one()
    event_id = await tx.emit(
        "wms.inventory.adjusted",
        events.InventoryAdjusted(sku=sku, warehouse_id=warehouse_id, delta=delta,
                                 on_hand_after=row.on_hand, sequence=row.sequence,
                                 reason=reason, reference=reference),
        key=f"{warehouse_id}/{sku}",
    )
    await tx.conn.execute(stock_movements.insert().values(
        warehouse_id=warehouse_id, sku=sku, sequence=row.sequence, delta=delta,
        on_hand_after=row.on_hand, reason=events.MovementReason.Name(reason).removeprefix("MOVEMENT_REASON_"),
        reference=reference[:100], event_id=event_id, at=utcnow()))
    await replenishment.check_positions(tx, warehouse_id, [sku])


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
        for sku, qty in lines:
            await _move(tx, req.warehouse_id, sku, qty, events.MOVEMENT_REASON_RECEIPT, req.receipt_id)
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


async def _fulfilment(conn: AsyncConnection, order_id: str):
    return (await conn.execute(select(fulfilments).where(fulfilments.c.order_id == order_id))).first()


async def _lines_of(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    rows = await conn.execute(
        select(fulfilment_lines.c.sku, fulfilment_lines.c.quantity)
        .where(fulfilment_lines.c.order_id == order_id)
        .order_by(fulfilment_lines.c.line_no)
    )
    return [(r.sku, r.quantity) for r in rows]


async def fulfilment_pb(conn: AsyncConnection, order_id: str) -> wms_pb2.FulfilmentOrder:
    row = await _fulfilment(conn, order_id)
    if row is None:
        raise NotFound("fulfilment order", order_id)
    return await _order_pb(conn, row)


async def _order_pb(conn: AsyncConnection, row) -> wms_pb2.FulfilmentOrder:
    order_id = row.order_id
    fo = wms_pb2.FulfilmentOrder(
        fulfilment_id=row.fulfilment_id, order_id=row.order_id, warehouse_id=row.warehouse_id,
        lines=_quantities(await _lines_of(conn, order_id)),
        status=_status_pb(row.status),
        shortage_policy=wms_pb2.ShortagePolicy.Value(f"SHORTAGE_POLICY_{row.shortage_policy}"),
        ship_to=_address_pb(row, "ship_to_"), shipment_id=row.shipment_id,
        carrier_id=row.carrier_id, tracking_number=row.tracking_number,
        package_weight_grams=row.package_weight_grams,
    )
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
        created_at=now, updated_at=now, traceparent=trace.get("traceparent", ""),
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


async def allocate(tx: Tx, order_id: str, delays: Delays) -> bool:
    """BACKORDERED -> ALLOCATED, all or nothing: only when every line fits in available stock.

    The stock rows stay locked until commit, so allocated never exceeds on-hand
    (the store's check constraint refuses it anyway).
    """
    row = await _fulfilment(tx.conn, order_id)
    lines = await _lines_of(tx.conn, order_id)
    available = await _available(tx.conn, row.warehouse_id, [sku for sku, _ in lines])
    if domain.shortages(lines, available) or not await _advance(
        tx, order_id, "BACKORDERED", "ALLOCATED", next_step_at=_due_in(delays.pick)
    ):
        return False
    for sku, qty in lines:
        await tx.conn.execute(update(stock).where(_stock_key(row.warehouse_id, sku))
                              .values(allocated=stock.c.allocated + qty))
    await replenishment.check_positions(tx, row.warehouse_id, [sku for sku, _ in lines])
    await _emit(tx, "wms.fulfilment.allocated", order_id)
    return True


async def allocate_backorders(tx: Tx, warehouse_id: str, delays: Delays) -> None:
    """Allocate the warehouse's backordered orders that now fit, first come first served."""
    rows = await tx.conn.execute(
        select(fulfilments.c.order_id, fulfilments.c.created_at, fulfilment_lines.c.sku,
               fulfilment_lines.c.quantity)
        .join(fulfilment_lines, fulfilment_lines.c.order_id == fulfilments.c.order_id)
        .where(fulfilments.c.warehouse_id == warehouse_id, fulfilments.c.status == "BACKORDERED")
        .order_by(fulfilments.c.order_id, fulfilment_lines.c.line_no)
    )
    waiting: dict[str, tuple] = {}
    for r in rows:
        waiting.setdefault(r.order_id, (r.created_at, []))[1].append((r.sku, r.quantity))
    backorders = [domain.Backorder(oid, at, tuple(lines)) for oid, (at, lines) in waiting.items()]
    available = await _available(tx.conn, warehouse_id, {sku for b in backorders for sku, _ in b.lines})
    for order_id in domain.fcfs_allocation(backorders, available):
        await allocate(tx, order_id, delays)


async def pick(tx: Tx, order_id: str, delays: Delays) -> bool:
    """ALLOCATED -> PICKED."""
    if not await _advance(tx, order_id, "ALLOCATED", "PICKED", next_step_at=_due_in(delays.pack)):
        return False
    await _emit(tx, "wms.fulfilment.picked", order_id)
    return True


async def pack(tx: Tx, order_id: str, weight_grams: int = 0) -> bool:
    """PICKED -> PACKED with the given package weight, else the item master's; then it waits for a shipment."""
    lines = await _lines_of(tx.conn, order_id)
    rows = await tx.conn.execute(select(items).where(items.c.sku.in_([sku for sku, _ in lines])))
    weight = domain.package_weight(lines, {r.sku: r.weight_grams for r in rows}, weight_grams)
    if not await _advance(tx, order_id, "PICKED", "PACKED", package_weight_grams=weight, next_step_at=None):
        return False
    await _emit(tx, "wms.fulfilment.packed", order_id)
    return True


async def assign_shipment(tx: Tx, cmd: events.AssignShipment, delays: Delays) -> None:
    """PACKED -> LABELLED with the booked carrier and tracking number."""
    row = await _fulfilment(tx.conn, cmd.order_id)
    if row is None:
        raise PermanentError(f"no fulfilment order {cmd.order_id!r}")
    if row.status in ("LABELLED", "SHIPPED"):
        return
    if row.status in ("CANCELLED", "REJECTED"):
        log.warning("wms.assign_shipment.ignored", order_id=cmd.order_id, status=row.status)
        return
    if not await _advance(tx, cmd.order_id, "PACKED", "LABELLED", shipment_id=cmd.shipment_id,
                          carrier_id=cmd.carrier_id, tracking_number=cmd.tracking_number,
                          next_step_at=_due_in(delays.ship)):
        raise NotReady(f"fulfilment order {cmd.order_id!r} is {row.status}, not packed yet")


async def ship(tx: Tx, order_id: str) -> bool:
    """LABELLED -> SHIPPED: the stock leaves (on-hand and allocation drop, one movement per line)."""
    if not await _advance(tx, order_id, "LABELLED", "SHIPPED", next_step_at=None):
        return False
    row = await _fulfilment(tx.conn, order_id)
    for sku, qty in await _lines_of(tx.conn, order_id):
        await _move(tx, row.warehouse_id, sku, -qty, events.MOVEMENT_REASON_SHIPMENT, order_id,
                    allocated_delta=-qty)
    await _emit(tx, "wms.fulfilment.shipped", order_id)
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
        await _emit(tx, "wms.fulfilment.cancelled", cmd.order_id, reason=cmd.reason)
        if row.status != "BACKORDERED":
            for sku, qty in await _lines_of(tx.conn, cmd.order_id):
                await tx.conn.execute(update(stock).where(_stock_key(row.warehouse_id, sku))
                                      .values(allocated=stock.c.allocated - qty))
            await allocate_backorders(tx, row.warehouse_id, delays)
        await replenishment.check_positions(tx, row.warehouse_id, [s for s, _ in await _lines_of(tx.conn, cmd.order_id)])


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


async def confirm_pick(tx: Tx, order_id: str, delays: Delays) -> wms_pb2.FulfilmentOrder:
    advanced = await pick(tx, order_id, delays)
    return await _confirmed(tx, order_id, advanced, "ALLOCATED", "FULFILMENT_NOT_ALLOCATED")


async def confirm_pack(tx: Tx, order_id: str, weight_grams: int) -> wms_pb2.FulfilmentOrder:
    if weight_grams < 0:
        raise InvalidArgument([("package_weight_grams", "must not be negative")])
    advanced = await pack(tx, order_id, weight_grams)
    return await _confirmed(tx, order_id, advanced, "PICKED", "FULFILMENT_NOT_PICKED")


async def confirm_ship(tx: Tx, order_id: str) -> wms_pb2.FulfilmentOrder:
    advanced = await ship(tx, order_id)
    return await _confirmed(tx, order_id, advanced, "LABELLED", "NO_SHIPMENT_ASSIGNED")
