"""The mesh on the Tryton ERP backend, end to end: every service a process, trytond
under gunicorn on a copy of the prepared template, real nats-server. The scenarios and
assertions of the built-in ERP's end-to-end tests (imported from their modules, so they
are the same functions), on a handful of orders each; ERP-side figures read through the
ERP contract and checked against Tryton's own records."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crossdock.erp.v1 import erp_pb2
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import make_world, start_tryton_mesh, tryton_books
from tests.e2e.test_order_to_ship import (  # noqa: F401  (the same tests, on this module's mesh)
    check_books,
    random_orders,
    submit_all,
    test_cancel_a_backordered_order_compensates,
    test_credit_refusal_rejects_with_reason_and_touches_no_stock,
    test_shortage_backorders_then_a_receipt_releases_it,
    test_shortage_under_cancel_policy_cancels_and_releases_credit,
    wait_all,
)
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.tryton]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_tryton_mesh(tmp_path_factory)
    yield m
    m.stop()


@pytest.fixture
async def books(mesh):
    rpc = await tryton_books(mesh)
    yield rpc
    await rpc.close()


async def test_a_handful_of_orders_shipped_and_invoiced_once_in_trytons_books(stubs, books):
    world = await make_world(stubs, n_skus=2)
    order_ids = await submit_all(stubs, random_orders(world, 5, seed=3), concurrency=4)
    orders = await wait_all(stubs, order_ids, timeout=240)
    await check_books(stubs, world, orders)  # the built-in ERP's assertions, through the contract
    # ... and Tryton's own records agree: one posted invoice per shipment, for the order's
    # total; the party's receivable is the customer's open balance; the warehouse's stock
    # is the ledger's.
    for o in orders.values():
        invoices = await books.search_read("account.invoice", [("reference", "=", f"SHP-{o.order_id}")],
                                           ["state", "total_amount"])
        assert [(i["state"], i["total_amount"]) for i in invoices] == [
            ("posted", Decimal(o.total.amount_minor) / 100)]
    (party,) = await books.search_read("party.party", [("code", "=", world.customer_id)], ["receivable"])
    assert party["receivable"] * 100 == sum(o.total.amount_minor for o in orders.values())
    (wh,) = await books.search_read("stock.location", [("code", "=", world.warehouse_id)], ["id"])
    stock = {p["code"]: int(p["quantity"]) for p in await books.search_read(
        "product.product", [("code", "in", world.skus)], ["code", "quantity"], context={"locations": [wh["id"]]})}
    wms = {p.sku: p.on_hand for p in (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=world.skus, warehouse_id=world.warehouse_id))).positions}
    assert stock == wms


async def test_the_settlement_totals_are_trytons_invoices(stubs, books):
    from datetime import UTC, datetime, timedelta

    from google.protobuf.timestamp_pb2 import Timestamp

    start = datetime.now(UTC) - timedelta(seconds=2)
    world = await make_world(stubs, n_skus=1)
    order_ids = await submit_all(stubs, random_orders(world, 2, seed=5))
    orders = await wait_all(stubs, order_ids, timeout=180)
    end = datetime.now(UTC) + timedelta(seconds=2)
    t0, t1 = Timestamp(), Timestamp()
    t0.FromDatetime(start)
    t1.FromDatetime(end)
    chunks = [c async for c in stubs.erp.ExportSettlement(erp_pb2.ExportSettlementRequest(
        start_time=t0, end_time=t1))]
    records = [r for c in chunks[1:] for r in c.records if r.customer_id == world.customer_id]
    assert sorted(r.order_id for r in records) == sorted(order_ids)
    assert sum(r.amount.amount_minor for r in records) == sum(o.total.amount_minor for o in orders.values())
    (totals,) = chunks[0].totals
    own = (await stubs.erp.GetSettlementTotals(erp_pb2.GetSettlementTotalsRequest(
        start_time=t0, end_time=t1))).totals
    assert list(own) == [totals] and totals.invoice_count == chunks[0].record_count

    async def tryton_agrees():
        invoices = await books.search_read("account.invoice", [("state", "=", "posted"),
                                                               ("description", "like", "INV-%")], ["total_amount"])
        return sum(i["total_amount"] for i in invoices) * 100 >= totals.invoiced_minor
    await eventually(tryton_agrees, what="Tryton's posted invoices cover the export")
