"""ERP replenishment: reorder points (master data), planning a purchase or a
transfer for each WMS replenishment request, and the simulated supplier and
carrier that deliver it after a lead time.

Rules (pure functions at the top, unit-tested):

- **Purchase or transfer.** A request for Q units of a SKU in warehouse W is
  a TRANSFER from another warehouse S when S's *spare* stock covers all of Q:
  spare = S's on hand in the ERP inventory ledger - S's own reorder point for
  the SKU (0 without one) - what planned transfers not yet issued already
  take from S. Of several such warehouses the one with the most spare wins
  (then the lowest warehouse id). Otherwise (no warehouse covers the whole
  quantity: transfers are never split) it is a PURCHASE requisition to the
  supplier.
- **Expected receipt.** A purchase is delivered CROSSDOCK_ERP_SUPPLIER_LEAD_TIME
  seconds after it is planned. A transfer first asks the source warehouse to
  issue the stock (``cmd.wms.stock.transfer_out``: a TRANSFER movement the
  ledger follows); it arrives CROSSDOCK_ERP_TRANSFER_LEAD_TIME seconds after
  it left. If the source cannot issue it all (its available stock is lower
  than the ledger's on hand, e.g. allocated to orders), the transfer falls
  back to a purchase (published again as ``erp.replenishment.planned``).
- **Delivery.** A loop in the ERP process sends ``cmd.wms.stock.receive``
  (receipt id = replenishment id, idempotent in WMS) for every replenishment
  that is due; WMS books it like any receipt, allocating backorders first
  come, first served, and answers ``wms.stock.received`` (status RECEIVED).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import replenishment_pb2 as pb
from crossdock.erp.v1 import replenishment_pb2_grpc
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from services.mesh.bus import PermanentError
from services.mesh.config import Settings
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Store, Tx, insert_ignore, utcnow

from .store import items, ledger_positions, reorder_points, replenishments

log = structlog.get_logger()

PURCHASE, TRANSFER = "PURCHASE", "TRANSFER"


# ---- rules (pure) ----


@dataclass(frozen=True)
class Source:
    """Another warehouse's stock of the SKU, as ERP sees it."""

    warehouse_id: str
    on_hand: int  # ledger
    reorder_point: int = 0
    committed: int = 0  # planned transfers out of it, not yet issued

    @property
    def spare(self) -> int:
        return self.on_hand - self.reorder_point - self.committed


@dataclass(frozen=True)
class Plan:
    kind: str
    source_warehouse_id: str
    note: str


def plan_replenishment(warehouse_id: str, quantity: int, sources: Iterable[Source]) -> Plan:
    """TRANSFER from the other warehouse with the most spare stock when its spare
    covers the whole quantity (ties: lowest warehouse id); else PURCHASE."""
    covering = sorted((s for s in sources if s.warehouse_id != warehouse_id and s.spare >= quantity),
                      key=lambda s: (-s.spare, s.warehouse_id))
    if covering:
        best = covering[0]
        return Plan(TRANSFER, best.warehouse_id, f"{best.warehouse_id} has {best.spare} spare")
    return Plan(PURCHASE, "", f"no other warehouse has {quantity} spare")


def lead_time(kind: str, settings: Settings) -> float:
    return settings.erp_transfer_lead_time if kind == TRANSFER else settings.erp_supplier_lead_time


# ---- reorder points (master data) ----


def reorder_point_pb(row) -> pb.ReorderPoint:
    p = pb.ReorderPoint(sku=row.sku, warehouse_id=row.warehouse_id, reorder_point=row.reorder_point,
                        reorder_quantity=row.reorder_quantity, revision=row.revision)
    p.update_time.FromDatetime(row.updated_at)
    return p


def validate_reorder_point(p: pb.ReorderPoint) -> None:
    problems = [(f"reorder_point.{f}", "required") for f in ("sku", "warehouse_id") if not getattr(p, f)]
    if p.reorder_point < 0:
        problems.append(("reorder_point.reorder_point", "must not be negative"))
    if p.reorder_quantity < 1:
        problems.append(("reorder_point.reorder_quantity", "must be positive"))
    if problems:
        raise InvalidArgument(problems)


async def upsert_reorder_point(tx: Tx, p: pb.ReorderPoint) -> pb.ReorderPoint:
    validate_reorder_point(p)
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


async def list_reorder_points(conn: AsyncConnection, page_size: int, page_token: str,
                              warehouse_id: str = "") -> tuple[list[pb.ReorderPoint], str]:
    rp = reorder_points.c
    query = select(reorder_points).where(rp.warehouse_id == warehouse_id) if warehouse_id else select(reorder_points)
    rows, token = await keyset_page(conn, query, [rp.warehouse_id, rp.sku], page_size, page_token)
    return [reorder_point_pb(r) for r in rows], token


