"""The ERP service on the Tryton backend, as real processes: trytond (gunicorn, a SQLite
copy of the prepared template), the ERP adapter, a real nats-server. Figures are read
through the ERP contract AND from Tryton's own records (JSON-RPC)."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from crossdock.admin.v1 import admin_pb2, admin_pb2_grpc
from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.erp.tryton.rpc import Tryton
from tests.helpers import eventually, publish, unique
from tests.tryton_support import start_tryton, tryton_env

pytestmark = pytest.mark.tryton


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


@pytest.fixture(scope="module")
def trytond(tmp_path_factory):
    server = start_tryton(tmp_path_factory.mktemp("tryton"))
    yield server
    server.stop()


@pytest.fixture
async def tryton(trytond):
    """Tryton's own records, read as its integration user would."""
    rpc = Tryton(trytond.url, "crossdock", "crossdock", "crossdock-erp")
    yield rpc
    await rpc.close()


@pytest.fixture
def start_erp(start_service, trytond):
    def start(**env):
        return start_service("erp", **tryton_env(trytond), CROSSDOCK_RETRY_BACKOFF="0.2",
                             CROSSDOCK_RETRY_BACKOFF_MAX="0.5", **env)
    return start


@pytest.fixture
async def erp(start_erp):
    proc = start_erp()
    channel = grpc.aio.insecure_channel(proc.addr)
    stub = erp_pb2_grpc.ErpServiceStub(channel)
    stub.proc = proc
    stub.admin = admin_pb2_grpc.DeadLetterServiceStub(channel)
    yield stub
    await channel.close()


async def world(erp, limit: int = 5_000) -> tuple[str, str]:
    cid, sku = unique("C"), unique("SKU")
    await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=erp_pb2.Customer(
        customer_id=cid, name="Tryton customer", currency_code="USD", credit_limit=usd(limit),
        ship_to=Address(name="T", line1="1 A St", city="X", postal_code="1", country_code="US"))))
    await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku=sku, description="Widget", uom="EA", unit_price=usd(1_000), weight_grams=700, active=True)))
    return cid, sku


def order(order_id: str, cid: str, sku: str, qty: int, price: int = 1_000) -> erp_msgs.CreateSalesOrder:
    return erp_msgs.CreateSalesOrder(sales_order=erp_pb2.SalesOrder(
        order_id=order_id, customer_id=cid,
        lines=[erp_pb2.SalesOrderLine(line_number=1, sku=sku, quantity=qty, unit_price=usd(price))]))


def outcome(log, order_id: str):
    return [(s, m) for s, m, _ in log.messages
            if s in ("erp.salesorder.accepted", "erp.salesorder.rejected")
            and (m.sales_order.order_id if s.endswith("accepted") else m.order_id) == order_id]


async def test_trytons_credit_rule_decides_and_each_shipment_is_invoiced_once(erp, nc, events, tryton):
    log = await events(["erp.>"])
    cid, sku = await world(erp, limit=5_000)  # 50.00
    ok, over = unique("ORD"), unique("ORD")
    await publish(nc, "cmd.erp.salesorder.create", order(ok, cid, sku, 3), key=ok)  # 30.00
    [(subject, accepted)] = await eventually(lambda: outcome(log, ok), timeout=60, what="accepted")
    assert subject == "erp.salesorder.accepted" and accepted.sales_order.total == usd(3_000)
    await publish(nc, "cmd.erp.salesorder.create", order(over, cid, sku, 3), key=over)  # 30 more > 50
    [(subject, rejected)] = await eventually(lambda: outcome(log, over), timeout=60, what="refused")
    assert (subject, rejected.reason_code) == ("erp.salesorder.rejected", "CREDIT_LIMIT_EXCEEDED")
    assert "will exceed their $50.00 credit limit" in rejected.reason  # Tryton's own message
    post = erp_msgs.PostInvoice(order_id=ok, shipment_id=f"SHP-{ok}", shipped_lines=[
        erp_pb2.SalesOrderLine(line_number=1, sku=sku, quantity=3)])
    await publish(nc, "cmd.erp.invoice.post", post, key=ok)
    await publish(nc, "cmd.erp.invoice.post", post, key=ok)  # a new message: the same invoice
    posted = await eventually(lambda: len(p := log.of("erp.invoice.posted")) == 2 and p, timeout=60,
                              what="two answers")
    assert posted[0].invoice == posted[1].invoice and posted[0].invoice.total == usd(3_000)
    customer = (await erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id=cid))).customer
    assert (customer.open_balance, customer.open_orders) == (usd(3_000), usd(0))
    so = (await erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=ok))).sales_order
    assert so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
    # Tryton's own books: one posted invoice for the shipment, the party's receivable.
    invoices = await tryton.search_read("account.invoice", [("reference", "=", f"SHP-{ok}")],
                                        ["state", "total_amount"])
    assert [(i["state"], i["total_amount"]) for i in invoices] == [("posted", Decimal("30.00"))]
    (party,) = await tryton.search_read("party.party", [("code", "=", cid)], ["receivable"])
    assert party["receivable"] == Decimal("30.00")
    sales = await tryton.search_read("sale.sale", [("reference", "in", [ok, over])], ["reference", "state"])
    assert sorted((s["reference"] == ok, s["state"]) for s in sales) == [(False, "cancelled"),
                                                                          (True, "processing")]


