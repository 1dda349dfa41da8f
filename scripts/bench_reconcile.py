"""Measure inventory reconciliation over N SKUs (not part of the test suite).

    .venv/bin/python scripts/bench_reconcile.py --skus 10000

Starts a scratch mesh (nats-server and every service, SQLite stores) in a
temporary folder, receives stock for N SKUs in one warehouse, waits until the
ERP ledger follows every position, then times:
  1. a reconciliation with nothing in flight (N positions, no drift);
  2. the same after changing 1% of the ledger rows behind the mesh's back
     (drift found), then a repairing run, then a run that finds none.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import grpc

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.reconciliation.v1 import reconciliation_pb2 as cpb
from crossdock.reconciliation.v1 import reconciliation_pb2_grpc
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh.launcher import Mesh

WH = "WH-BENCH"


async def run(mesh: Mesh, skus: int, batch: int) -> None:
    erp_ch = grpc.aio.insecure_channel(mesh.addr("erp"))
    wms_ch = grpc.aio.insecure_channel(mesh.addr("wms"))
    ret_ch = grpc.aio.insecure_channel(
        mesh.addr("returns"), options=[("grpc.max_receive_message_length", 64 << 20)]
    )

    wms = wms_pb2_grpc.WmsServiceStub(wms_ch)
    rec = reconciliation_pb2_grpc.ReconciliationServiceStub(ret_ch)
    await wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(
        warehouse_id=WH, name="bench", address=Address(country_code="US"))))
    t = time.monotonic()
    for start in range(0, skus, batch):
        await wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
            receipt_id=f"BENCH-{start}", warehouse_id=WH,
            lines=[SkuQuantity(sku=f"SKU-{i:06d}", quantity=100 + i % 50)
                   for i in range(start, min(start + batch, skus))]), timeout=600)
    print(f"received stock for {skus} SKUs in {time.monotonic() - t:.1f}s")
    erp_db = mesh.data_dir / "erp.db"
    while True:
        with sqlite3.connect(erp_db) as conn:
            n = conn.execute(
                "SELECT count(*) FROM ledger_positions WHERE warehouse_id = ?", (WH,)
            ).fetchone()[0]
        if n >= skus:
            break
        await asyncio.sleep(0.5)
    print(f"ERP ledger follows all {n} positions after {time.monotonic() - t:.1f}s")

    async def reconcile(label: str, repair: bool = False) -> cpb.ReconcileInventoryResponse:
        t = time.monotonic()
        resp = await rec.ReconcileInventory(cpb.ReconcileInventoryRequest(repair=repair), timeout=600)
        r = resp.run
        print(f"{label:<38} {time.monotonic() - t:6.2f}s  positions {r.positions_checked}, in flight "
              f"{r.in_flight}, drift {r.drift_count}, repaired {r.repaired_count}")
        return resp

    for i in range(3):
        await reconcile(f"reconcile, no drift (run {i + 1})")
    tampered = max(skus // 100, 1)
    with sqlite3.connect(erp_db) as conn:
        conn.execute("UPDATE ledger_positions SET on_hand = on_hand + 1 WHERE warehouse_id = ? "
                     "AND sku IN (SELECT sku FROM ledger_positions WHERE warehouse_id = ? LIMIT ?)",
                     (WH, WH, tampered))
    print(f"changed {tampered} ledger rows in ERP's store")
    await reconcile("reconcile, report only")
    await reconcile("reconcile --repair", repair=True)
    await reconcile("reconcile again")
    for ch in (erp_ch, wms_ch, ret_ch):
        await ch.close()



def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000, help="SKUs per receipt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossdock-bench-") as tmp:
        mesh = Mesh(Path(tmp), env={"CROSSDOCK_RECONCILE_INTERVAL": "0", "CROSSDOCK_LOG_LEVEL": "WARNING"})
        try:
            mesh.start()
            asyncio.run(run(mesh, args.skus, args.batch))
        finally:
            mesh.stop()


if __name__ == "__main__":
    main()
