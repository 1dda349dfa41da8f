"""The built-in ERP's replenishment: reorder points (master data), a purchase or a
transfer planned per WMS request (the rules of ``services/erp/replenishment.py``), and
the simulated supplier and carrier that deliver it when it is due."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import replenishment_pb2 as pb
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from services.mesh.bus import PermanentError
from services.mesh.config import Settings
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Store, Tx, insert_ignore, utcnow

from .. import contract
from ..replenishment import (
    PURCHASE,
    TRANSFER,
    Source,
    lead_time,
    plan_replenishment,
    planned_request_problem,
)
from ..store import items, ledger_positions, reorder_points, replenishments

log = structlog.get_logger()


def reorder_point_pb(row) -> pb.ReorderPoint:
    p = pb.ReorderPoint(sku=row.sku, warehouse_id=row.warehouse_id, reorder_point=row.reorder_point,
                        reorder_quantity=row.reorder_quantity, revision=row.revision)
    p.update_time.FromDatetime(row.updated_at)
    return p


async def upsert_reorder_point(tx: Tx, p: pb.ReorderPoint) -> pb.ReorderPoint:
    contract.validate_reorder_point(p)
    if await tx.conn.scalar(select(items.c.sku).where(items.c.sku == p.sku)) is None:
        raise NotFound("item", p.sku)
    rp = reorder_points.c
    key = and_(rp.sku == p.sku, rp.warehouse_id == p.warehouse_id)
    values = dict(reorder_point=p.reorder_point, reorder_quantity=p.reorder_quantity, updated_at=utcnow())
    if not await insert_ignore(tx.conn, reorder_points, dict(sku=p.sku, warehouse_id=p.warehouse_id,
                                                             revision=1, **values)):
        await tx.conn.execute(update(reorder_points).where(key).values(revision=rp.revision + 1, **values))
    point = reorder_point_pb((await tx.conn.execute(select(reorder_points).where(key))).one())
    await tx.emit("erp.reorderpoint.upserted", pb.ReorderPointUpserted(reorder_point=point),
                  key=f"{p.warehouse_id}/{p.sku}")
    return point


def replenishment_pb(row) -> pb.Replenishment:
    r = pb.Replenishment(
        replenishment_id=row.replenishment_id,
        kind=pb.ReplenishmentKind.Value(f"REPLENISHMENT_KIND_{row.kind}"),
        sku=row.sku, warehouse_id=row.warehouse_id, source_warehouse_id=row.source_warehouse_id,
        quantity=row.quantity,
        status=pb.ReplenishmentStatus.Value(f"REPLENISHMENT_STATUS_{row.status}"),
        request_id=row.request_id, position=row.position, reorder_point=row.reorder_point, note=row.note)
    if row.due_at is not None:
        r.expected_receipt_time.FromDatetime(row.due_at)
    r.create_time.FromDatetime(row.created_at)
    if row.received_at is not None:
        r.receive_time.FromDatetime(row.received_at)
    return r


async def sources(conn: AsyncConnection, sku: str, warehouse_id: str) -> list[Source]:
    lp, rp, r = ledger_positions.c, reorder_points.c, replenishments.c
    rows = (await conn.execute(
        select(lp.warehouse_id, lp.on_hand, rp.reorder_point)
        .select_from(ledger_positions.outerjoin(reorder_points, and_(
            rp.sku == lp.sku, rp.warehouse_id == lp.warehouse_id)))
        .where(lp.sku == sku, lp.warehouse_id != warehouse_id))).all()
    committed = dict((await conn.execute(
        select(r.source_warehouse_id, func.sum(r.quantity))
        .where(r.sku == sku, r.kind == TRANSFER, r.status == "PLANNED")
        .group_by(r.source_warehouse_id))).all())
    return [Source(w.warehouse_id, w.on_hand, w.reorder_point or 0, int(committed.get(w.warehouse_id) or 0))
            for w in rows]


async def emit_planned(tx: Tx, replenishment_id: str) -> pb.Replenishment:
    row = (await tx.conn.execute(select(replenishments).where(
        replenishments.c.replenishment_id == replenishment_id))).one()
    r = replenishment_pb(row)
    await tx.emit("erp.replenishment.planned", pb.ReplenishmentPlanned(replenishment=r), key=replenishment_id)
    return r


async def plan(tx: Tx, req: wms_repl.ReplenishmentRequested, settings: Settings) -> None:
    """Turn a WMS request into a purchase or a transfer, once per request_id."""
    if problem := planned_request_problem(req.request_id, req.sku, req.warehouse_id, req.quantity):
        raise PermanentError(problem)
    r = replenishments.c
    if await tx.conn.scalar(select(r.replenishment_id).where(r.request_id == req.request_id)) is not None:
        return
    # Lock the SKU's planning (concurrent requests for one SKU must not both
    # count on the same spare stock): one writer on SQLite, row locks on PostgreSQL.
    await tx.conn.execute(select(reorder_points.c.sku).where(reorder_points.c.sku == req.sku)
                          .with_for_update())
    decision = plan_replenishment(req.warehouse_id, req.quantity,
                                  await sources(tx.conn, req.sku, req.warehouse_id))
    now = utcnow()
    replenishment_id = f"RPL-{uuid.uuid4().hex[:12].upper()}"
    await tx.conn.execute(replenishments.insert().values(
        replenishment_id=replenishment_id, request_id=req.request_id, kind=decision.kind, sku=req.sku,
        warehouse_id=req.warehouse_id, source_warehouse_id=decision.source_warehouse_id,
        quantity=req.quantity, status="PLANNED", position=req.position, reorder_point=req.reorder_point,
        note=decision.note, due_at=now + timedelta(seconds=lead_time(decision.kind, settings)),
        created_at=now, updated_at=now))
    if decision.kind == TRANSFER:
        await tx.emit("cmd.wms.stock.transfer_out", wms_repl.TransferStockOut(
            transfer_id=replenishment_id, warehouse_id=decision.source_warehouse_id,
            destination_warehouse_id=req.warehouse_id,
            lines=[SkuQuantity(sku=req.sku, quantity=req.quantity)]),
            key=replenishment_id)
    await emit_planned(tx, replenishment_id)
    log.info("erp.replenishment.planned", replenishment_id=replenishment_id, kind=decision.kind,
             sku=req.sku, warehouse_id=req.warehouse_id, quantity=req.quantity, note=decision.note)


async def transfer_issued(tx: Tx, ev: wms_repl.StockTransferredOut, settings: Settings) -> None:
    """The stock left the source warehouse: in transit, due after the transfer lead time."""
    r = replenishments.c
    await tx.conn.execute(update(replenishments).where(
        r.replenishment_id == ev.transfer_id, r.status == "PLANNED").values(
        status="IN_TRANSIT", due_at=utcnow() + timedelta(seconds=settings.erp_transfer_lead_time),
        updated_at=utcnow()))


async def transfer_refused(tx: Tx, ev: wms_repl.StockTransferRefused, settings: Settings) -> None:
    """The source warehouse could not issue it: buy it instead."""
    r = replenishments.c
    now = utcnow()
    changed = await tx.conn.execute(update(replenishments).where(
        r.replenishment_id == ev.transfer_id, r.status == "PLANNED", r.kind == TRANSFER).values(
        kind=PURCHASE, source_warehouse_id="", updated_at=now,
        note=f"transfer from {ev.warehouse_id} refused ({ev.reason_code}: {ev.reason}); purchased",
        due_at=now + timedelta(seconds=settings.erp_supplier_lead_time)))
    if changed.rowcount:
        await emit_planned(tx, ev.transfer_id)


async def received(tx: Tx, ev: wms_repl.StockReceived) -> None:
    r = replenishments.c
    await tx.conn.execute(update(replenishments).where(
        r.replenishment_id == ev.receipt_id, r.status != "RECEIVED").values(
        status="RECEIVED", received_at=utcnow(), updated_at=utcnow()))


# ---- the simulated supplier and carrier ----


async def deliver_due(tx: Tx, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Send cmd.wms.stock.receive for every due purchase and arrived transfer."""
    r = replenishments.c
    now = now or utcnow()
    due = (await tx.conn.execute(
        select(replenishments).where(r.due_at <= now, or_(
            and_(r.kind == PURCHASE, r.status == "PLANNED"),
            and_(r.kind == TRANSFER, r.status == "IN_TRANSIT")))
        .order_by(r.due_at).limit(limit))).all()
    delivered = []
    for row in due:
        changed = await tx.conn.execute(update(replenishments).where(
            r.replenishment_id == row.replenishment_id, r.status == row.status).values(
            status="DELIVERED", updated_at=now))
        if not changed.rowcount:
            continue
        await tx.emit("cmd.wms.stock.receive", wms_repl.ReceiveStock(
            receipt_id=row.replenishment_id, warehouse_id=row.warehouse_id, request_id=row.request_id,
            lines=[SkuQuantity(sku=row.sku, quantity=row.quantity)]), key=row.replenishment_id)
        delivered.append(row.replenishment_id)
        log.info("erp.replenishment.delivered", replenishment_id=row.replenishment_id, kind=row.kind,
                 sku=row.sku, warehouse_id=row.warehouse_id, quantity=row.quantity)
    return delivered