async def test_a_refused_posting_is_dead_lettered_with_the_reason_and_replayed_once_fixed(erp, nc, events):
    log = await events(["erp.salesorder.>"])
    cid, _ = await world(erp)
    missing, order_id = unique("SKU"), unique("ORD")
    await publish(nc, "cmd.erp.salesorder.create", order(order_id, cid, missing, 1), key=order_id)

    async def dead_letter():
        found = (await erp.admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(
            consumer="erp-commands"))).dead_letters
        return [d for d in found if missing in d.reason]
    (dead,) = await eventually(dead_letter, timeout=60, what="the dead letter")
    assert dead.permanent and f"Tryton has no product {missing}" in dead.reason
    assert not outcome(log, order_id)
    await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku=missing, uom="EA", unit_price=usd(1_000), active=True)))
    await erp.admin.ReplayDeadLetter(admin_pb2.ReplayDeadLetterRequest(dead_letter_id=dead.dead_letter_id))
    [(subject, _)] = await eventually(lambda: outcome(log, order_id), timeout=60,
                                      what="accepted after replay")
    assert subject == "erp.salesorder.accepted"


async def wait_exit(proc, timeout: float = 60) -> int:
    await eventually(lambda: not proc.alive, timeout=timeout, what=f"{proc.name} to crash at the point")
    return proc.proc.returncode


@pytest.mark.parametrize("posting", ["sales order", "invoice", "inventory movement"])
async def test_killed_between_trytons_commit_and_the_ack_it_leaves_exactly_one_document(
        start_erp, nc, events, tryton, posting):
    """The adapter dies after Tryton committed and before the message is acked; the
    redelivered message finds the document by its business key: exactly one."""
    proc = start_erp()
    log = await events(["erp.>"])
    channel = grpc.aio.insecure_channel(proc.addr)
    erp = erp_pb2_grpc.ErpServiceStub(channel)
    try:
        cid, sku = await world(erp, limit=1_000_000)
        order_id = unique("ORD")
        if posting != "sales order":
            await publish(nc, "cmd.erp.salesorder.create", order(order_id, cid, sku, 2), key=order_id)
            await eventually(lambda: outcome(log, order_id), timeout=60, what="accepted")
        proc.stop()
        proc.env["CROSSDOCK_CRASH_POINTS"] = "tryton_committed_before_ack:1"
        proc.start()
        proc.wait_healthy()
        key = unique("MV")
        if posting == "sales order":
            await publish(nc, "cmd.erp.salesorder.create", order(order_id, cid, sku, 2), key=order_id)
        elif posting == "invoice":
            await publish(nc, "cmd.erp.invoice.post", erp_msgs.PostInvoice(
                order_id=order_id, shipment_id=f"SHP-{order_id}", shipped_lines=[
                    erp_pb2.SalesOrderLine(line_number=1, sku=sku, quantity=2)]), key=order_id)
        else:
            key = await publish(nc, "wms.inventory.adjusted", wms_msgs.InventoryAdjusted(
                sku=sku, warehouse_id="WH-T", delta=7, on_hand_after=7, sequence=1,
                reason=wms_msgs.MOVEMENT_REASON_RECEIPT))
        assert await wait_exit(proc) != 0
        proc.env.pop("CROSSDOCK_CRASH_POINTS")
        proc.start()
        proc.wait_healthy()
        if posting == "sales order":
            await eventually(lambda: outcome(log, order_id), timeout=60, what="accepted after the restart")
            sales = await tryton.search_read("sale.sale", [("reference", "=", order_id)], ["state"])
            assert [s["state"] for s in sales] == ["processing"]
        elif posting == "invoice":
            await eventually(
                lambda: [m for m in log.of("erp.invoice.posted") if m.invoice.order_id == order_id],
                timeout=60, what="invoiced after the restart")
            invoices = await tryton.search_read("account.invoice", [("reference", "=", f"SHP-{order_id}")],
                                                ["state"])
            assert [i["state"] for i in invoices] == ["posted"]
        else:
            async def position():
                ps = (await erp.ListLedgerPositions(erp_pb2.ListLedgerPositionsRequest(
                    warehouse_id="WH-T", page_size=500))).positions
                return [p for p in ps if p.sku == sku]
            (pos,) = await eventually(position, timeout=60, what="the ledger position")
            assert (pos.on_hand, pos.last_sequence) == (7, 1)
            bookings = await tryton.search_read("crossdock.booking", [("key", "=", f"mv:{key}")],
                                                ["inventory"])
            assert len(bookings) == 1
    finally:
        await channel.close()


async def test_changes_made_in_tryton_reach_the_mesh_as_erp_events(erp, events, trytond, tryton):
    log = await events(["erp.item.upserted", "erp.customer.upserted"])
    cid, sku = await world(erp)
    await eventually(lambda: [e for e in log.of("erp.item.upserted") if e.item.sku == sku], timeout=30,
                     what="the item's first event")
    # A person changes the price in the Tryton client, and the credit manager a limit.
    (product,) = await tryton.search_read("product.product", [("code", "=", sku)], ["template"])
    await tryton.model("product.template", "write", [product["template"]], {"list_price": Decimal("12.50")})
    credit = Tryton(trytond.url, "crossdock", "crossdock-credit", "crossdock-erp")
    try:
        (party,) = await credit.search_read("party.party", [("code", "=", cid)], ["id"])
        await credit.model("party.party", "write", [party["id"]], {"credit_limit_amount": Decimal("99.00")})
    finally:
        await credit.close()

    def changed(subject, key, field):
        return [e for e in log.of(subject) if key(e) and field in e.changed_fields]
    (price,) = await eventually(
        lambda: changed("erp.item.upserted", lambda e: e.item.sku == sku, "unit_price"),
        timeout=30, what="the price change")
    assert price.item.unit_price == usd(1_250)
    (limit,) = await eventually(
        lambda: changed("erp.customer.upserted", lambda e: e.customer.customer_id == cid, "credit_limit"),
        timeout=30, what="the credit-limit change")
    assert limit.customer.credit_limit == usd(9_900)
    revisions = [e.revision for e in log.of("erp.item.upserted") if e.item.sku == sku]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
