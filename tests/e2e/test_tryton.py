"""The mesh on the Tryton ERP backend, end to end (order-to-ship, returns, settlement):
every service a process, trytond under gunicorn on a copy of the prepared template,
real nats-server. The scenarios and assertions of the built-in ERP's end-to-end tests
(imported from their modules, so they are the same functions), on a handful of orders
each; ERP-side figures read through the ERP contract and checked against Tryton's own
records."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crossdock.erp.v1 import erp_pb2
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import make_world, start_tryton_mesh, tryton_books
from tests.e2e.returns_support import ReturnsStubs, invoiced_order, return_request, wait_return
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
from tests.e2e.test_returns import (  # noqa: F401  (the same tests, on this module's mesh)
    NOT_NEEDED,
    RS,
    at_dock,
    inspect,
    test_partial_return_credits_only_what_was_accepted,
    test_return_refused_at_inspection_credits_nothing,
)
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.tryton]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    # Returns are received and inspected by the tests (handhelds at the dock).
    m = start_tryton_mesh(tmp_path_factory, {"CROSSDOCK_WMS_RETURN_AUTOPILOT": "false",
                                             "CROSSDOCK_RETURNS_TIMER_INTERVAL": "0.2"})
    yield m
    m.stop()


@pytest.fixture
async def rs(mesh):
    s = ReturnsStubs(mesh)
    yield s
    await s.close()


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
        "product.product", [("code", "in", world.skus)], ["code", "quantity"],
        context={"locations": [wh["id"]]})}
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
        invoices = await books.search_read(
            "account.invoice", [("state", "=", "posted"), ("description", "like", "INV-%")],
            ["total_amount"])
        return sum(i["total_amount"] for i in invoices) * 100 >= totals.invoiced_minor
    await eventually(tryton_agrees, what="Tryton's posted invoices cover the export")


async def test_a_return_is_credited_by_one_tryton_credit_note(stubs, rs, mesh):
    world = await make_world(stubs)
    a = world.skus[0]
    order = await invoiced_order(stubs, world, {a: 3})  # 3 x 10.00
    r = (await rs.returns.CreateReturn(return_request(order, (1, 3, NOT_NEEDED)))).customer_return
    r = await at_dock(rs, stubs, r)
    await inspect(stubs, r, (1, 3, 0, 0))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_CREDITED)
    assert r.credited.amount_minor == 3000
    books = await tryton_books(mesh)
    try:
        notes = await books.search_read("account.invoice", [("reference", "=", r.return_id)],
                                        ["state", "total_amount", "description"])
        assert [(n["state"], n["total_amount"], n["description"]) for n in notes] == [
            ("posted", Decimal("-30.00"), r.rma_number)]
        (party,) = await books.search_read("party.party", [("code", "=", world.customer_id)], ["receivable"])
        assert party["receivable"] == Decimal("0")  # invoiced 30.00, credited 30.00
    finally:
        await books.close()


async def test_drift_made_in_tryton_is_found_and_repaired_once_through_the_contract(stubs, rs, books):
    """A Tryton user counts a warehouse's stock differently (an inventory in the Tryton
    client): the reconciliation finds the drift, repairs it through CorrectLedger (an
    inventory booked in Tryton), and a second run finds nothing."""
    from crossdock.reconciliation.v1 import reconciliation_pb2 as cpb
    from tests.e2e.test_reconciliation import ledger_equals_wms, reconcile_request

    world = await make_world(stubs, stock=50, n_skus=2)
    a, _ = world.skus
    await ledger_equals_wms(stubs, world)
    (wh,) = await books.search_read("stock.location", [("code", "=", world.warehouse_id)],
                                    ["storage_location"])
    (product,) = await books.search_read("product.product", [("code", "=", a)], ["id"])
    (inventory,) = await books.model("stock.inventory", "create", [{
        "location": wh["storage_location"],
        "lines": [["create", [{"product": product["id"], "quantity": 43}]]]}])
    await books.model("stock.inventory", "confirm", [inventory])

    async def found():
        resp = await rs.reconciliation.ReconcileInventory(reconcile_request(world, grace=0.5))
        return resp if resp.drifts else None
    resp = await eventually(found, interval=0.3, what="the drift")
    (drift,) = resp.drifts
    assert (drift.sku, drift.kind, drift.erp_quantity, drift.wms_quantity) == (
        a, cpb.DRIFT_KIND_QUANTITY_MISMATCH, 43, 50)
    repaired = await rs.reconciliation.ReconcileInventory(reconcile_request(world, repair=True, grace=0.5))
    assert repaired.run.repaired_count == 1
    assert (await ledger_equals_wms(stubs, world))[a] == 50
    (now,) = await books.model("product.product", "read", [product["id"]], ["quantity"],
                               context={"locations": [wh["storage_location"]]})
    assert now["quantity"] == 50
    again = await rs.reconciliation.ReconcileInventory(reconcile_request(world, repair=True, grace=0.5))
    assert list(again.drifts) == [] and again.run.repaired_count == 0
