"""Return requests in-process: what may be returned (shipped orders, shipped
quantities less what other returns hold), the request id, cancellation and
the durable receive-window timer (``service.expire_due``)."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as pb
from services.mesh.errors import FailedPrecondition, NotFound
from services.returns import service
from tests.usecases.support import Outbox
from tests.usecases.test_returns_to_credit import (
    DEFECTIVE,
    NOT_NEEDED,
    ORDER,
    ReturnDesk,
    authorized,
    commands,
    inspected,
    receipt,
    return_desk,
    shipped_order,
    status,
    steps,
    usd,
)


@pytest.fixture
async def desk(usecase_store) -> ReturnDesk:
    return await return_desk(usecase_store, shipped_order(), shipped_order(
        "ORD-WAITING", status=ots.ORDER_STATUS_BACKORDERED))


async def not_returnable(desk: ReturnDesk, *lines: tuple[int, int, int]) -> str:
    with pytest.raises(FailedPrecondition) as info:
        await desk.create(*lines)
    assert info.value.reason == "QUANTITY_NOT_RETURNABLE"
    return info.value.message


async def test_only_what_was_shipped_and_is_not_held_by_another_return_can_be_returned(desk):
    message = await not_returnable(desk, (1, 4, DEFECTIVE))
    assert "at most 3 of line 1 (SKU-A) can be returned: 3 shipped" in message
    await desk.create((1, 2, DEFECTIVE))
    assert "at most 1 of line 1" in await not_returnable(desk, (1, 2, DEFECTIVE))
    await desk.create((1, 1, DEFECTIVE))
    assert "line 3 is not on the order" in await not_returnable(desk, (3, 1, DEFECTIVE))
    listed = await service.list_returns(desk.store, pb.ListReturnsRequest(order_id=ORDER))
    assert [[(x.line_number, x.quantity) for x in r.lines] for r in listed.returns] == [[(1, 2)], [(1, 1)]]


async def test_only_a_shipped_order_can_be_returned(desk, outbox):
    with pytest.raises(FailedPrecondition) as info:
        await desk.create((1, 1, DEFECTIVE), order_id="ORD-WAITING")
    assert info.value.reason == "ORDER_NOT_SHIPPED" and "only shipped orders" in info.value.message
    with pytest.raises(NotFound) as missing:
        await desk.create((1, 1, DEFECTIVE), order_id="ORD-NOPE")
    assert (missing.value.resource_type, missing.value.name) == ("order", "ORD-NOPE")
    assert await outbox(desk.store) == []


async def test_the_same_request_is_the_same_return_with_one_authorisation(desk):
    req = desk.request((1, 2, NOT_NEEDED))
    first = await desk.create(req)
    assert (await desk.create(req)).return_id == first.return_id
    assert list(await commands(desk)) == ["cmd.erp.return.authorize"]  # asked once
    other = pb.CreateReturnRequest()
    other.CopyFrom(req)
    other.lines[0].quantity = 1
    with pytest.raises(FailedPrecondition) as refused:
        await desk.create(other)
    assert refused.value.reason == "REQUEST_ID_REUSED" and first.return_id in refused.value.message


async def test_a_return_not_yet_authorised_is_cancelled_at_once_and_its_rma_request_withdrawn(desk):
    r = await desk.create((1, 1, NOT_NEEDED))
    await commands(desk)
    r = await service.cancel_return(desk.store, r.return_id, "customer kept it")
    assert status(r) == "CANCELLED" and r.status_reason == "customer kept it"
    assert set(await commands(desk)) == {"cmd.erp.return.cancel"}
    # Cancelled: it holds nothing, the same goods may be returned again.
    assert status(await desk.create((1, 3, NOT_NEEDED))) == "REQUESTED"


async def test_an_expected_return_is_cancelled_once_the_warehouse_withdrew_the_expectation(desk):
    r = await authorized(desk, await desk.create((1, 1, NOT_NEEDED)))
    assert status(r) == "EXPECTED"
    r = await service.cancel_return(desk.store, r.return_id, "customer kept it")
    assert status(r) == "CANCELLING"
    withdraw = (await commands(desk))["cmd.wms.return.cancel"]
    assert withdraw.rma_number == r.rma_number
    assert status(await service.cancel_return(desk.store, r.return_id, "")) == "CANCELLING"  # same answer
    assert await commands(desk) == {}
    await desk.fact("wms.return.cancelled", return_receipt=receipt(r), reason="withdrawn")
    r = await desk.get(r.return_id)
    assert status(r) == "CANCELLED" and steps(r)[-2:] == ["expectation.cancelled", "compensate"]
    assert set(await commands(desk)) == {"cmd.erp.return.cancel"}


async def test_a_return_at_the_dock_can_no_longer_be_cancelled(desk):
    r = await authorized(desk, await desk.create((1, 2, NOT_NEEDED)))
    await desk.fact("wms.return.received", return_receipt=receipt(r, (1, 2, 0, 0, 0)))
    with pytest.raises(FailedPrecondition) as refused:
        await service.cancel_return(desk.store, r.return_id, "")
    assert refused.value.reason == "RETURN_NOT_CANCELLABLE"
    assert status(await desk.get(r.return_id)) == "RECEIVED"


async def test_a_return_not_received_in_time_expires_its_expectation_is_withdrawn_and_its_rma_cancelled(desk):
    r = await desk.create((1, 1, NOT_NEEDED), receive_within=Duration(nanos=1_000))
    r = await authorized(desk, r)  # the window restarts with the RMA, and ends at once
    assert await service.expire_due(desk.store) == 1
    r = await desk.get(r.return_id)
    assert status(r) == "EXPIRING" and r.status_reason.startswith("not received within the receive window")
    assert set(await commands(desk)) == {"cmd.wms.return.cancel"}
    assert await service.expire_due(desk.store) == 0  # fired once
    await desk.fact("wms.return.cancelled", return_receipt=receipt(r), reason="withdrawn")
    r = await desk.get(r.return_id)
    assert status(r) == "EXPIRED"
    cancel = (await commands(desk))["cmd.erp.return.cancel"]
    assert cancel.reason == "return expired: not received in time"
    assert {"expired", "expectation.cancelled", "compensate"} <= set(steps(r))
    # An expired return holds nothing: the goods may be returned again.
    assert status(await desk.create((1, 3, NOT_NEEDED))) == "REQUESTED"


async def test_goods_arriving_while_the_expectation_is_withdrawn_carry_the_return_on(desk):
    r = await authorized(desk, await desk.create((1, 1, NOT_NEEDED), receive_within=Duration(nanos=1_000)))
    assert await service.expire_due(desk.store) == 1
    await desk.fact("wms.return.received", return_receipt=receipt(r, (1, 1, 0, 0, 0)))
    r = await desk.get(r.return_id)
    assert status(r) == "RECEIVED" and "carrying on" in r.timeline[-1].detail


async def test_a_return_erp_does_not_authorise_in_time_expires_and_a_late_authorisation_is_only_noted(desk):
    r = await desk.create((1, 1, NOT_NEEDED), receive_within=Duration(nanos=1_000))
    await Outbox.read(desk.store, take=True)
    assert await service.expire_due(desk.store) == 1
    r = await desk.get(r.return_id)
    assert status(r) == "EXPIRED" and r.status_reason.startswith("not authorised within the receive window")
    assert set(await commands(desk)) == {"cmd.erp.return.cancel"}
    await authorized(desk, r)
    r = await desk.get(r.return_id)
    assert status(r) == "EXPIRED" and "already expired" in r.timeline[-1].detail


async def test_a_timer_that_is_not_due_does_not_fire(desk):
    r = await authorized(desk, await desk.create((1, 1, NOT_NEEDED)))  # 30 days
    assert await service.expire_due(desk.store) == 0
    assert status(await desk.get(r.return_id)) == "EXPECTED"


async def test_what_came_back_is_used_up_and_what_was_never_sent_back_may_still_be_returned(desk):
    r = await authorized(desk, await desk.create((1, 3, DEFECTIVE)))  # all 3 shipped of line 1
    r = await inspected(desk, r, (1, 2, 1, 1, 0))  # 2 came back
    await desk.fact("erp.creditmemo.posted", credit_memo=erp_pb2.CreditMemo(
        credit_memo_id="CM-1", return_id=r.return_id, total=usd(2_000)))
    assert status(await desk.get(r.return_id)) == "PARTIALLY_CREDITED"
    assert "at most 1 of line 1" in await not_returnable(desk, (1, 2, DEFECTIVE))
    assert status(await desk.create((1, 1, DEFECTIVE))) == "REQUESTED"
