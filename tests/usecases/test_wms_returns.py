"""WMS returns in-process: expect (once), receive into quarantine, inspect (only restocked
units enter stock), cancel (refused at the dock, a tombstone when it comes first)."""

from __future__ import annotations

import pytest

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.bus import PermanentError
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.wms import returns

from .wms import WH, Warehouse

S = wms_pb2.ReturnReceiptStatus


@pytest.fixture
async def wms(usecase_store) -> Warehouse:
    wms = await Warehouse.open(usecase_store)
    await wms.receive("R-1", **{"SKU-A": 10, "SKU-B": 5})
    await wms.sent()
    return wms


def expect(rma: str, warehouse_id: str = WH, **lines: tuple[int, str]) -> events.ExpectReturn:
    """lines: sku=(quantity, reason)"""
    return events.ExpectReturn(
        rma_number=rma, return_id=f"RET-{rma}", order_id="O1", warehouse_id=warehouse_id,
        lines=[wms_pb2.ReturnReceiptLine(line_number=n, sku=sku, expected_quantity=q, reason_code=r)
               for n, (sku, (q, r)) in enumerate(lines.items(), 1)])


def received(*quantities: int) -> wms_pb2.ReceiveReturnRequest:
    return wms_pb2.ReceiveReturnRequest(rma_number="RMA-1", lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, received_quantity=q) for n, q in enumerate(quantities, 1)])


def inspected(*lines: tuple[int, int, int], note: str = "") -> wms_pb2.InspectReturnRequest:
    """lines: (restocked, scrapped, refused) by line number from 1"""
    return wms_pb2.InspectReturnRequest(rma_number="RMA-1", lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, restocked_quantity=r, scrapped_quantity=s,
                                  refused_quantity=f, note=note) for n, (r, s, f) in enumerate(lines, 1)])


async def test_a_return_is_expected_received_into_quarantine_and_only_restocked_units_enter_stock(wms):
    await wms.run(returns.expect_return,
                  expect("RMA-1", **{"SKU-A": (3, "DEFECTIVE"), "SKU-B": (2, "OTHER")}), None)
    (expected,) = await wms.sent()
    assert (expected.subject, expected.key, expected.body.return_receipt.status) == (
        "wms.return.expected", "RET-RMA-1", S.RETURN_RECEIPT_STATUS_EXPECTED)

    with pytest.raises(InvalidArgument):  # more than expected
        await wms.run(returns.receive_return, received(4), None)
    receipt = await wms.run(returns.receive_return, received(2, 2), None)
    assert receipt.status == S.RETURN_RECEIPT_STATUS_RECEIVED and receipt.HasField("receive_time")
    assert [x.received_quantity for x in receipt.lines] == [2, 2]
    assert await wms.positions("SKU-A") == {"SKU-A": (10, 0, 1)}  # quarantine, not stock
    assert await wms.subjects() == ["wms.return.received"]

    with pytest.raises(InvalidArgument):  # the quantities must add up
        await wms.run(returns.inspect_return, inspected((2, 1, 0)))
    receipt = await wms.run(returns.inspect_return, inspected((1, 1, 0), (0, 0, 2), note="used"))
    assert [(x.restocked_quantity, x.scrapped_quantity, x.refused_quantity, x.note)
            for x in receipt.lines] == [(1, 1, 0, "used"), (0, 0, 2, "used")]
    moved, done = await wms.sent()
    assert (moved.body.sku, moved.body.delta, moved.body.on_hand_after, moved.body.sequence,
            moved.body.reason, moved.body.reference) == (
        "SKU-A", 1, 11, 2, events.MOVEMENT_REASON_RETURN, "RMA-1")
    assert done.subject == "wms.return.inspected"
    with pytest.raises(FailedPrecondition) as info:  # once
        await wms.run(returns.inspect_return, inspected((1, 1, 0), (0, 0, 2)))
    assert info.value.reason == "RETURN_INSPECTED"

    # A repeated expect command says again how it stands; nothing is recreated.
    await wms.run(returns.expect_return, expect("RMA-1", **{"SKU-A": (3, "DEFECTIVE")}), None)
    (again,) = await wms.sent()
    assert (again.subject, again.body.return_receipt.status) == (
        "wms.return.expected", S.RETURN_RECEIPT_STATUS_INSPECTED)


