"""ERP as a real process: return authorisations, credit memos and the settlement export
(server streaming) against a real nats-server and SQLite; the rules themselves are
use cases (tests/usecases/test_erp_returns.py, test_erp_ledger.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from tests.helpers import eventually, publish, unique


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


@pytest.fixture
async def erp(start_service):
    proc = start_service("erp", CROSSDOCK_RETRY_BACKOFF="0.2", CROSSDOCK_RETRY_BACKOFF_MAX="0.5")
    channel = grpc.aio.insecure_channel(proc.addr)
    yield erp_pb2_grpc.ErpServiceStub(channel)
    await channel.close()


@pytest.fixture
def db(data_dir):
    def query(sql: str, *args):
        with sqlite3.connect(data_dir / "erp.db") as conn:
            return conn.execute(sql, args).fetchall()
    return query


async def invoiced_order(erp, nc, *, customer_id: str, lines: list[tuple[str, int, int]],
                         invoice: bool = True) -> str:
    """A sales order of (sku, qty, price) lines for the customer, invoiced in full."""
    order_id = unique("ORD")
    so = erp_pb2.SalesOrder(order_id=order_id, customer_id=customer_id, lines=[
        erp_pb2.SalesOrderLine(line_number=n, sku=sku, quantity=q, unit_price=usd(p))
        for n, (sku, q, p) in enumerate(lines, 1)])
    await publish(nc, "cmd.erp.salesorder.create", erp_msgs.CreateSalesOrder(sales_order=so), key=order_id)
    if invoice:
        await post_invoice(nc, order_id, [(n, sku, q) for n, (sku, q, _) in enumerate(lines, 1)])

        async def invoiced():
            try:
                so = (await erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=order_id))).sales_order
            except grpc.aio.AioRpcError:
                return False  # not created yet
            return so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
        await eventually(invoiced, what="order invoiced")
    return order_id


async def post_invoice(nc, order_id: str, lines: list[tuple[int, str, int]]) -> None:
    await publish(nc, "cmd.erp.invoice.post", erp_msgs.PostInvoice(
        order_id=order_id, shipment_id=f"SHP-{order_id}", shipped_lines=[
            erp_pb2.SalesOrderLine(line_number=n, sku=s, quantity=q) for n, s, q in lines]), key=order_id)


async def authorize(nc, return_id: str, order_id: str, *lines: tuple[int, str, int]) -> None:
    await publish(nc, "cmd.erp.return.authorize", erp_msgs.AuthorizeReturn(
        return_id=return_id, order_id=order_id, lines=[
            erp_pb2.ReturnAuthorizationLine(line_number=n, sku=s, quantity=q) for n, s, q in lines]),
        key=return_id)


async def credit(nc, return_id: str, rma: str, *lines: tuple[int, str, int]) -> None:
    await publish(nc, "cmd.erp.creditmemo.post", erp_msgs.PostCreditMemo(
        return_id=return_id, rma_number=rma, accepted_lines=[
            erp_pb2.CreditMemoLine(line_number=n, sku=s, quantity=q) for n, s, q in lines]), key=return_id)


def of_return(log, subject: str, return_id: str) -> list:
    def rid(m):
        for path in ("authorization", "credit_memo"):
            if m.DESCRIPTOR.fields_by_name.get(path):
                return getattr(m, path).return_id
        return m.return_id
    return [m for m in log.of(subject) if rid(m) == return_id]


async def customer(erp, limit: int = 1_000_000) -> str:
    cid = unique("C")
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=erp_pb2.Customer(
        customer_id=cid, name=cid, currency_code="USD", credit_limit=usd(limit),
        ship_to=Address(country_code="US"))))
    return cid


async def test_a_return_is_authorised_and_credited_over_jetstream_once(erp, nc, events, db):
    log = await events(["erp.>"])
    cid = await customer(erp)
    order_id = await invoiced_order(erp, nc, customer_id=cid, lines=[("SKU-R1", 3, 500), ("SKU-R2", 2, 1000)])
    await authorize(nc, "RET-A", order_id, (1, "SKU-R1", 2), (2, "SKU-R2", 2))
    (auth,) = await eventually(lambda: of_return(log, "erp.return.authorized", "RET-A"), what="RMA")
    a = auth.authorization
    assert (a.rma_number, a.expected_credit.amount_minor) == (f"RMA-{order_id}-1", 3000)
    await credit(nc, "RET-A", a.rma_number, (1, "SKU-R1", 1), (2, "SKU-R2", 2))
    await credit(nc, "RET-A", a.rma_number, (1, "SKU-R1", 2))  # a repeat: the same memo again
    posted = await eventually(lambda: len(p := of_return(log, "erp.creditmemo.posted", "RET-A")) == 2 and p,
                              what="two answers")
    assert posted[0].credit_memo == posted[1].credit_memo and posted[0].credit_memo.total.amount_minor == 2500
    assert db("SELECT count(*) FROM credit_memos WHERE order_id = ?", order_id) == [(1,)]
    rma = (await erp.GetReturnAuthorization(erp_pb2.GetReturnAuthorizationRequest(
        rma_number=a.rma_number))).return_authorization
    assert rma.status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CREDITED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.GetReturnAuthorization(erp_pb2.GetReturnAuthorizationRequest(rma_number="RMA-NOPE"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_return_of_a_shipped_order_waits_for_its_invoice(erp, nc, events):
    log = await events(["erp.return.>"])
    cid = await customer(erp)
    order_id = await invoiced_order(erp, nc, customer_id=cid, lines=[("SKU-W", 2, 300)], invoice=False)
    await authorize(nc, "RET-W", order_id, (1, "SKU-W", 1))
    # Retried, not refused, until the shipment's invoice is posted.
    await post_invoice(nc, order_id, [(1, "SKU-W", 2)])
    (auth,) = await eventually(lambda: of_return(log, "erp.return.authorized", "RET-W"), what="RMA")
    assert auth.authorization.expected_credit.amount_minor == 300
    assert not of_return(log, "erp.return.refused", "RET-W")
    # A cancel that arrives before the authorisation leaves a tombstone.
    await publish(nc, "cmd.erp.return.cancel", erp_msgs.CancelReturnAuthorization(return_id="RET-X"))
    await eventually(lambda: of_return(log, "erp.return.cancelled", "RET-X"), what="tombstone")
    await authorize(nc, "RET-X", order_id, (1, "SKU-W", 1))
    await eventually(lambda: len(of_return(log, "erp.return.cancelled", "RET-X")) == 2, what="cancel again")
    assert not of_return(log, "erp.return.authorized", "RET-X")


def ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


async def test_settlement_export_streams_one_snapshot_whose_totals_match(erp, nc, events):
    log = await events(["erp.return.authorized", "erp.creditmemo.posted"])
    start = datetime.now(UTC) - timedelta(seconds=1)
    cid = await customer(erp)
    orders = [await invoiced_order(erp, nc, customer_id=cid, lines=[("SKU-S", 1 + i, 250)]) for i in range(3)]
    await authorize(nc, "RET-S", orders[2], (1, "SKU-S", 2))
    await eventually(lambda: of_return(log, "erp.return.authorized", "RET-S"), what="RMA")
    await credit(nc, "RET-S", f"RMA-{orders[2]}-1", (1, "SKU-S", 2))
    await eventually(lambda: of_return(log, "erp.creditmemo.posted", "RET-S"), what="memo")
    end = datetime.now(UTC) + timedelta(seconds=1)

    chunks = [c async for c in erp.ExportSettlement(erp_pb2.ExportSettlementRequest(
        start_time=ts(start), end_time=ts(end)))]
    (totals,) = chunks[0].totals
    assert chunks[0].record_count == 4 and not chunks[0].records
    records = [r for c in chunks[1:] for r in c.records]
    kinds = [erp_pb2.SettlementDocumentType.Name(r.document_type) for r in records]
    assert kinds == ["SETTLEMENT_DOCUMENT_TYPE_INVOICE"] * 3 + ["SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO"]
    assert (totals.currency_code, totals.invoice_count, totals.invoiced_minor, totals.credit_memo_count,
            totals.credited_minor, totals.net_minor) == ("USD", 3, 1500, 1, 500, 1000)
    own = (await erp.GetSettlementTotals(erp_pb2.GetSettlementTotalsRequest(
        start_time=ts(start), end_time=ts(end)))).totals
    assert list(own) == [totals]
    assert records[-1].reference == f"RMA-{orders[2]}-1" and records[0].reference == f"SHP-{orders[0]}"
    # An empty period, and a bad one.
    empty = [c async for c in erp.ExportSettlement(erp_pb2.ExportSettlementRequest(
        start_time=ts(start - timedelta(days=2)), end_time=ts(start - timedelta(days=1))))]
    assert len(empty) == 1 and empty[0].record_count == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in erp.ExportSettlement(
                erp_pb2.ExportSettlementRequest(start_time=ts(end), end_time=ts(start))):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "end_time" in info.value.details()
