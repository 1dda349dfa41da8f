"""Returns, reconciliation and the settlement export with every store on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url

from crossdock.erp.v1 import erp_pb2
from crossdock.reconciliation.v1 import reconciliation_pb2 as cpb
from crossdock.returns.v1 import returns_pb2 as rpb
from services.mesh.config import SERVICES
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, make_world
from tests.e2e.returns_support import ReturnsStubs, invoiced_order, return_request, wait_return
from tests.helpers import PG_URL, eventually, pg_database, pg_drop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")]


@pytest.fixture(scope="module")
def pg_mesh(tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    names = {svc: f"crossdock_{svc}_{run}" for svc in SERVICES}
    urls = {svc: pg_database(PG_URL, name) for svc, name in names.items()}
    try:
        m = Mesh(tmp_path_factory.mktemp("mesh"), database_urls=urls, env={
            **FAST, "CROSSDOCK_WMS_RETURN_RECEIVE_DELAY": "0.05",
            "CROSSDOCK_WMS_RETURN_INSPECT_DELAY": "0.05"})
        try:
            m.start()
            m.urls = urls
            yield m
        finally:
            m.stop()
    finally:
        for name in names.values():
            pg_drop(PG_URL, name)


def ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


async def test_return_reconciliation_and_export_on_postgresql(pg_mesh):
    stubs, rs = Stubs(pg_mesh), ReturnsStubs(pg_mesh)
    try:
        start = datetime.now(UTC) - timedelta(seconds=1)
        world = await make_world(stubs)
        order = await invoiced_order(stubs, world, {world.skus[0]: 2, world.skus[1]: 1})
        req = return_request(order, (1, 2, rpb.RETURN_REASON_NOT_NEEDED), (2, 1, rpb.RETURN_REASON_OTHER))
        r = (await rs.returns.CreateReturn(req)).customer_return
        assert (await rs.returns.CreateReturn(req)).customer_return.return_id == r.return_id
        r = await wait_return(rs, r.return_id, rpb.RETURN_STATUS_PARTIALLY_CREDITED)
        assert r.credited.amount_minor == 2 * 1000

        # Drift behind the mesh's back: a ledger row changed in ERP's database.
        url = make_url(pg_mesh.urls["erp"])
        with psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                              password=url.password, dbname=url.database) as conn, conn.cursor() as cur:
            cur.execute("UPDATE ledger_positions SET on_hand = on_hand + 3 "
                        "WHERE warehouse_id = %s AND sku = %s",
                        (world.warehouse_id, world.skus[2]))
        req = cpb.ReconcileInventoryRequest(warehouse_id=world.warehouse_id,
                                            grace_period=Duration(seconds=30))

        async def found():
            resp = await rs.reconciliation.ReconcileInventory(req)
            return resp if resp.drifts else None
        (drift,) = (await eventually(found, what="drift")).drifts
        assert (drift.sku, drift.delta, drift.kind) == (world.skus[2], 3, cpb.DRIFT_KIND_QUANTITY_MISMATCH)
        req.repair = True
        assert (await rs.reconciliation.ReconcileInventory(req)).run.repaired_count == 1
        assert list((await rs.reconciliation.ReconcileInventory(req)).drifts) == []

        end = datetime.now(UTC) + timedelta(seconds=1)
        chunks = [c async for c in stubs.erp.ExportSettlement(erp_pb2.ExportSettlementRequest(
            start_time=ts(start), end_time=ts(end)))]
        (totals,) = chunks[0].totals
        records = [x for c in chunks[1:] for x in c.records]
        assert len(records) == chunks[0].record_count == 2
        assert (totals.invoiced_minor, totals.credited_minor) == (order.total.amount_minor, 2000)
        own = (await stubs.erp.GetSettlementTotals(erp_pb2.GetSettlementTotalsRequest(
            start_time=ts(start), end_time=ts(end)))).totals
        assert list(own) == [totals]
    finally:
        await stubs.close()
        await rs.close()
