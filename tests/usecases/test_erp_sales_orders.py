"""ERP sales orders and invoices, use case by use case (built-in backend, real SQLite,
the outbox as the bus): credit decides acceptance, a repeat gets the same answer,
cancellations release credit, one invoice per shipment at the order's prices."""

from __future__ import annotations

import pytest

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.bus import PermanentError
from tests.usecases.erp_support import builtin_erp, customer, sales_order, shipped, usd


@pytest.fixture
async def erp(usecase_store):
    erp = await builtin_erp(usecase_store)
    await erp.backend.master_data.upsert_customer(customer("C-1", 10_000))
    return erp


def outcome(published, order_id: str):
    (m,) = [p for p in published if p.subject in ("erp.salesorder.accepted", "erp.salesorder.rejected")
            and (p.body.sales_order.order_id if p.subject.endswith("accepted")
                 else p.body.order_id) == order_id]
    return m.subject, m.body


async def test_an_order_within_credit_is_accepted_and_reserves_its_total(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 2, 2_000), ("B", 1, 2_000)))
    subject, accepted = outcome(await outbox(erp.store), "O1")
    assert subject == "erp.salesorder.accepted"
    assert ((accepted.sales_order.total, accepted.sales_order.status)
            == (usd(6_000), erp_pb2.SALES_ORDER_STATUS_ACCEPTED))
    c = await erp.backend.master_data.get_customer("C-1")
    assert c.open_orders == usd(6_000)
    refused = await erp.backend.master_data.check_credit("C-1", usd(4_001))
    approved = await erp.backend.master_data.check_credit("C-1", usd(4_000))
    assert (refused.approved, refused.available_credit, approved.approved) == (False, usd(4_000), True)
    assert "4001" in refused.reason


@pytest.mark.parametrize("so, code", [
    (sales_order("O2", "C-1", ("A", 11, 1_000)), "CREDIT_LIMIT_EXCEEDED"),
    (sales_order("O3", "NOBODY", ("A", 1, 1)), "UNKNOWN_CUSTOMER"),
    (sales_order("O4", "C-1", ("A", 0, 1)), "INVALID_ORDER"),
    (erp_pb2.SalesOrder(order_id="O5", customer_id="C-1", lines=[erp_pb2.SalesOrderLine(
        line_number=1, sku="A", quantity=1, unit_price=Money(currency_code="EUR", amount_minor=1))]),
     "CURRENCY_MISMATCH"),
])
async def test_an_order_is_rejected_with_a_stable_code_and_reserves_nothing(erp, outbox, so, code):
    await erp.create(so)
    subject, rejected = outcome(await outbox(erp.store), so.order_id)
    assert (subject, rejected.reason_code) == ("erp.salesorder.rejected", code)
    assert (await erp.backend.sales_orders.get(so.order_id)).status == erp_pb2.SALES_ORDER_STATUS_REJECTED
    assert (await erp.backend.master_data.get_customer("C-1")).open_orders == usd(0)


async def test_a_blocked_customer_is_refused(erp, outbox):
    await erp.backend.master_data.upsert_customer(customer("C-1", 10_000, blocked=True))
    await erp.create(sales_order("O1", "C-1", ("A", 1, 1)))
    assert outcome(await outbox(erp.store), "O1")[1].reason_code == "CUSTOMER_BLOCKED"


async def test_a_repeated_create_gives_one_order_and_the_same_answer(erp, outbox):
    so = sales_order("O1", "C-1", ("A", 3, 1_000))
    await erp.create(so)
    await erp.create(so)  # a second, distinct command (a new event id)
    answers = [p for p in await outbox(erp.store, "erp.salesorder")]
    assert [a.subject for a in answers] == ["erp.salesorder.accepted"] * 2
    assert answers[0].body == answers[1].body
    assert (await erp.backend.master_data.get_customer("C-1")).open_orders == usd(3_000)


async def test_cancelling_an_accepted_order_releases_its_credit_and_repeats_answer_alike(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 2, 1_000)))
    for _ in range(2):
        await erp.send(erp.backend.sales_orders.cancel, msgs.CancelSalesOrder(order_id="O1", reason="x"))
    cancelled = [p.body for p in await outbox(erp.store, "erp.salesorder.cancelled")]
    assert [(c.order_id, c.reason) for c in cancelled] == [("O1", "x"), ("O1", "x")]
    assert (await erp.backend.sales_orders.get("O1")).status == erp_pb2.SALES_ORDER_STATUS_CANCELLED
    assert (await erp.backend.master_data.get_customer("C-1")).open_orders == usd(0)