# ---- replenishments ----


def replenishment_pb(row) -> pb.Replenishment:
    r = pb.Replenishment(
        replenishment_id=row.replenishment_id, kind=pb.ReplenishmentKind.Value(f"REPLENISHMENT_KIND_{row.kind}"),
        sku=row.sku, warehouse_id=row.warehouse_id, source_warehouse_id=row.source_warehouse_id,
        quantity=row.quantity, status=pb.ReplenishmentStatus.Value(f"REPLENISHMENT_STATUS_{row.status}"),
        request_id=row.request_id, position=row.position, reorder_point=row.reorder_point, note=row.note)
    if row.due_at is not None:
        r.expected_receipt_time.FromDatetime(row.due_at)
    r.create_time.FromDatetime(row.created_at)
    if row.received_at is not None:
        r.receive_time.FromDatetime(row.received_at)
    return r


async def get_replenishment(conn: AsyncConnection, replenishment_id: str) -> pb.Replenishment:
    if not replenishment_id:
        raise InvalidArgument([("replenishment_id", "required")])
    row = (await conn.execute(select(replenishments).where(
        replenishments.c.replenishment_id == replenishment_id))).first()
    if row is None:
        raise NotFound("replenishment", replenishment_id)
    return replenishment_pb(row)


async def list_replenishments(conn: AsyncConnection, page_size: int, page_token: str, warehouse_id: str = "",
                              sku: str = "") -> tuple[list[pb.Replenishment], str]:
    r = replenishments.c
    where = ([r.warehouse_id == warehouse_id] if warehouse_id else []) + ([r.sku == sku] if sku else [])
    rows, token = await keyset_page(conn, select(replenishments).where(*where), [r.replenishment_id],
                                    page_size, page_token)
    return [replenishment_pb(x) for x in rows], token


async def _sources(conn: AsyncConnection, sku: str, warehouse_id: str) -> list[Source]:
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


async def _emit_planned(tx: Tx, replenishment_id: str) -> pb.Replenishment:
    row = (await tx.conn.execute(select(replenishments).where(
        replenishments.c.replenishment_id == replenishment_id))).one()
    r = replenishment_pb(row)
    await tx.emit("erp.replenishment.planned", pb.ReplenishmentPlanned(replenishment=r), key=replenishment_id)
    return r


async def plan(tx: Tx, req: wms_repl.ReplenishmentRequested, settings: Settings) -> None:
    """Turn a WMS request into a purchase or a transfer, once per request_id."""
    if not req.request_id or not req.sku or not req.warehouse_id or req.quantity < 1:
        raise PermanentError("a replenishment request needs request_id, sku, warehouse_id and a quantity > 0")
    r = replenishments.c
    if await tx.conn.scalar(select(r.replenishment_id).where(r.request_id == req.request_id)) is not None:
        return
    # Lock the SKU's planning (concurrent requests for one SKU must not both
    # count on the same spare stock): one writer on SQLite, row locks on PostgreSQL.
    await tx.conn.execute(select(reorder_points.c.sku).where(reorder_points.c.sku == req.sku).with_for_update())
    decision = plan_replenishment(req.warehouse_id, req.quantity, await _sources(tx.conn, req.sku, req.warehouse_id))
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
            destination_warehouse_id=req.warehouse_id, lines=[SkuQuantity(sku=req.sku, quantity=req.quantity)]),
            key=replenishment_id)
    await _emit_planned(tx, replenishment_id)
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
        await _emit_planned(tx, ev.transfer_id)


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


# ---- gRPC ----


class ReplenishmentServicer(replenishment_pb2_grpc.ReplenishmentServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def UpsertReorderPoint(self, request, context):
        async with self.store.transaction() as tx:
            point = await upsert_reorder_point(tx, request.reorder_point)
        return pb.UpsertReorderPointResponse(reorder_point=point)

    async def ListReorderPoints(self, request, context):
        async with self.store.read() as conn:
            found, token = await list_reorder_points(conn, request.page_size, request.page_token,
                                                     request.warehouse_id)
        return pb.ListReorderPointsResponse(reorder_points=found, next_page_token=token)

    async def ListReplenishments(self, request, context):
        async with self.store.read() as conn:
            found, token = await list_replenishments(conn, request.page_size, request.page_token,
                                                     request.warehouse_id, request.sku)
        return pb.ListReplenishmentsResponse(replenishments=found, next_page_token=token)

    async def GetReplenishment(self, request, context):
        async with self.store.read() as conn:
            return pb.GetReplenishmentResponse(replenishment=await get_replenishment(conn, request.replenishment_id))

