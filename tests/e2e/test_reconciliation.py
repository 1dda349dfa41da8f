"""Inventory reconciliation, settlement export and master-data propagation end to end:
every service a separate process, real nats-server, SQLite stores; drift injected
behind the mesh's back, straight into the services' own stores."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from google.protobuf.duration_pb2 import Duration

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.reconciliation.v1 import reconciliation_pb2 as cpb
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import World, make_world
from tests.e2e.returns_support import (
    ReturnsStubs,
    invoiced_order,
    return_request,
    sqlite,
    start_mesh_with,
    wait_return,
)
from tests.e2e.test_order_to_ship import random_orders, submit_all, wait_all
from tests.helpers import EventLog, eventually

pytestmark = pytest.mark.e2e

DRIFT = cpb.DriftKind


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_mesh_with(tmp_path_factory, {"CROSSDOCK_WMS_RETURN_RECEIVE_DELAY": "0.05",
                                           "CROSSDOCK_WMS_RETURN_INSPECT_DELAY": "0.05"})
    yield m
    m.stop()


@pytest.fixture
async def rs(mesh):
    s = ReturnsStubs(mesh)
    yield s
    await s.close()


async def crossdock(mesh, *args: str) -> tuple[int, str]:
    """Run the CLI against the mesh; (exit status, output)."""
    env = {**os.environ, "CROSSDOCK_RETURNS_ADDR": mesh.addr("returns"),
           "CROSSDOCK_ERP_ADDR": mesh.addr("erp"), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import main; main()", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


def reconcile_request(world: World | None = None, *, repair: bool = False, grace: float | None = None):
    req = cpb.ReconcileInventoryRequest(repair=repair, warehouse_id=world.warehouse_id if world else "")
    if grace is not None:
        req.grace_period.CopyFrom(Duration(nanos=int(grace * 1e9)))
    return req


async def ledger_equals_wms(stubs, world: World) -> dict[str, int]:
    async def equal():
        wms = {p.sku: p.on_hand for p in (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
            skus=world.skus, warehouse_id=world.warehouse_id))).positions}
        erp = {p.sku: p.on_hand for p in (await stubs.erp.ListLedgerPositions(
            erp_pb2.ListLedgerPositionsRequest(warehouse_id=world.warehouse_id))).positions}
        return wms if wms == erp else None
    return await eventually(equal, what="ERP ledger equal to WMS stock")


def lose_a_wms_adjustment(mesh, world: World, sku: str, delta: int) -> None:
    """A cycle-count adjustment recorded in WMS whose event never left (no outbox row)."""
    (on_hand, seq), = sqlite(mesh, "wms",
                             "SELECT on_hand, sequence FROM stock WHERE warehouse_id = ? AND sku = ?",
                             world.warehouse_id, sku)
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    sqlite(mesh, "wms", "UPDATE stock SET on_hand = ?, sequence = ? WHERE warehouse_id = ? AND sku = ?",
           on_hand + delta, seq + 1, world.warehouse_id, sku)
    sqlite(mesh, "wms", "INSERT INTO stock_movements (warehouse_id, sku, sequence, delta, on_hand_after, "
           "reason, reference, event_id, at) VALUES (?, ?, ?, ?, ?, 'ADJUSTMENT', 'cycle count', '', ?)",
           world.warehouse_id, sku, seq + 1, delta, on_hand + delta, at)


async def test_drift_behind_the_mesh_is_found_exactly_repaired_once_and_audited(stubs, rs, mesh, tmp_path):
    world = await make_world(stubs, stock=500)
    a, b, c = world.skus
    await ledger_equals_wms(stubs, world)
    nc = await nats.connect(mesh.nats.url)
    corrected = await EventLog().start(nc, ["erp.inventory.corrected"])
    try:
        # 1. A ledger row changed directly in ERP's store.
        sqlite(mesh, "erp",
               "UPDATE ledger_positions SET on_hand = on_hand - 7 WHERE warehouse_id = ? AND sku = ?",
               world.warehouse_id, a)
        # 2. A WMS adjustment whose event never reached ERP.
        lose_a_wms_adjustment(mesh, world, b, +5)

        async def found_both():
            resp = await rs.reconciliation.ReconcileInventory(reconcile_request(world, grace=0.5))
            return resp if len(resp.drifts) == 2 else None
        resp = await eventually(found_both, interval=0.3, what="both drifts found")
        drifts = {d.sku: d for d in resp.drifts}
        assert set(drifts) == {a, b} and resp.run.positions_checked == 3
        assert (drifts[a].kind, drifts[a].erp_quantity, drifts[a].wms_quantity, drifts[a].delta,
                drifts[a].erp_sequence, drifts[a].wms_sequence) == (DRIFT.DRIFT_KIND_QUANTITY_MISMATCH,
                                                                    493, 500, -7, 1, 1)
        assert (drifts[b].kind, drifts[b].erp_quantity, drifts[b].wms_quantity, drifts[b].delta,
                drifts[b].erp_sequence, drifts[b].wms_sequence) == (DRIFT.DRIFT_KIND_MISSED_MOVEMENTS,
                                                                    500, 505, -5, 1, 2)
        assert drifts[b].HasField("since_time") and not any(d.repaired for d in resp.drifts)

        # The command: a table, a report file, exit status 1 while drift remains.
        status, out = await crossdock(mesh, "reconcile", "--warehouse", world.warehouse_id, "--grace", "0.5",
                                      "--out", str(tmp_path / "drift.json"))
        assert status == 1, out
        assert "2 drifted, 0 repaired" in out and a in out and b in out
        report = json.loads((tmp_path / "drift.json").read_text())
        assert sorted((d["sku"], d["kind"], d["delta"]) for d in report["drift"]) == [
            (a, "QUANTITY_MISMATCH", -7), (b, "MISSED_MOVEMENTS", -5)]

        status, out = await crossdock(mesh, "reconcile", "--repair", "--warehouse", world.warehouse_id,
                                      "--grace", "0.5", "--out", str(tmp_path / "repair.csv"))
        assert status == 0, out
        assert "2 drifted, 2 repaired" in out
        rows = list(csv.DictReader((tmp_path / "repair.csv").open()))
        assert sorted((r["sku"], r["erp_quantity"], r["wms_quantity"], r["repaired"]) for r in rows) == [
            (a, "493", "500", "True"), (b, "500", "505", "True")]
        assert not list(tmp_path.glob(".*partial"))

        # Audited: a correction entry in the ledger and an event per position.
        entries = sqlite(mesh, "erp", "SELECT sku, delta, on_hand_after, sequence, reference "
                         "FROM ledger_entries WHERE warehouse_id = ? AND reason = 'RECONCILIATION' "
                         "ORDER BY sku",
                         world.warehouse_id)
        assert [e[:4] for e in entries] == [(a, 7, 500, 1), (b, 5, 505, 2)]
        assert entries[0][4].startswith("RECON-") and entries[0][4] == entries[1][4]
        events = await eventually(
            lambda: len(corrected.messages) == 2 and corrected.of("erp.inventory.corrected"),
            what="two erp.inventory.corrected events")
        assert (sorted((e.sku, e.on_hand_before, e.on_hand_after) for e in events)
                == [(a, 493, 500), (b, 500, 505)])
        assert await ledger_equals_wms(stubs, world) == {a: 500, b: 505, c: 500}

        # Idempotent: a second run (even repairing) finds and repairs nothing.
        again = await rs.reconciliation.ReconcileInventory(reconcile_request(world, repair=True, grace=0.5))
        assert list(again.drifts) == [] and again.run.repaired_count == 0
        assert len(sqlite(mesh, "erp", "SELECT id FROM ledger_entries WHERE warehouse_id = ? AND "
                          "reason = 'RECONCILIATION'", world.warehouse_id)) == 2
        # And the ledger keeps following WMS from the repaired sequence on.
        await invoiced_order(stubs, world, {b: 4})
        assert (await ledger_equals_wms(stubs, world))[b] == 501
        runs = (await rs.reconciliation.ListReconciliationRuns(
            cpb.ListReconciliationRunsRequest(page_size=500))).runs
        assert [r.repaired_count for r in runs if r.warehouse_id == world.warehouse_id][-3:] == [0, 2, 0]
    finally:
        await nc.close()


async def test_reconciliation_amid_order_traffic_reports_no_false_drift(stubs, rs):
    world = await make_world(stubs, stock=10_000)
    ids = await submit_all(stubs, random_orders(world, 60, seed=11))
    traffic = asyncio.create_task(wait_all(stubs, ids, timeout=180))
    runs = []
    while not traffic.done():
        # Every warehouse, default grace.
        resp = await rs.reconciliation.ReconcileInventory(reconcile_request())
        assert list(resp.drifts) == [], resp.drifts
        runs.append(resp.run)
    await traffic
    assert len(runs) >= 3
    assert sum(r.in_flight for r in runs) > 0, "no run saw a movement in flight"

    async def settled():
        resp = await rs.reconciliation.ReconcileInventory(reconcile_request())
        assert list(resp.drifts) == [], resp.drifts
        return resp.run.in_flight == 0
    await eventually(settled, what="nothing in flight once the traffic is over")


async def test_the_returns_autopilot_settles_a_partial_return_by_its_rules(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 2, world.skus[1]: 1})
    r = (await rs.returns.CreateReturn(return_request(
        order, (1, 2, rpb.RETURN_REASON_NOT_NEEDED), (2, 1, rpb.RETURN_REASON_OTHER)))).customer_return
    r = await wait_return(rs, r.return_id, rpb.RETURN_STATUS_PARTIALLY_CREDITED)
    assert r.credited.amount_minor == 2 * 1000
    assert [(x.restocked_quantity, x.refused_quantity) for x in r.lines] == [(2, 0), (0, 1)]


async def eur_order(stubs, world: World) -> pb.Order:
    """An order of a EUR customer from the same warehouse."""
    eur = Money(currency_code="EUR", amount_minor=4_321)
    await stubs.erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=erp_pb2.Customer(
        customer_id=f"{world.customer_id}-EU", name="EU customer", currency_code="EUR",
        credit_limit=Money(currency_code="EUR", amount_minor=10**9),
        ship_to=Address(name="E", line1="1 Rue", city="Paris", postal_code="75001", country_code="US"))))
    sku = f"{world.skus[0]}-EU"
    await stubs.erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku=sku, uom="EA", unit_price=eur, weight_grams=100, active=True)))
    await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id=f"R-{sku}", warehouse_id=world.warehouse_id, lines=[SkuQuantity(sku=sku, quantity=10)]))
    await stubs.tms.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=tms_pb2.Carrier(
        carrier_id="E2E-EUR-CARRIER", name="Test carrier (EUR)", active=True, rates=[tms_pb2.Rate(
            service_level="GROUND", country_codes=["US"], base=Money(currency_code="EUR", amount_minor=500),
            per_kg=Money(currency_code="EUR", amount_minor=50), transit_days=2)])))
    eu = World(world.suffix, f"{world.customer_id}-EU", world.warehouse_id, [sku],
               {sku: eur.amount_minor}, 10)
    return await invoiced_order(stubs, eu, {sku: 3})


async def test_settlement_export_totals_equal_erps_own(stubs, rs, mesh, tmp_path):
    world = await make_world(stubs)
    await invoiced_order(stubs, world, {world.skus[0]: 1})
    await eur_order(stubs, world)
    # A credit memo of this test's own: a return the autopilot credits (its rules restock NOT_NEEDED).
    credited = await invoiced_order(stubs, world, {world.skus[1]: 1})
    r = (await rs.returns.CreateReturn(return_request(
        credited, (1, 1, rpb.RETURN_REASON_NOT_NEEDED)))).customer_return
    await wait_return(rs, r.return_id, rpb.RETURN_STATUS_CREDITED)
    start, end = "2000-01-01", (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    own_resp = await stubs.erp.GetSettlementTotals(erp_pb2.GetSettlementTotalsRequest(
        start_time=_ts(datetime(2000, 1, 1, tzinfo=UTC)),
        end_time=_ts(datetime.fromisoformat(end).replace(tzinfo=UTC))))
    own = {t.currency_code: (t.invoice_count, t.invoiced_minor, t.credit_memo_count, t.credited_minor,
                             t.net_minor)
           for t in own_resp.totals}
    assert set(own) == {"USD", "EUR"} and own["USD"][2] >= 1  # the credit memo above

    for name in ("settlement.csv", "settlement.jsonl"):
        status, out = await crossdock(mesh, "export", "settlement", "--from", start, "--to", end,
                                      "--out", str(tmp_path / name))
        assert status == 0, out
        assert "totals equal ERP's own totals for the period" in out
        if name.endswith(".csv"):
            rows = list(csv.DictReader((tmp_path / name).open()))
        else:
            rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        sums: dict[str, Counter] = {}
        for r in rows:
            s = sums.setdefault(r["currency"], Counter())
            amount = int(r["amount_minor"])
            if r["document_type"] == "INVOICE":
                s["invoices"] += 1
                s["invoiced"] += amount
            else:
                assert amount < 0  # a credit memo reduces what is owed
                s["credits"] += 1
                s["credited"] -= amount
            s["net"] += amount
        assert {c: (s["invoices"], s["invoiced"], s["credits"], s["credited"], s["net"])
                for c, s in sums.items()} == own
        eur_rows = [r for r in rows if r["currency"] == "EUR"]
        assert ([(r["amount_minor"], r["amount"]) for r in eur_rows]
                in ([("12963", "129.63")], [(12963, "129.63")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settlement.csv", "settlement.jsonl"]


def _ts(when: datetime):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(when)
    return t


async def test_price_and_credit_limit_changes_reach_the_replicas_and_priced_orders_keep_their_price(
        stubs, mesh):
    world = await make_world(stubs)
    sku = world.skus[0]
    priced = (await stubs.ots.SubmitOrder(world.order({sku: 2}))).order
    assert priced.lines[0].unit_price.amount_minor == 1000
    await stubs.erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku=sku, description=sku, uom="EA", unit_price=Money(currency_code="USD", amount_minor=1500),
        weight_grams=700, active=True)))
    await stubs.erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=erp_pb2.Customer(
        customer_id=world.customer_id, name="Test customer", currency_code="USD",
        credit_limit=Money(currency_code="USD", amount_minor=123_456_00),
        ship_to=Address(name="T", line1="1 A St", city="X", postal_code="1", country_code="US"))))

    def replicas():
        return (sqlite(mesh, "wms", "SELECT unit_price_minor, revision FROM items WHERE sku = ?", sku),
                sqlite(mesh, "tms", "SELECT unit_price_minor, revision FROM items WHERE sku = ?", sku),
                sqlite(mesh, "wms", "SELECT credit_limit_minor FROM customers WHERE customer_id = ?",
                       world.customer_id),
                sqlite(mesh, "tms", "SELECT credit_limit_minor FROM customers WHERE customer_id = ?",
                       world.customer_id))
    await eventually(lambda: replicas() == ([(1500, 2)], [(1500, 2)], [(12345600,)], [(12345600,)]),
                     timeout=10, what="the change in the WMS and TMS replicas")

    # The order priced before the change is invoiced at its price.
    (done,) = (await wait_all(stubs, [priced.order_id])).values()
    invoice = (await stubs.erp.ListInvoices(
        erp_pb2.ListInvoicesRequest(order_id=priced.order_id))).invoices[0]
    assert invoice.total.amount_minor == 2 * 1000 == done.total.amount_minor
    # New orders take the new price.
    async def repriced():
        o = (await stubs.ots.SubmitOrder(world.order({sku: 1}))).order
        return o.lines[0].unit_price.amount_minor == 1500
    await eventually(repriced, timeout=10, interval=0.5, what="new orders at the new price")


@pytest.fixture(autouse=True)
def _cwd_is_the_repo(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