async def test_an_invoiced_order_is_not_cancelled(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 1, 500)))
    await erp.invoice(shipped("O1", "SHP-1", (1, "A", 1)))
    await erp.send(erp.backend.sales_orders.cancel, msgs.CancelSalesOrder(order_id="O1", reason="late"))
    assert await outbox(erp.store, "erp.salesorder.cancelled") == []
    assert (await erp.backend.sales_orders.get("O1")).status == erp_pb2.SALES_ORDER_STATUS_INVOICED


async def test_one_invoice_per_shipment_at_the_order_prices_moving_open_orders_to_the_balance(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 2, 1_500), ("B", 1, 500)))
    post = shipped("O1", "SHP-1", (1, "A", 2), (2, "B", 1))
    await erp.invoice(post)
    await erp.invoice(post)  # a redelivered command: the same invoice again
    posted = [p.body.invoice for p in await outbox(erp.store, "erp.invoice.posted")]
    assert posted[0] == posted[1]
    assert (posted[0].invoice_id, posted[0].total) == ("INV-O1-1", usd(3_500))
    assert ([(x.sku, x.quantity, x.amount.amount_minor) for x in posted[0].lines]
            == [("A", 2, 3_000), ("B", 1, 500)])
    invoices, _ = await erp.backend.invoicing.list(10, "", "O1")
    assert invoices == [posted[0]]
    # Balances are the ERP's own: an upsert cannot overwrite them.
    await erp.backend.master_data.upsert_customer(customer("C-1", 10_000, open_balance=usd(0)))
    c = await erp.backend.master_data.get_customer("C-1")
    assert (c.open_balance, c.open_orders) == (usd(3_500), usd(0))
    assert (await erp.backend.sales_orders.get("O1")).status == erp_pb2.SALES_ORDER_STATUS_INVOICED


async def test_shipping_more_than_is_open_is_a_permanent_error_that_writes_nothing(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 2, 100)))
    with pytest.raises(PermanentError, match="SHP-OVER.*shipped 3, ordered 2"):
        await erp.invoice(shipped("O1", "SHP-OVER", (1, "A", 3)))
    with pytest.raises(PermanentError, match="unknown"):
        await erp.invoice(shipped("NOPE", "SHP-X", (1, "A", 1)))
    await erp.invoice(shipped("O1", "SHP-OK", (1, "A", 2)))
    invoices, _ = await erp.backend.invoicing.list(10, "", "")
    assert [(i.shipment_id, i.total.amount_minor) for i in invoices] == [("SHP-OK", 200)]


async def test_partial_shipments_and_cancelled_lines_close_the_order_when_nothing_is_open(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("A", 6, 100), ("B", 2, 1_000)))
    await erp.invoice(shipped("O1", "SHP-1", (1, "A", 4)))
    so = await erp.backend.sales_orders.get("O1")
    assert so.status == erp_pb2.SALES_ORDER_STATUS_ACCEPTED
    # The two missing A and one damaged B are cancelled (an exception decision); asking
    # for more A than is open cancels only what is open.
    cancel = msgs.CancelSalesOrderLines(order_id="O1", reason="short pick", lines=[
        erp_pb2.SalesOrderLine(line_number=1, sku="A", quantity=5),
        erp_pb2.SalesOrderLine(line_number=2, sku="B", quantity=1)])
    await erp.send(erp.backend.sales_orders.cancel_lines, cancel)
    (event,) = [p.body for p in await outbox(erp.store, "erp.salesorder.lines_cancelled")]
    assert [(x.cancelled_quantity, x.quantity) for x in event.sales_order.lines] == [(2, 6), (1, 2)]
    assert (await erp.backend.master_data.get_customer("C-1")).open_orders == usd(1_000)
    await erp.invoice(shipped("O1", "SHP-2", (2, "B", 1)))
    so = await erp.backend.sales_orders.get("O1")
    assert so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
    assert [(x.invoiced_quantity, x.cancelled_quantity) for x in so.lines] == [(4, 2), (1, 1)]
    c = await erp.backend.master_data.get_customer("C-1")
    assert (c.open_balance, c.open_orders) == (usd(1_400), usd(0))
    with pytest.raises(PermanentError, match="INVOICED"):
        await erp.send(erp.backend.sales_orders.cancel_lines, cancel)


async def test_cancelling_a_line_the_order_does_not_have_is_a_permanent_error(erp):
    await erp.create(sales_order("O1", "C-1", ("A", 1, 100)))
    with pytest.raises(PermanentError, match="line 9"):
        await erp.send(erp.backend.sales_orders.cancel_lines, msgs.CancelSalesOrderLines(
            order_id="O1", lines=[erp_pb2.SalesOrderLine(line_number=9, sku="Z", quantity=1)]))
