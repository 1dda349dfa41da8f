"""Return-to-credit's use cases in-process: a return created against a shipped
order, then the facts of ERP and WMS (``service.advance``) up to the credit
memo, on a real SQLite store made by the service's own migrations; the outbox
stands for the bus. Order-to-ship, asked over gRPC whether the order shipped,
is a small fake passed in place of the service's clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts
from services.mesh.store import Store
from services.returns import service
from tests.usecases.support import Outbox

ORDER = "ORD-1"
PRICES = {1: 1_000, 2: 2_000}  # by order line
NOT_NEEDED, DEFECTIVE, OTHER = pb.RETURN_REASON_NOT_NEEDED, pb.RETURN_REASON_DEFECTIVE, pb.RETURN_REASON_OTHER


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


def shipped_order(order_id: str = ORDER, status: int = ots.ORDER_STATUS_INVOICED, **lines: int) -> ots.Order:
    """lines: sku=quantity, numbered in order."""
    lines = lines or {"SKU-A": 3, "SKU-B": 2}
    return ots.Order(order_id=order_id, customer_id="C-1", warehouse_id="WH-1", status=status, total=usd(0),
                     lines=[ots.OrderLine(line_number=n, sku=sku, quantity=q)
                            for n, (sku, q) in enumerate(lines.items(), start=1)])


class FakeOrderToShip:
    def __init__(self, *orders: ots.Order) -> None:
        self.orders = {o.order_id: o for o in orders}

    async def GetOrder(self, req, **_):  # noqa: N802 - a gRPC method
        if req.order_id not in self.orders:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details=f"order {req.order_id!r} not found")
        return ots.GetOrderResponse(order=self.orders[req.order_id])


@dataclass
class Downstream:
    """Stands for ``services.mesh.app.Clients``."""

    ordertoship: FakeOrderToShip

    def stub(self, name: str) -> FakeOrderToShip:
        assert name == "ordertoship"
        return self.ordertoship


@dataclass
class ReturnDesk:
    """The returns service's use cases over one store, as the servicer, handlers and timers call them."""

    store: Store
    clients: Downstream

    def request(self, *lines: tuple[int, int, int], order_id: str = ORDER, **kw) -> pb.CreateReturnRequest:
        """lines: (order line, quantity, reason)"""
        return pb.CreateReturnRequest(request_id=str(uuid.uuid4()), order_id=order_id, lines=[
            pb.ReturnLine(line_number=n, quantity=q, reason=r) for n, q, r in lines], **kw)

    async def create(self, *lines: tuple[int, int, int] | pb.CreateReturnRequest, **kw) -> pb.CustomerReturn:
        """A return of these lines, or this very request."""
        given = lines and isinstance(lines[0], pb.CreateReturnRequest)
        req = lines[0] if given else self.request(*lines, **kw)
        return await service.create_return(self.store, self.clients, req, default_window_s=30 * 24 * 3600)

    async def fact(self, subject: str, **fields) -> bool:
        body = contracts.message_type(subject)(**fields)
        async with self.store.transaction() as tx:
            return await service.advance(tx, subject, body)

    async def get(self, return_id: str) -> pb.CustomerReturn:
        return await service.get_return(self.store, return_id)


async def return_desk(usecase_store, *orders: ots.Order) -> ReturnDesk:
    store = await usecase_store("returns")
    return ReturnDesk(store, Downstream(FakeOrderToShip(*(orders or (shipped_order(),)))))


@pytest.fixture
async def desk(usecase_store) -> ReturnDesk:
    return await return_desk(usecase_store)


def status(r: pb.CustomerReturn) -> str:
    return pb.ReturnStatus.Name(r.status).removeprefix("RETURN_STATUS_")


def steps(r: pb.CustomerReturn) -> list[str]:
    return [e.step for e in r.timeline]


async def commands(desk: ReturnDesk) -> dict:
    """The commands left to send, by subject (taken, as the relay would)."""
    return {m.subject: m.body for m in await Outbox.read(desk.store, "cmd", take=True)}


def receipt(r: pb.CustomerReturn, *lines: tuple[int, int, int, int, int]) -> wms_pb2.ReturnReceipt:
    """lines: (line, received, restocked, scrapped, refused)"""
    return wms_pb2.ReturnReceipt(rma_number=r.rma_number, return_id=r.return_id, lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, received_quantity=rc, restocked_quantity=rs,
                                  scrapped_quantity=sc, refused_quantity=rf) for n, rc, rs, sc, rf in lines])


