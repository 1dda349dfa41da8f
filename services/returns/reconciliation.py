"""Inventory reconciliation: the ERP ledger against WMS stock, per SKU and warehouse.

A batch process across two system APIs, so it runs in a process service (this
one) and needs nothing from either system but its contract: ERP's
ListLedgerPositions and CorrectLedger, WMS's ListInventory and GetInventoryAsOf.

The cut is consistent per position without stopping anything: ERP's ledger
position says which WMS movement sequence it last applied, and WMS answers
what it had on hand right after that very movement (its movement history).
Movements ERP has not applied yet are in flight, not drift, while the first
of them is younger than the grace period (or its event has not even left
WMS's outbox); older, its event was lost. A repair brings the ERP position to
WMS's current quantity and sequence, conditionally on ERP still holding what
was read, so a movement applied meanwhile is never overwritten; the late
event of a movement already covered is then ignored by ERP as stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import insert, select

from crossdock.erp.v1 import erp_pb2
from crossdock.reconciliation.v1 import reconciliation_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh import metrics
from services.mesh.app import Clients
from services.mesh.paging import keyset_page
from services.mesh.store import Store, utcnow

from . import domain
from .store import reconciliation_findings, reconciliation_runs

log = structlog.get_logger()

PAGE = 500
KIND = {k: pb.DriftKind.Value(f"DRIFT_KIND_{k}") for k in (
    domain.QUANTITY_MISMATCH, domain.MISSED_MOVEMENTS, domain.UNKNOWN_TO_WMS, domain.SEQUENCE_AHEAD)}


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _time(ts) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


async def _ledger(clients: Clients, warehouse_id: str) -> tuple[dict, dict, datetime]:
    """ERP's positions, when each page was read, and when the listing started."""
    started, token = utcnow(), ""
    rows: dict[tuple[str, str], domain.LedgerRow] = {}
    read_at: dict[tuple[str, str], datetime] = {}
    while True:
        at = utcnow()
        resp = await clients.erp.ListLedgerPositions(erp_pb2.ListLedgerPositionsRequest(
            page_size=PAGE, page_token=token, warehouse_id=warehouse_id))
        for p in resp.positions:
            key = (p.warehouse_id, p.sku)
            rows[key] = domain.LedgerRow(p.sku, p.warehouse_id, p.on_hand, p.last_sequence,
                                         _time(p.update_time))
            read_at[key] = at
        token = resp.next_page_token
        if not token:
            return rows, read_at, started


async def _wms_positions(clients: Clients, warehouse_id: str) -> set[tuple[str, str]]:
    token, keys = "", set()
    while True:
        resp = await clients.wms.ListInventory(wms_pb2.ListInventoryRequest(
            page_size=PAGE, page_token=token, warehouse_id=warehouse_id))
        keys.update((p.warehouse_id, p.sku) for p in resp.positions)
        token = resp.next_page_token
        if not token:
            return keys


async def _as_of(clients: Clients, keys: list, ledger: dict) -> dict:
    out = {}
    for chunk in _chunks(keys, PAGE):
        refs = [wms_pb2.StockPositionRef(
                    warehouse_id=wh, sku=sku,
                    sequence=ledger[(wh, sku)].last_sequence if (wh, sku) in ledger else 0)
                for wh, sku in chunk]
        resp = await clients.wms.GetInventoryAsOf(wms_pb2.GetInventoryAsOfRequest(positions=refs))
        for a in resp.positions:
            out[(a.warehouse_id, a.sku)] = domain.WmsAsOf(
                sku=a.sku, warehouse_id=a.warehouse_id, exists=a.exists, sequence=a.sequence,
                known=a.known, on_hand_at=a.on_hand_at_sequence, sequence_time=_time(a.sequence_time),
                current_sequence=a.current_sequence, current_on_hand=a.current_on_hand,
                next_time=_time(a.next_movement_time), next_unpublished=a.next_movement_unpublished)
    return out


def drift_pb(d: domain.Drift, repaired: bool) -> pb.InventoryDrift:
    out = pb.InventoryDrift(sku=d.sku, warehouse_id=d.warehouse_id, kind=KIND[d.kind],
                            erp_quantity=d.erp_quantity, wms_quantity=d.wms_quantity, delta=d.delta,
                            erp_sequence=d.erp_sequence, wms_sequence=d.wms_sequence,
                            repaired=repaired, detail=d.detail)
    if d.since:
        out.since_time.FromDatetime(d.since)
    return out