def delivery_loop(store: Store, settings: Settings) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def replenishment_deliveries(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with store.transaction() as tx:
                    await deliver_due(tx)
            except Exception:  # noqa: BLE001 - keep going; the store still says what is due
                log.exception("erp.replenishment.delivery_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.erp_replenishment_interval)

    return replenishment_deliveries


class BuiltinReplenishment:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def upsert_reorder_point(self, point: pb.ReorderPoint) -> pb.ReorderPoint:
        async with self.store.transaction() as tx:
            return await upsert_reorder_point(tx, point)

    async def list_reorder_points(self, page_size: int, page_token: str, warehouse_id: str = ""):
        rp = reorder_points.c
        query = select(reorder_points).where(rp.warehouse_id == warehouse_id) if warehouse_id else select(
            reorder_points)
        async with self.store.read() as conn:
            rows, token = await keyset_page(conn, query, [rp.warehouse_id, rp.sku], page_size, page_token)
        return [reorder_point_pb(r) for r in rows], token

    async def get(self, replenishment_id: str) -> pb.Replenishment:
        if not replenishment_id:
            raise InvalidArgument([("replenishment_id", "required")])
        async with self.store.read() as conn:
            row = (await conn.execute(select(replenishments).where(
                replenishments.c.replenishment_id == replenishment_id))).first()
        if row is None:
            raise NotFound("replenishment", replenishment_id)
        return replenishment_pb(row)

    async def list(self, page_size: int, page_token: str, warehouse_id: str = "", sku: str = ""):
        r = replenishments.c
        where = ([r.warehouse_id == warehouse_id] if warehouse_id else []) + ([r.sku == sku] if sku else [])
        async with self.store.read() as conn:
            rows, token = await keyset_page(conn, select(replenishments).where(*where), [r.replenishment_id],
                                            page_size, page_token)
        return [replenishment_pb(x) for x in rows], token

    async def plan(self, tx: Tx, request: wms_repl.ReplenishmentRequested) -> None:
        await plan(tx, request, self.settings)

    async def transfer_issued(self, tx: Tx, event: wms_repl.StockTransferredOut) -> None:
        await transfer_issued(tx, event, self.settings)

    async def transfer_refused(self, tx: Tx, event: wms_repl.StockTransferRefused) -> None:
        await transfer_refused(tx, event, self.settings)

    async def received(self, tx: Tx, event: wms_repl.StockReceived) -> None:
        await received(tx, event)
