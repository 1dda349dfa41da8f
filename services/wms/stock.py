"""Stock: warehouses, positions and availability, the one path by which stock moves,
receipts, and stock as of a movement sequence (inventory reconciliation).

Every change of on-hand stock goes through ``move_stock``: it updates the
positions, appends to the movement history, publishes one
``wms.inventory.adjusted`` per SKU (with the position's next ``sequence``) and
re-evaluates the replenishment trigger, all in the caller's transaction.
Allocation alone (``change_allocation``) moves nothing on hand: no event.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain, replenishment
from .store import outbox, receipts, stock, stock_movements, warehouses

ADDRESS_FIELDS = ("name", "line1", "city", "postal_code", "country_code")


# ---- between messages and rows ----


def lines_of(pb_lines) -> list[domain.Line]:
    """(sku, quantity) of a message's SkuQuantity lines."""
    return [(line.sku, line.quantity) for line in pb_lines]


def quantities_pb(lines: Iterable[domain.Line]) -> list[SkuQuantity]:
    return [SkuQuantity(sku=sku, quantity=qty) for sku, qty in lines]


def address_pb(row, prefix: str) -> Address:
    return Address(**{f: getattr(row, prefix + f) for f in ADDRESS_FIELDS})


def address_values(address: Address, prefix: str) -> dict[str, str]:
    return {prefix + f: getattr(address, f) for f in ADDRESS_FIELDS}


def _position_key(warehouse_id: str, sku: str):
    return (stock.c.warehouse_id == warehouse_id) & (stock.c.sku == sku)


# ---- warehouses ----


async def upsert_warehouse(tx: Tx, warehouse: wms_pb2.Warehouse) -> None:
    if not warehouse.warehouse_id:
        raise InvalidArgument([("warehouse.warehouse_id", "required")])
    values = {"name": warehouse.name, **address_values(warehouse.address, "address_")}
    result = await tx.conn.execute(
        update(warehouses).where(warehouses.c.warehouse_id == warehouse.warehouse_id).values(**values))
    if not result.rowcount:
        await tx.conn.execute(warehouses.insert().values(warehouse_id=warehouse.warehouse_id, **values))


async def list_warehouses(conn: AsyncConnection) -> list[wms_pb2.Warehouse]:
    rows = (await conn.execute(select(warehouses).order_by(warehouses.c.warehouse_id))).all()
    return [wms_pb2.Warehouse(warehouse_id=r.warehouse_id, name=r.name, address=address_pb(r, "address_"))
            for r in rows]


async def warehouse_exists(conn: AsyncConnection, warehouse_id: str) -> bool:
    query = select(warehouses.c.warehouse_id).where(warehouses.c.warehouse_id == warehouse_id)
    return await conn.scalar(query) is not None


# ---- positions ----


def position_pb(row) -> wms_pb2.InventoryPosition:
    return wms_pb2.InventoryPosition(
        sku=row.sku, warehouse_id=row.warehouse_id, on_hand=row.on_hand, allocated=row.allocated,
        available=row.on_hand - row.allocated, sequence=row.sequence,
    )


async def get_availability(conn: AsyncConnection, skus,
                           warehouse_id: str = "") -> list[wms_pb2.InventoryPosition]:
    """Positions of the SKUs that have one (in one warehouse, or all when empty)."""
    query = select(stock).where(stock.c.sku.in_(list(skus))).order_by(stock.c.warehouse_id, stock.c.sku)
    if warehouse_id:
        query = query.where(stock.c.warehouse_id == warehouse_id)
    return [position_pb(r) for r in (await conn.execute(query)).all()]


async def get_position(conn: AsyncConnection, warehouse_id: str, sku: str):
    """The position's row (sku, warehouse_id, on_hand, allocated, sequence), or None."""
    return (await conn.execute(select(stock).where(_position_key(warehouse_id, sku)))).first()


async def list_inventory(
    conn: AsyncConnection, page_size: int, page_token: str, warehouse_id: str = ""
) -> tuple[list[wms_pb2.InventoryPosition], str]:
    """One page of positions by warehouse and SKU, and the token of the next page ('' at the end)."""
    query = select(stock).where(stock.c.warehouse_id == warehouse_id) if warehouse_id else select(stock)
    rows, token = await keyset_page(conn, query, [stock.c.warehouse_id, stock.c.sku], page_size, page_token)
    return [position_pb(r) for r in rows], token


async def available(conn: AsyncConnection, warehouse_id: str, skus) -> dict[str, int]:
    """Available quantity by SKU, locking the stock rows (in SKU order) until commit."""
    rows = await conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.allocated)
        .where(stock.c.warehouse_id == warehouse_id, stock.c.sku.in_(list(skus)))
        .order_by(stock.c.sku)
        .with_for_update()
    )
    return {r.sku: r.on_hand - r.allocated for r in rows}