def run_pb(row) -> pb.ReconciliationRun:
    run = pb.ReconciliationRun(
        run_id=row.run_id, trigger=row.trigger, repair=row.repair, warehouse_id=row.warehouse_id,
        positions_checked=row.positions_checked, in_flight=row.in_flight,
        drift_count=row.drift_count, repaired_count=row.repaired_count)
    run.grace_period.FromTimedelta(timedelta(seconds=row.grace_s))
    run.start_time.FromDatetime(row.started_at)
    run.end_time.FromDatetime(row.finished_at)
    return run


async def reconcile(store: Store, clients: Clients, *, repair: bool, warehouse_id: str = "",
                    grace: timedelta, trigger: str = "request") -> pb.ReconcileInventoryResponse:
    started = utcnow()
    run_id = f"RECON-{started:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6].upper()}"
    ledger, read_at, listing_started = await _ledger(clients, warehouse_id)
    keys = sorted(set(ledger) | await _wms_positions(clients, warehouse_id))
    wms = await _as_of(clients, keys, ledger)
    drifts, in_flight = [], 0
    for key in keys:
        verdict = domain.judge(ledger.get(key), wms.get(key), now=read_at.get(key, listing_started),
                               grace=grace)
        in_flight += verdict.in_flight
        if verdict.drift:
            drifts.append(verdict.drift)
    repaired: set[tuple[str, str]] = set()
    if repair and drifts:
        for chunk in _chunks(drifts, PAGE):
            resp = await clients.erp.CorrectLedger(erp_pb2.CorrectLedgerRequest(
                reference=run_id, corrections=[erp_pb2.LedgerCorrection(
                    sku=d.sku, warehouse_id=d.warehouse_id, expected_on_hand=d.erp_quantity,
                    expected_last_sequence=d.erp_sequence, on_hand=d.target_on_hand,
                    sequence=d.target_sequence, detail=f"{d.kind}: {d.detail}") for d in chunk]))
            repaired.update((r.warehouse_id, r.sku) for r in resp.results if r.applied)
    finished = utcnow()
    async with store.transaction() as tx:
        await tx.conn.execute(insert(reconciliation_runs).values(
            run_id=run_id, trigger=trigger, repair=repair, warehouse_id=warehouse_id,
            grace_s=grace.total_seconds(), started_at=started, finished_at=finished,
            positions_checked=len(keys), in_flight=in_flight, drift_count=len(drifts),
            repaired_count=len(repaired)))
        if drifts:
            await tx.conn.execute(insert(reconciliation_findings), [dict(
                run_id=run_id, sku=d.sku, warehouse_id=d.warehouse_id, kind=d.kind,
                erp_quantity=d.erp_quantity, wms_quantity=d.wms_quantity,
                erp_sequence=d.erp_sequence, wms_sequence=d.wms_sequence, since=d.since,
                repaired=(d.warehouse_id, d.sku) in repaired, detail=d.detail) for d in drifts])
        row = (await tx.conn.execute(select(reconciliation_runs).where(
            reconciliation_runs.c.run_id == run_id))).one()
    metrics.reconciliation_run(trigger=trigger, scope=warehouse_id, drifted=len(drifts),
                               repaired=len(repaired))
    (log.warning if drifts else log.info)(
        "inventory.reconciled", run_id=run_id, trigger=trigger, positions=len(keys),
        in_flight=in_flight, drift=len(drifts), repaired=len(repaired),
        seconds=round((finished - started).total_seconds(), 3))
    return pb.ReconcileInventoryResponse(
        run=run_pb(row),
        drifts=[drift_pb(d, (d.warehouse_id, d.sku) in repaired) for d in drifts])


async def list_runs(store: Store, req: pb.ListReconciliationRunsRequest) -> pb.ListReconciliationRunsResponse:
    async with store.read() as conn:
        rows, token = await keyset_page(conn, select(reconciliation_runs), [reconciliation_runs.c.seq],
                                        req.page_size, req.page_token)
    return pb.ListReconciliationRunsResponse(runs=[run_pb(r) for r in rows], next_page_token=token)