async def test_receiving_with_no_lines_takes_everything_expected(wms):
    await wms.run(returns.expect_return, expect("RMA-1", **{"SKU-A": (3, "DEFECTIVE")}), 0)
    assert await wms.run(returns.receive, "RMA-1", {}, None)
    async with wms.store.read() as conn:
        assert [x.received_quantity for x in (await returns.receipt_pb(conn, "RMA-1")).lines] == [3]
        assert await returns.due_returns(conn) == []  # the autopilot inspects nothing without a delay
    with pytest.raises(NotFound):
        await wms.run(returns.receive, "RMA-?", {}, None)


async def test_the_autopilot_inspects_by_the_rules_of_each_reason(wms):
    await wms.run(returns.expect_return, expect(
        "RMA-1", **{"SKU-A": (2, "NOT_NEEDED"), "SKU-B": (1, "DAMAGED"), "SKU-C": (1, "WRONG_ITEM")}), 0)
    async with wms.store.read() as conn:
        assert [(r.rma_number, r.status) for r in await returns.due_returns(conn)] == [("RMA-1", "EXPECTED")]
    await wms.run(returns.receive, "RMA-1", {}, 0)
    assert await wms.run(returns.autopilot_inspect, "RMA-1", {"NOT_NEEDED": "RESTOCK", "DAMAGED": "SCRAP",
                                                              "*": "REFUSE"})
    inspection = [m.body for m in await wms.sent("wms.return.inspected")][0].return_receipt
    assert [(x.sku, x.restocked_quantity, x.scrapped_quantity, x.refused_quantity, x.note)
            for x in inspection.lines] == [("SKU-A", 2, 0, 0, "autopilot: restock"),
                                           ("SKU-B", 0, 1, 0, "autopilot: scrap"),
                                           ("SKU-C", 0, 0, 1, "autopilot: refuse")]
    assert await wms.positions("SKU-A") == {"SKU-A": (12, 0, 2)}


async def test_cancel_until_received_then_refused_and_a_cancel_that_comes_first_leaves_a_tombstone(wms):
    await wms.run(returns.expect_return, expect("RMA-1", **{"SKU-A": (1, "NOT_NEEDED")}), None)
    await wms.run(returns.cancel_return, events.CancelReturn(rma_number="RMA-1", reason="expired"))
    _, cancelled = await wms.sent()
    assert (cancelled.subject, cancelled.body.reason, cancelled.body.return_receipt.status) == (
        "wms.return.cancelled", "expired", S.RETURN_RECEIPT_STATUS_CANCELLED)
    with pytest.raises(FailedPrecondition) as info:  # the dock refuses the parcel
        await wms.run(returns.receive_return, received(1), None)
    assert info.value.reason == "RETURN_CANCELLED"

    await wms.run(returns.expect_return, expect("RMA-2", **{"SKU-A": (1, "NOT_NEEDED")}), None)
    await wms.run(returns.receive, "RMA-2", {}, None)
    await wms.sent()
    await wms.run(returns.cancel_return, events.CancelReturn(rma_number="RMA-2"))
    (refused,) = await wms.sent()
    assert (refused.subject, refused.body.reason) == (
        "wms.return.cancel_refused", "the return is already received: too late to cancel")

    await wms.run(returns.cancel_return, events.CancelReturn(rma_number="RMA-3", return_id="RET-RMA-3"))
    await wms.run(returns.expect_return, expect("RMA-3", **{"SKU-A": (1, "NOT_NEEDED")}), None)
    assert [(m.subject, m.body.reason) for m in await wms.sent()] == [
        ("wms.return.cancelled", "cancelled"), ("wms.return.cancelled", "cancelled")]  # still cancelled
    with pytest.raises(PermanentError):
        await wms.run(returns.cancel_return, events.CancelReturn())


async def test_an_unknown_warehouse_or_bad_lines_reject_the_return(wms):
    await wms.run(returns.expect_return,
                  expect("RMA-1", warehouse_id="WH-NOPE", **{"SKU-A": (1, "OTHER")}), None)
    await wms.run(returns.expect_return, expect("RMA-2", **{"SKU-A": (0, "OTHER")}), None)
    rejected = [m.body for m in await wms.sent()]
    assert [(r.return_receipt.rma_number, r.reason_code) for r in rejected] == [
        ("RMA-1", "UNKNOWN_WAREHOUSE"), ("RMA-2", "INVALID_LINES")]
    assert rejected[0].return_receipt.status == S.RETURN_RECEIPT_STATUS_REJECTED
    with pytest.raises(PermanentError):
        await wms.run(returns.expect_return, events.ExpectReturn(), None)
