"""WMS stock use cases in-process: warehouses, receipts and their movements, positions,
bin counts (and the discrepancies they find), stock as of a movement sequence."""

from __future__ import annotations

import pytest

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.wms import stock, stock_commands

from .wms import DELAYS, WH, Warehouse, lines, status_name


@pytest.fixture
async def wms(usecase_store) -> Warehouse:
    return await Warehouse.open(usecase_store)


def movements(sent) -> list[tuple]:
    return [(m.body.sku, m.body.delta, m.body.on_hand_after, m.body.sequence, m.body.reference)
            for m in sent if m.subject == "wms.inventory.adjusted"]


async def test_receipts_raise_on_hand_with_one_sequenced_movement_per_line_and_once_only(wms):
    first = await wms.receive("R-1", A=5, B=2)
    assert {(p.sku, p.on_hand, p.available, p.sequence) for p in first} == {("A", 5, 5, 1), ("B", 2, 2, 1)}
    await wms.receive("R-2", A=3)
    again = await wms.receive("R-1", A=5, B=2)  # a repeat: nothing changes
    assert {(p.sku, p.on_hand, p.sequence) for p in again} == {("A", 8, 2), ("B", 2, 1)}
    sent = await wms.sent()
    assert movements(sent) == [("A", 5, 5, 1, "R-1"), ("B", 2, 2, 1, "R-1"), ("A", 3, 8, 2, "R-2")]
    assert {m.body.reason for m in sent} == {events.MOVEMENT_REASON_RECEIPT}
    assert [m.key for m in sent] == [f"{WH}/A", f"{WH}/B", f"{WH}/A"]  # per position: ordered


async def test_a_receipt_of_many_lines_books_the_same_movements_in_bulk(wms):
    await wms.receive("R-SMALL", **{"SKU-0": 1})
    many = {f"SKU-{i}": i + 1 for i in range(60)}
    booked = await wms.receive("R-BIG", **many)
    assert {p.sku: (p.on_hand, p.sequence) for p in booked} == {
        sku: (qty + (sku == "SKU-0"), 1 + (sku == "SKU-0")) for sku, qty in many.items()}
    big = {m[0]: m[1:] for m in movements(await wms.sent()) if m[4] == "R-BIG"}
    assert big == {sku: (qty, qty + (sku == "SKU-0"), 1 + (sku == "SKU-0"), "R-BIG")
                   for sku, qty in many.items()}


async def test_requests_with_bad_input_name_each_field(wms):
    with pytest.raises(InvalidArgument) as info:
        await wms.run(stock_commands.receive_stock, wms_pb2.ReceiveStockRequest(
            warehouse_id=WH, lines=lines(A=0) + lines(A=1)), DELAYS)
    assert [f for f, _ in info.value.violations] == ["receipt_id", "lines[0].quantity", "lines[1].sku"]
    with pytest.raises(NotFound):
        await wms.receive("R-X", warehouse_id="NOPE", A=1)
    with pytest.raises(InvalidArgument):
        await wms.run(stock.upsert_warehouse, wms_pb2.Warehouse())
    async with wms.store.read() as conn:
        with pytest.raises(InvalidArgument):
            await stock.list_inventory(conn, -1, "")
        with pytest.raises(InvalidArgument):
            await stock.list_inventory(conn, 10, "junk")
    assert await wms.sent() == []


async def test_warehouses_and_inventory_pages(wms):
    await wms.run(stock.upsert_warehouse, wms_pb2.Warehouse(warehouse_id=WH, name="Renamed"))
    await wms.run(stock.upsert_warehouse, wms_pb2.Warehouse(warehouse_id="WH-0", name="Other"))
    await wms.receive("R-1", A=1, B=2, C=3)
    async with wms.store.read() as conn:
        assert [(w.warehouse_id, w.name) for w in await stock.list_warehouses(conn)] == [
            ("WH-0", "Other"), (WH, "Renamed")]
        page, token = await stock.list_inventory(conn, 2, "")
        assert [p.sku for p in page] == ["A", "B"] and token
        rest, end = await stock.list_inventory(conn, 2, token)
        assert [(p.sku, p.on_hand) for p in rest] == [("C", 3)] and end == ""
        assert await stock.list_inventory(conn, 10, "", "WH-0") == ([], "")
        assert [p.sku for p in await stock.get_availability(conn, ["C", "Z"])] == ["C"]


# ---- bin counts ----


async def count(wms: Warehouse, sku: str, counted: int, reference: str = "C-1"):
    return await wms.run(stock_commands.report_stock_count, wms_pb2.ReportStockCountRequest(
        warehouse_id=WH, sku=sku, counted_on_hand=counted, reference=reference), DELAYS)


