"""Inventory: WMS stock beside the ERP ledger per SKU and warehouse, drift highlighted;
reconciliation runs, run one now (and repair: operations); replenishments and reorder
points (supply chain changes them)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request

from crossdock.erp.v1 import erp_pb2, replenishment_pb2
from crossdock.reconciliation.v1 import reconciliation_pb2 as rec
from crossdock.wms.v1 import wms_pb2

from ..problems import Problem
from .web import Web, with_notice


async def _all(call, make, field: str, limit: int = 5000) -> list:
    out, token = [], ""
    while len(out) < limit:
        page = await call(make(token))
        out += getattr(page, field)
        if not (token := page.next_page_token):
            break
    return out


def side_by_side(wms: list, erp: list, sku: str = "") -> list[dict]:
    """One row per (warehouse, SKU) either side knows, with the drift (ERP - WMS) when they differ."""
    ledger = {(p.warehouse_id, p.sku): p for p in erp}
    stock = {(p.warehouse_id, p.sku): p for p in wms}
    rows = []
    for key in sorted(set(ledger) | set(stock)):
        if sku and sku.lower() not in key[1].lower():
            continue
        w, e = stock.get(key), ledger.get(key)
        rows.append({"warehouse_id": key[0], "sku": key[1], "wms": w.on_hand if w else None,
                     "allocated": w.allocated if w else None, "available": w.available if w else None,
                     "erp": e.on_hand if e else None,
                     "drift": (e.on_hand if e else 0) - (w.on_hand if w else 0)})
    return rows


def add(app: FastAPI, web: Web) -> None:
    core = web.core

    async def context(request: Request) -> dict:
        params = request.query_params
        warehouse, sku = params.get("warehouse", "")[:64], params.get("sku", "")[:64]
        wms, erp, runs, points, repl = await asyncio.gather(
            _all(core.wms.ListInventory, lambda t: wms_pb2.ListInventoryRequest(
                page_size=500, page_token=t, warehouse_id=warehouse), "positions"),
            _all(core.erp.ListLedgerPositions, lambda t: erp_pb2.ListLedgerPositionsRequest(
                page_size=500, page_token=t, warehouse_id=warehouse), "positions"),
            core.reconciliation.ListReconciliationRuns(rec.ListReconciliationRunsRequest(page_size=20)),
            core.replenishment.ListReorderPoints(replenishment_pb2.ListReorderPointsRequest(
                page_size=200, warehouse_id=warehouse)),
            core.replenishment.ListReplenishments(replenishment_pb2.ListReplenishmentsRequest(
                page_size=50, warehouse_id=warehouse)), return_exceptions=True)
        for r in (wms, erp):
            if isinstance(r, Exception):
                raise await _problem(r)
        rows = side_by_side(wms, erp, sku)
        only_drift = params.get("drift") == "1"
        return {"rows": [r for r in rows if r["drift"]] if only_drift else rows,
                "drifting": sum(1 for r in rows if r["drift"]), "q": {"warehouse": warehouse, "sku": sku,
                                                                      "drift": only_drift},
                "runs": [] if isinstance(runs, Exception) else sorted(
                    runs.runs, key=lambda r: r.start_time.seconds, reverse=True),
                "points": [] if isinstance(points, Exception) else list(points.reorder_points),
                "replenishments": [] if isinstance(repl, Exception) else list(repl.replenishments),
                "repl_kind": lambda r: replenishment_pb2.ReplenishmentKind.Name(r.kind).removeprefix(
                    "REPLENISHMENT_KIND_").lower(),
                "repl_status": lambda r: replenishment_pb2.ReplenishmentStatus.Name(r.status).removeprefix(
                    "REPLENISHMENT_STATUS_").lower()}

    async def _problem(err: Exception) -> Problem:
        from ..problems import from_grpc

        return from_grpc(err)

    @app.get("/inventory")
    async def inventory(request: Request):
        await web.reader(request, "inventory.view")
        return web.page(request, "inventory.html", result=None, **await context(request))

    @app.post("/inventory/reconcile")
    async def reconcile(request: Request):
        reader, form = await web.form(request, "inventory.reconcile")
        repair = form.get("repair") == "1"
        warehouse = str(form.get("warehouse") or "")[:64]
        request.state.detail = f"repair={repair} warehouse={warehouse or '*'}"
        r = await web.call(core.reconciliation.ReconcileInventory(rec.ReconcileInventoryRequest(
            repair=repair, warehouse_id=warehouse), timeout=60))
        request.state.resource = r.run.run_id
        ctx = await context(request)
        return web.page(request, "inventory.html", result=r, notice="The reconciliation ran.",
                        drift_kind=lambda d: rec.DriftKind.Name(d.kind).removeprefix("DRIFT_KIND_"), **ctx)

    @app.post("/inventory/reorder-points")
    async def reorder_point(request: Request):
        reader, form = await web.form(request, "replenishment.change")
        try:
            point, quantity = int(str(form.get("point"))), int(str(form.get("quantity")))
        except ValueError:
            raise Problem(422, "invalid-request",
                          "the reorder point and quantity are whole numbers") from None
        sku, warehouse = (str(form.get("sku") or "").strip()[:64],
                          str(form.get("warehouse") or "").strip()[:64])
        if not sku or not warehouse or point < 0 or quantity <= 0:
            raise Problem(422, "invalid-request",
                          "give a SKU, a warehouse, a point of 0 or more and a quantity")
        request.state.resource, request.state.detail = (f"{sku}@{warehouse}",
                                                        f"point={point} quantity={quantity}")

        async def act() -> str:
            await web.call(core.replenishment.UpsertReorderPoint(replenishment_pb2.UpsertReorderPointRequest(
                reorder_point=replenishment_pb2.ReorderPoint(sku=sku, warehouse_id=warehouse,
                                                             reorder_point=point,
                                                             reorder_quantity=quantity))))
            return with_notice("/console/inventory", "reorder-saved")

        return await web.once(request, reader, form, act)