async def authorized(desk: ReturnDesk, r: pb.CustomerReturn) -> pb.CustomerReturn:
    """ERP authorises at invoiced prices, WMS expects it; the outbox emptied."""
    lines = [erp_pb2.ReturnAuthorizationLine(line_number=x.line_number, sku=x.sku, quantity=x.quantity,
                                             unit_price=usd(PRICES[x.line_number])) for x in r.lines]
    await desk.fact("erp.return.authorized", authorization=erp_pb2.ReturnAuthorization(
        rma_number=f"RMA-{r.order_id}-1", return_id=r.return_id, lines=lines,
        expected_credit=usd(sum(x.quantity * PRICES[x.line_number] for x in r.lines))))
    r = await desk.get(r.return_id)
    await desk.fact("wms.return.expected", return_receipt=receipt(r))
    await Outbox.read(desk.store, take=True)
    return await desk.get(r.return_id)


async def inspected(desk: ReturnDesk, r: pb.CustomerReturn, *lines: tuple[int, int, int, int, int]):
    await desk.fact("wms.return.received", return_receipt=receipt(r, *lines))
    await desk.fact("wms.return.inspected", return_receipt=receipt(r, *lines))
    return await desk.get(r.return_id)


async def test_a_return_goes_from_request_to_credit_with_every_step_in_its_timeline(desk, outbox):
    r = await desk.create((1, 3, NOT_NEEDED), (2, 2, DEFECTIVE))
    assert status(r) == "REQUESTED" and r.expire_time.seconds > 0  # the receive window runs
    assert steps(r) == ["requested", "authorization.requested"]
    created, authorize = await outbox(desk.store, take=True)
    assert (created.subject, created.key) == ("returns.return.created", r.return_id)
    assert authorize.subject == "cmd.erp.return.authorize"
    assert [(x.line_number, x.sku, x.quantity) for x in authorize.body.lines] == [
        (1, "SKU-A", 3), (2, "SKU-B", 2)]

    await desk.fact("erp.return.authorized", authorization=erp_pb2.ReturnAuthorization(
        rma_number="RMA-ORD-1-1", return_id=r.return_id, expected_credit=usd(7_000), lines=[
            erp_pb2.ReturnAuthorizationLine(line_number=1, sku="SKU-A", quantity=3, unit_price=usd(1_000)),
            erp_pb2.ReturnAuthorizationLine(line_number=2, sku="SKU-B", quantity=2, unit_price=usd(2_000))]))
    r = await desk.get(r.return_id)
    assert status(r) == "AUTHORIZED" and r.rma_number == "RMA-ORD-1-1"
    assert r.expected_credit.amount_minor == 7_000
    assert [x.unit_price.amount_minor for x in r.lines] == [1_000, 2_000]
    expect = (await commands(desk))["cmd.wms.return.expect"]
    assert (expect.rma_number, expect.warehouse_id) == ("RMA-ORD-1-1", "WH-1")
    assert [(x.line_number, x.expected_quantity, x.reason_code) for x in expect.lines] == [
        (1, 3, "NOT_NEEDED"), (2, 2, "DEFECTIVE")]

    await desk.fact("wms.return.expected", return_receipt=receipt(r))
    assert status(await desk.get(r.return_id)) == "EXPECTED"
    await desk.fact("wms.return.received", return_receipt=receipt(r, (1, 3, 0, 0, 0), (2, 2, 0, 0, 0)))
    r = await desk.get(r.return_id)
    assert status(r) == "RECEIVED" and not r.HasField("expire_time")  # at the dock: the timer stops
    await desk.fact("wms.return.inspected", return_receipt=receipt(r, (1, 3, 3, 0, 0), (2, 2, 0, 2, 0)))
    assert status(await desk.get(r.return_id)) == "INSPECTED"
    post = (await commands(desk))["cmd.erp.creditmemo.post"]
    assert post.rma_number == "RMA-ORD-1-1"
    # Accepted: restocked and scrapped alike.
    assert [(x.line_number, x.quantity) for x in post.accepted_lines] == [(1, 3), (2, 2)]

    await desk.fact("erp.creditmemo.posted", credit_memo=erp_pb2.CreditMemo(
        credit_memo_id="CM-1", return_id=r.return_id, total=usd(7_000), lines=[
            erp_pb2.CreditMemoLine(line_number=1, amount=usd(3_000)),
            erp_pb2.CreditMemoLine(line_number=2, amount=usd(4_000))]))
    r = await desk.get(r.return_id)
    assert status(r) == "CREDITED" and (r.credit_memo_id, r.credited.amount_minor) == ("CM-1", 7_000)
    assert [(x.received_quantity, x.restocked_quantity, x.scrapped_quantity, x.credit.amount_minor)
            for x in r.lines] == [(3, 3, 0, 3_000), (2, 0, 2, 4_000)]
    assert steps(r) == ["requested", "authorization.requested", "rma.authorized", "expect.requested",
                        "expected", "received", "inspected", "credit.requested", "creditmemo.posted"]
    assert {e.source for e in r.timeline} == {"returns", "erp", "wms"}
    changes = [m.body.to_status for m in await outbox(desk.store, "returns.return.status_changed", take=True)]
    assert [pb.ReturnStatus.Name(s).removeprefix("RETURN_STATUS_") for s in changes] == [
        "AUTHORIZED", "EXPECTED", "RECEIVED", "INSPECTED", "CREDITED"]
    assert await outbox(desk.store) == []


