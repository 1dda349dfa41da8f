"""ERP as a real process against a real nats-server and SQLite store: what the process
adds to the use cases (tests/usecases/test_erp_*.py) — commands and events over
JetStream, gRPC answers with google.rpc details, a refused command dead-lettered, a
burst handled set-based by the consumer."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.mesh.errors import status_details
from tests.helpers import eventually, publish, unique


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


def customer(cid: str, limit: int, **kw) -> erp_pb2.Customer:
    return erp_pb2.Customer(customer_id=cid, name=cid, currency_code="USD", credit_limit=usd(limit),
                            ship_to=Address(name=cid, country_code="US"), **kw)


def sales_order(order_id: str, customer_id: str, *lines: tuple[str, int, int]) -> erp_pb2.SalesOrder:
    return erp_pb2.SalesOrder(order_id=order_id, customer_id=customer_id, lines=[
        erp_pb2.SalesOrderLine(line_number=n, sku=sku, quantity=qty, unit_price=usd(price))
        for n, (sku, qty, price) in enumerate(lines, 1)])


def detail(err: grpc.aio.AioRpcError, kind):
    found = kind()
    assert any(d.Unpack(found) for d in status_details(err).details), f"no {kind.__name__}"
    return found


@pytest.fixture
async def erp(start_service):
    proc = start_service("erp")
    channel = grpc.aio.insecure_channel(proc.addr)
    stub = erp_pb2_grpc.ErpServiceStub(channel)
    stub.proc = proc
    yield stub
    await channel.close()


@pytest.fixture
def db(data_dir):
    def query(sql: str, *args):
        with sqlite3.connect(data_dir / "erp.db") as conn:
            return conn.execute(sql, args).fetchall()

    return query


async def create(nc, so: erp_pb2.SalesOrder) -> str:
    return await publish(nc, "cmd.erp.salesorder.create", erp_msgs.CreateSalesOrder(sales_order=so),
                         key=so.order_id)


def outcomes(log, order_id: str) -> list[tuple[str, object]]:
    return [(s, m) for s, m, _ in log.messages
            if s in ("erp.salesorder.accepted", "erp.salesorder.rejected")
            and (m.sales_order.order_id if s.endswith("accepted") else m.order_id) == order_id]


async def test_upserts_publish_master_data_and_lookups_follow(erp, events):
    log = await events(["erp.>"])
    item = erp_pb2.Item(sku="SKU-1", description="Widget", uom="EA", unit_price=usd(250),
                        weight_grams=400, active=True)
    assert (await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=item))).item == item
    await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku="SKU-2", uom="BOX", unit_price=usd(0))))
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=customer("C-1", 5_000)))

    published = await eventually(lambda: [m.item for m in log.of("erp.item.upserted")
                                          if m.item.sku == "SKU-1"], what="item event")
    assert published == [item]
    await eventually(lambda: log.of("erp.customer.upserted"), what="customer event")

    assert (await erp.GetItem(erp_pb2.GetItemRequest(sku="SKU-1"))).item == item
    batch = await erp.BatchGetItems(erp_pb2.BatchGetItemsRequest(skus=["SKU-2", "NOPE", "SKU-1"]))
    assert [i.sku for i in batch.items] == ["SKU-2", "SKU-1"]
    got = (await erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id="C-1"))).customer
    assert (got.credit_limit, got.open_orders, got.ship_to.country_code) == (usd(5_000), usd(0), "US")


async def test_credit_accepts_within_the_limit_and_refuses_over_it(erp, nc, events):
    log = await events(["erp.>"])
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=customer("C-1", 10_000)))
    o1, o2, o3 = unique("O"), unique("O"), unique("O")
    await create(nc, sales_order(o1, "C-1", ("A", 2, 2_000), ("B", 1, 2_000)))  # 6 000
    [(subject, accepted)] = await eventually(lambda: outcomes(log, o1), what="o1 outcome")
    assert subject == "erp.salesorder.accepted"
    assert accepted.sales_order.total == usd(6_000)
    assert accepted.sales_order.status == erp_pb2.SALES_ORDER_STATUS_ACCEPTED

    def check(amount):
        return erp.CheckCredit(erp_pb2.CheckCreditRequest(customer_id="C-1", amount=usd(amount)))

    refused, approved = await check(4_001), await check(4_000)
    assert (refused.approved, refused.available_credit, approved.approved) == (False, usd(4_000), True)
    assert "4001" in refused.reason

    await create(nc, sales_order(o2, "C-1", ("A", 5, 1_000)))  # 5 000 > 4 000 available
    await create(nc, sales_order(o3, "NOBODY", ("A", 1, 1)))
    [(subject, rejected)] = await eventually(lambda: outcomes(log, o2), what="o2 outcome")
    assert (subject, rejected.reason_code) == ("erp.salesorder.rejected", "CREDIT_LIMIT_EXCEEDED")
    [(_, unknown)] = await eventually(lambda: outcomes(log, o3), what="o3 outcome")
    assert unknown.reason_code == "UNKNOWN_CUSTOMER"
    got = await erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=o2))
    assert got.sales_order.status == erp_pb2.SALES_ORDER_STATUS_REJECTED

    await publish(nc, "cmd.erp.salesorder.cancel", erp_msgs.CancelSalesOrder(order_id=o1, reason="x"))
    await eventually(lambda: [m for m in log.of("erp.salesorder.cancelled") if m.order_id == o1],
                     what="cancelled")
    released = (await erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id="C-1"))).customer
    assert released.open_orders == usd(0)


async def test_invoice_is_posted_once_per_shipment(erp, nc, events, db):
    log = await events(["erp.>"])
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=customer("C-1", 10_000)))
    order_id = unique("O")
    await create(nc, sales_order(order_id, "C-1", ("A", 2, 1_500), ("B", 1, 500)))  # 3 500
    await eventually(lambda: outcomes(log, order_id), what="accepted")

    post = erp_msgs.PostInvoice(order_id=order_id, shipment_id="SHP-1", shipped_lines=[
        erp_pb2.SalesOrderLine(line_number=1, sku="A", quantity=2),
        erp_pb2.SalesOrderLine(line_number=2, sku="B", quantity=1)])
    await publish(nc, "cmd.erp.invoice.post", post, key=order_id)
    await publish(nc, "cmd.erp.invoice.post", post, key=order_id)  # a different event id

    posted = await eventually(lambda: p if len(p := log.of("erp.invoice.posted")) == 2 else None,
                              what="two posted answers")
    assert posted[0].invoice == posted[1].invoice
    invoice = posted[0].invoice
    assert (invoice.invoice_id, invoice.total) == (f"INV-{order_id}-1", usd(3_500))
    assert [(x.sku, x.quantity, x.amount.amount_minor) for x in invoice.lines] == [
        ("A", 2, 3_000), ("B", 1, 500)]
    assert db("SELECT count(*) FROM invoices WHERE shipment_id = 'SHP-1'") == [(1,)]

    # Balances are ERP's own: an upsert cannot overwrite them.
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(
        customer=customer("C-1", 10_000, open_balance=usd(0))))
    got = (await erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id="C-1"))).customer
    assert (got.open_balance, got.open_orders) == (usd(3_500), usd(0))
    so = (await erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=order_id))).sales_order
    assert so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
    listed = await erp.ListInvoices(erp_pb2.ListInvoicesRequest(order_id=order_id))
    assert list(listed.invoices) == [invoice]


async def test_shipping_more_than_ordered_is_refused(erp, nc, events, db):
    log = await events(["erp.>"])
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=customer("C-1", 10_000)))
    order_id = unique("O")
    await create(nc, sales_order(order_id, "C-1", ("A", 2, 100)))
    await eventually(lambda: outcomes(log, order_id), what="accepted")

    def post(shipment_id, qty):
        return publish(nc, "cmd.erp.invoice.post", erp_msgs.PostInvoice(
            order_id=order_id, shipment_id=shipment_id,
            shipped_lines=[erp_pb2.SalesOrderLine(line_number=1, sku="A", quantity=qty)]))

    await post("SHP-OVER", 3)
    await post("SHP-OK", 2)  # handled after the refused one
    await eventually(lambda: log.of("erp.invoice.posted"), what="the valid invoice")
    assert db("SELECT shipment_id, total_minor FROM invoices") == [("SHP-OK", 200)]
    assert "SHP-OVER" in erp.proc.log_path.read_text()


async def test_a_burst_of_movements_is_applied_once_each_even_with_a_bad_one_among_them(erp, nc, db):
    """Many movements arrive together (a receiving window): ERP applies them set-based; a
    duplicate changes nothing, and one it cannot take falls back to one-by-one handling,
    which dead-letters only that one."""
    def moved(sku, seq, after, event_id=None):
        return publish(nc, "wms.inventory.adjusted", wms_msgs.InventoryAdjusted(
            sku=sku, warehouse_id="WH-B", delta=1, on_hand_after=after, sequence=seq,
            reason=wms_msgs.MOVEMENT_REASON_RECEIPT, reference="burst"), event_id=event_id)

    ids = await asyncio.gather(*(moved(f"B-{i % 50}", i // 50 + 1, i // 50 + 1) for i in range(300)))
    await moved("B-0", 1, 1, event_id=ids[0])  # the same message again
    bad = await moved("B-BAD", 0, 1)  # sequence 0: refused
    ids += await asyncio.gather(*(moved(f"B-{i}", 7, 7) for i in range(50)))
    await eventually(lambda: db("SELECT count(*) FROM inbox "
                                f"WHERE message_id IN ({','.join('?' * len(ids))})",
                                *ids) == [(350,)], what="every movement handled", timeout=60)
    resp = await erp.ListLedgerPositions(
        erp_pb2.ListLedgerPositionsRequest(warehouse_id="WH-B", page_size=100))
    assert ({(p.sku, p.on_hand, p.last_sequence) for p in resp.positions}
            == {(f"B-{i}", 7, 7) for i in range(50)})
    assert db("SELECT count(*) FROM ledger_entries WHERE warehouse_id = 'WH-B'") == [(350,)]
    assert db("SELECT count(*) FROM inbox WHERE message_id = ?", bad) == [(0,)]


async def test_errors_carry_google_rpc_details(erp):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id="NOPE"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert detail(info.value, error_details_pb2.ResourceInfo).resource_name == "NOPE"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id="NOPE"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    bad = erp_pb2.Customer(currency_code="usd", ship_to=Address(country_code="USA"),
                           credit_limit=Money(currency_code="EUR", amount_minor=-1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in detail(info.value, error_details_pb2.BadRequest).field_violations} == {
        "customer.customer_id", "customer.currency_code", "customer.credit_limit",
        "customer.credit_limit.currency_code", "customer.ship_to.country_code"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
            sku="S", unit_price=Money(currency_code="EURO", amount_minor=-5), weight_grams=-1)))
    assert {v.field for v in detail(info.value, error_details_pb2.BadRequest).field_violations} == {
        "item.uom", "item.unit_price.currency_code", "item.unit_price", "item.weight_grams"}

    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=customer("C-1", 100)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.CheckCredit(erp_pb2.CheckCreditRequest(
            customer_id="C-1", amount=Money(currency_code="EUR", amount_minor=1)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await erp.CheckCredit(erp_pb2.CheckCreditRequest(customer_id="NOPE", amount=usd(1)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