async def change_allocation(tx: Tx, warehouse_id: str, sku: str, delta: int) -> None:
    """Allocate (delta > 0) or release (delta < 0) stock of a position; nothing moves on hand."""
    await tx.conn.execute(update(stock).where(_position_key(warehouse_id, sku))
                          .values(allocated=stock.c.allocated + delta))


# ---- the one movement path ----


async def move_stock(tx: Tx, warehouse_id: str, moves: list[domain.Line], reason: int, reference: str,
                     *, allocated_deltas: dict[str, int] | None = None) -> None:
    """Change on-hand stock of distinct SKUs by their deltas (and the allocations a shipment or
    a write-off consumes) and publish one movement each: a handful of statements however many
    SKUs (a receipt of many lines). Then re-evaluate their replenishment trigger."""
    skus = [sku for sku, _ in moves]
    allocated_deltas = allocated_deltas or {}
    dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
    await tx.conn.execute(dialect.insert(stock).on_conflict_do_nothing(), [
        {"sku": sku, "warehouse_id": warehouse_id, "on_hand": 0, "allocated": 0, "sequence": 0}
        for sku in skus])
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
             on_hand_after=after[sku][0], reason=reason_name, reference=reference[:100],
             event_id=event_id, at=now)
        for (sku, delta), event_id in zip(moves, event_ids, strict=True)])
    await replenishment.check_positions(tx, warehouse_id, skus)


# ---- receipts ----


async def book_receipt(tx: Tx, receipt_id: str, warehouse_id: str, lines: list[domain.Line]) -> bool:
    """Book a receipt's lines into stock once (idempotent on receipt_id): each raises on hand
    (reason RECEIPT). False when it was booked before. What a receipt then does to
    backorders is ``stock_commands.receive_stock``'s."""
    problems = [(f, "required") for f, value in (("receipt_id", receipt_id), ("warehouse_id", warehouse_id))
                if not value]
    problems += domain.line_problems(lines)
    if problems:
        raise InvalidArgument(problems)
    if not await warehouse_exists(tx.conn, warehouse_id):
        raise NotFound("warehouse", warehouse_id)
    if not await insert_ignore(tx.conn, receipts, {"receipt_id": receipt_id, "warehouse_id": warehouse_id,
                                                   "received_at": utcnow()}):
        return False
    await move_stock(tx, warehouse_id, lines, events.MOVEMENT_REASON_RECEIPT, receipt_id)
    return True


async def receipt_booked(conn: AsyncConnection, receipt_id: str) -> bool:
    query = select(receipts.c.receipt_id).where(receipts.c.receipt_id == receipt_id)
    return await conn.scalar(query) is not None


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
    for i, ref in enumerate(refs):
        if not ref.sku or not ref.warehouse_id or ref.sequence < 0:
            problems.append((f"positions[{i}]", "sku, warehouse_id and a sequence >= 0 are required"))
    if problems:
        raise InvalidArgument(problems)
    if not refs:
        return []
    pairs = list({(ref.warehouse_id, ref.sku) for ref in refs})
    current = {(r.warehouse_id, r.sku): r for r in (await conn.execute(
        select(stock.c.warehouse_id, stock.c.sku, stock.c.on_hand, stock.c.sequence)
        .where(tuple_(stock.c.warehouse_id, stock.c.sku).in_(pairs)))).all()}
    wanted = list({(ref.warehouse_id, ref.sku, seq)
                   for ref in refs for seq in (ref.sequence, ref.sequence + 1)})
    movement = stock_movements.c
    moves = {(r.warehouse_id, r.sku, r.sequence): r for r in (await conn.execute(
        select(movement.warehouse_id, movement.sku, movement.sequence, movement.on_hand_after,
               movement.event_id, movement.at)
        .where(tuple_(movement.warehouse_id, movement.sku, movement.sequence).in_(wanted)))).all()}
    next_ids = [mv.event_id for mv in moves.values() if mv.event_id]
    unpublished = set((await conn.execute(
        select(outbox.c.event_id).where(outbox.c.event_id.in_(next_ids)))).scalars()) if next_ids else set()
    out = []
    for ref in refs:
        position = current.get((ref.warehouse_id, ref.sku))
        at = moves.get((ref.warehouse_id, ref.sku, ref.sequence))
        later = moves.get((ref.warehouse_id, ref.sku, ref.sequence + 1))
        as_of = wms_pb2.InventoryAsOf(
            sku=ref.sku, warehouse_id=ref.warehouse_id, sequence=ref.sequence, exists=position is not None,
            known=ref.sequence == 0 or at is not None,
            on_hand_at_sequence=at.on_hand_after if at is not None else 0,
            current_sequence=position.sequence if position is not None else 0,
            current_on_hand=position.on_hand if position is not None else 0,
            next_movement_unpublished=later is not None and later.event_id in unpublished)
        if at is not None:
            as_of.sequence_time.FromDatetime(at.at)
        if later is not None:
            as_of.next_movement_time.FromDatetime(later.at)
        out.append(as_of)
    return out
