"""WMS replenishment in-process: the reorder-point replica, the trigger that asks once per
crossing, and the stock commands a replenishment sends (receipts, transfers out)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crossdock.erp.v1 import replenishment_pb2 as erp_repl
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import replenishment_pb2 as repl
from services.mesh.bus import PermanentError
from services.wms import replenishment, stock_commands
from services.wms.store import stock_transfers

from .wms import DELAYS, WH, Warehouse, lines


@pytest.fixture
async def wms(usecase_store) -> Warehouse:
    return await Warehouse.open(usecase_store)


async def reorder_point(wms: Warehouse, sku: str, point: int, quantity: int, revision: int) -> None:
    await wms.run(replenishment.replicate_reorder_point, erp_repl.ReorderPoint(
        sku=sku, warehouse_id=WH, reorder_point=point, reorder_quantity=quantity, revision=revision))


async def requests(wms: Warehouse) -> list[repl.ReplenishmentRequested]:
    return [m.body for m in await wms.sent("wms.replenishment.requested")]


async def test_one_request_per_crossing_and_the_receipt_answering_it_rearms_the_trigger(wms):
    await wms.receive("R-1", A=8)
    # A newer revision first, then a stale one (ignored: it would ask at once).
    await reorder_point(wms, "A", 5, 10, revision=2)
    await reorder_point(wms, "A", 100, 10, revision=1)
    assert await requests(wms) == []
    # Orders of 7, 7 and 6: the first is allocated and takes the position to
    # 8 - 7 = 1 < 5 (the crossing: one request, up to 15); the others are
    # backordered and ask for nothing more.
    for order_id, qty in (("O-1", 7), ("O-2", 7), ("O-3", 6)):
        await wms.create(order_id, A=qty)
    (first,) = await requests(wms)
    assert (first.position, first.reorder_point, first.quantity, first.on_hand, first.allocated,
            first.backordered) == (1, 5, 14, 8, 7, 0)
    assert [await wms.status(o) for o in ("O-1", "O-2", "O-3")] == ["ALLOCATED", "BACKORDERED", "BACKORDERED"]

    # The delivery answering it (twice: idempotent on receipt_id) re-arms the
    # trigger and serves the backorders first come first served: 8 + 14 - 20 =
    # 2 is still below 5, so WMS asks again at once (a new crossing).
    delivery = repl.ReceiveStock(receipt_id="RPL-1", warehouse_id=WH, request_id=first.request_id,
                                 lines=lines(A=first.quantity))
    await wms.run(stock_commands.receive, delivery, DELAYS)
    await wms.run(stock_commands.receive, delivery, DELAYS)
    assert await wms.positions("A") == {"A": (22, 20, 2)}
    assert [await wms.status(o) for o in ("O-2", "O-3")] == ["ALLOCATED", "ALLOCATED"]
    (second,) = await requests(wms)
    assert (second.position, second.quantity) == (2, 13)
    (received,) = [m.body for m in await wms.sent("wms.stock.received")]
    assert (received.receipt_id, received.request_id) == ("RPL-1", first.request_id)


async def test_a_position_back_at_the_reorder_point_rearms_and_a_new_crossing_asks_again(wms):
    await wms.receive("R-1", A=6)
    await reorder_point(wms, "A", 5, 10, revision=1)
    await wms.create("O-1", A=2)  # 4 < 5
    assert len(await requests(wms)) == 1
    await wms.receive("R-2", A=3)  # 7: back above, re-armed
    await wms.create("O-2", A=1)  # 6: still above
    assert await requests(wms) == []
    await wms.create("O-3", A=2)  # 4: a second crossing
    assert [r.position for r in await requests(wms)] == [4]


async def test_a_reorder_point_needs_its_position_and_revision_zero_always_applies(wms):
    with pytest.raises(PermanentError):
        await wms.run(replenishment.replicate_reorder_point, erp_repl.ReorderPoint(sku="A"))
    await reorder_point(wms, "A", 5, 10, revision=3)
    await reorder_point(wms, "A", 2, 10, revision=0)  # from before revisions: applies
    assert [(r.position, r.reorder_point) for r in await requests(wms)] == [(0, 5)]


async def test_a_receive_command_needs_a_receipt_id_and_a_known_warehouse(wms):
    with pytest.raises(PermanentError):
        await wms.run(stock_commands.receive, repl.ReceiveStock(warehouse_id=WH, lines=lines(A=1)), DELAYS)
    with pytest.raises(PermanentError):  # retrying cannot help
        await wms.run(stock_commands.receive, repl.ReceiveStock(
            receipt_id="RPL-1", warehouse_id="NOPE", lines=lines(A=1)), DELAYS)


async def transfer(wms: Warehouse, transfer_id: str, warehouse_id: str = WH, **quantities: int) -> None:
    await wms.run(stock_commands.transfer_out, repl.TransferStockOut(
        transfer_id=transfer_id, warehouse_id=warehouse_id, destination_warehouse_id="WH-2",
        lines=lines(**quantities)))


async def transfer_status(wms: Warehouse, transfer_id: str) -> str:
    async with wms.store.read() as conn:
        return await conn.scalar(select(stock_transfers.c.status)
                                 .where(stock_transfers.c.transfer_id == transfer_id))


async def test_a_transfer_out_is_issued_whole_from_available_stock_once_or_refused(wms):
    await wms.allocated_order("O-1", A=4)
    await wms.receive("R-2", A=6)  # 10 on hand, 6 available
    await wms.sent()
    await transfer(wms, "T-1", A=7)
    (refused,) = await wms.sent()
    assert (refused.subject, refused.body.reason_code, refused.body.reason) == (
        "wms.stock.transfer_refused", "INSUFFICIENT_STOCK", "A short by 1")
    assert await transfer_status(wms, "T-1") == "REFUSED"
    assert await wms.positions("A") == {"A": (10, 4, 2)}

    await transfer(wms, "T-2", A=6)
    await transfer(wms, "T-2", A=6)  # idempotent on transfer_id
    moved, issued = await wms.sent()
    assert (moved.body.delta, moved.body.on_hand_after, moved.body.reason, moved.body.reference) == (
        -6, 4, events.MOVEMENT_REASON_TRANSFER, "T-2")
    assert (issued.subject, issued.body.destination_warehouse_id) == ("wms.stock.transferred_out", "WH-2")
    assert await transfer_status(wms, "T-2") == "ISSUED"
    assert await wms.positions("A") == {"A": (4, 4, 3)}


async def test_a_transfer_from_an_unknown_warehouse_or_of_bad_lines_is_refused(wms):
    await transfer(wms, "T-1", warehouse_id="NOPE", A=1)
    await transfer(wms, "T-2", A=0)
    assert [m.body.reason_code for m in await wms.sent()] == ["UNKNOWN_WAREHOUSE", "INVALID_LINES"]
    with pytest.raises(PermanentError):
        await transfer(wms, "", A=1)