async def test_a_count_that_covers_the_allocations_corrects_on_hand_with_one_adjustment(wms):
    await wms.allocated_order("O-1", A=2)
    await wms.receive("R-2", A=8)
    await wms.sent()
    position, affected = await count(wms, "A", 7)
    assert (position.on_hand, position.allocated, affected) == (7, 2, [])
    assert movements(await wms.sent()) == [("A", -3, 7, 3, "count C-1")]
    assert (await count(wms, "A", 7))[1] == [] and await wms.sent() == []  # nothing to correct


async def test_a_count_below_the_allocations_takes_them_back_from_the_newest_orders_not_yet_picked(wms):
    await wms.receive("R-1", A=6)
    for order_id in ("O-1", "O-2", "O-3"):
        await wms.create(order_id, A=2)
    await wms.pick("O-1")  # picked: what it holds cannot be taken back
    await wms.sent()
    position, affected = await count(wms, "A", 3)
    assert affected == ["O-3", "O-2"]
    assert (position.on_hand, position.allocated) == (3, 3)
    sent = await wms.sent()
    exceptions = {m.body.fulfilment_order.order_id: m.body
                  for m in sent if m.subject == "wms.fulfilment.exception"}
    assert {o: (e.kind, [(q.sku, q.quantity) for q in e.lines]) for o, e in exceptions.items()} == {
        "O-3": (wms_pb2.EXCEPTION_KIND_STOCK_DISCREPANCY, [("A", 2)]),
        "O-2": (wms_pb2.EXCEPTION_KIND_STOCK_DISCREPANCY, [("A", 1)])}
    assert exceptions["O-2"].detail == "bin count of A is 3: 1 allocated unit(s) are not there"
    assert movements(sent) == [("A", -3, 3, 2, "count C-1")]
    assert [status_name(await wms.order(o)) for o in ("O-1", "O-2", "O-3")] == [
        "PICKED", "EXCEPTION", "EXCEPTION"]


async def test_a_count_below_what_picked_orders_hold_is_refused_and_changes_nothing(wms):
    await wms.allocated_order("O-1", A=4)
    await wms.pick("O-1")
    await wms.sent()
    with pytest.raises(FailedPrecondition) as info:
        await count(wms, "A", 1)
    assert info.value.reason == "COUNT_BELOW_PICKED"
    assert await wms.positions("A") == {"A": (4, 4, 1)} and await wms.sent() == []


async def test_a_count_above_on_hand_serves_backorders(wms):
    await wms.receive("R-1", A=1)
    await wms.create("O-1", A=3)
    await wms.sent()
    position, _ = await count(wms, "A", 5)
    assert (position.on_hand, position.allocated) == (5, 3)
    assert [m.subject for m in await wms.sent()] == ["wms.inventory.adjusted", "wms.fulfilment.allocated"]


async def test_a_count_needs_a_known_position_and_a_quantity(wms):
    with pytest.raises(NotFound):
        await count(wms, "A", 1)
    with pytest.raises(InvalidArgument) as info:
        await wms.run(stock_commands.report_stock_count, wms_pb2.ReportStockCountRequest(counted_on_hand=-1),
                      DELAYS)
    assert [f for f, _ in info.value.violations] == ["warehouse_id", "sku", "counted_on_hand"]


# ---- stock as of a movement sequence ----


async def test_stock_as_of_a_sequence_from_the_movement_history(wms):
    await wms.receive("R-1", A=5)
    await wms.sent()
    await wms.receive("R-2", A=2)  # its movement still in the outbox: not yet published

    async def as_of(sequence: int) -> wms_pb2.InventoryAsOf:
        async with wms.store.read() as conn:
            (found,) = await stock.inventory_as_of(conn, [wms_pb2.StockPositionRef(
                sku="A", warehouse_id=WH, sequence=sequence)])
        return found

    first = await as_of(1)
    assert (first.exists, first.known, first.on_hand_at_sequence) == (True, True, 5)
    assert (first.current_sequence, first.current_on_hand) == (2, 7)
    assert first.HasField("next_movement_time") and first.next_movement_unpublished
    await wms.sent()  # published
    assert not (await as_of(1)).next_movement_unpublished
    latest = await as_of(2)
    assert (latest.on_hand_at_sequence, latest.HasField("next_movement_time")) == (7, False)
    assert not (await as_of(9)).known
    async with wms.store.read() as conn:
        with pytest.raises(InvalidArgument):
            await stock.inventory_as_of(conn, [wms_pb2.StockPositionRef(sku="A", sequence=-1)])
        assert await stock.inventory_as_of(conn, []) == []