async def test_a_partial_return_credits_only_what_was_accepted_and_says_why(desk):
    r = await authorized(desk, await desk.create((1, 3, DEFECTIVE), (2, 2, OTHER)))
    # 2 of the 3 units of line 1 came back, one restocked and one scrapped; line 2 refused.
    r = await inspected(desk, r, (1, 2, 1, 1, 0), (2, 2, 0, 0, 2))
    post = (await commands(desk))["cmd.erp.creditmemo.post"]
    assert [(x.line_number, x.sku, x.quantity) for x in post.accepted_lines] == [(1, "SKU-A", 2)]
    await desk.fact("erp.creditmemo.posted", credit_memo=erp_pb2.CreditMemo(
        credit_memo_id="CM-1", return_id=r.return_id, total=usd(2_000),
        lines=[erp_pb2.CreditMemoLine(line_number=1, amount=usd(2_000))]))
    r = await desk.get(r.return_id)
    assert status(r) == "PARTIALLY_CREDITED" and r.credited.amount_minor == 2_000
    assert r.status_reason == "2 of 5 unit(s) credited: 2 refused at inspection, 1 not sent back"


async def test_a_return_refused_at_inspection_credits_nothing_and_cancels_the_rma(desk):
    r = await authorized(desk, await desk.create((1, 2, OTHER)))
    r = await inspected(desk, r, (1, 2, 0, 0, 2))
    assert status(r) == "REFUSED" and r.status_reason == "every unit refused at inspection"
    sent = await commands(desk)
    assert set(sent) == {"cmd.erp.return.cancel"} and sent["cmd.erp.return.cancel"].return_id == r.return_id
    assert steps(r)[-2:] == ["inspected", "compensate"]


async def test_a_credit_memo_erp_refuses_after_inspection_is_compensated_and_nothing_credited(desk):
    r = await authorized(desk, await desk.create((1, 2, NOT_NEEDED)))
    r = await inspected(desk, r, (1, 2, 2, 0, 0))
    assert set(await commands(desk)) == {"cmd.erp.creditmemo.post"}
    await desk.fact("erp.creditmemo.refused", return_id=r.return_id, rma_number=r.rma_number,
                    reason_code="RMA_NOT_AUTHORIZED", reason="closed by the credit controller")
    r = await desk.get(r.return_id)
    assert status(r) == "REFUSED" and r.status_reason.startswith("credit refused by ERP: RMA_NOT_AUTHORIZED")
    assert r.credited.amount_minor == 0 and not r.credit_memo_id
    assert set(await commands(desk)) == {"cmd.erp.return.cancel"}
    assert steps(r)[-2:] == ["creditmemo.refused", "compensate"]


async def test_erp_refusing_the_authorisation_refuses_the_return_and_stops_its_timer(desk):
    r = await desk.create((1, 1, NOT_NEEDED))
    assert set(await commands(desk)) == {"cmd.erp.return.authorize"}
    await desk.fact("erp.return.refused", return_id=r.return_id, order_id=ORDER, reason_code="NOT_INVOICED",
                    reason="not invoiced yet")
    r = await desk.get(r.return_id)
    assert status(r) == "REFUSED" and r.status_reason == "NOT_INVOICED: not invoiced yet"
    assert not r.HasField("expire_time")
    assert await commands(desk) == {}  # nothing to compensate: no RMA was issued
