"""Replenishment on Tryton: reorder points are Tryton's ``stock.order_point`` (type
purchase, at the warehouse, ``min_quantity`` = the reorder point, ``target_quantity`` =
point + quantity), published as ``erp.reorderpoint.upserted`` (its revision a counter
the adapter keeps per point, a cursor of its store).

A WMS request becomes one ``crossdock.replenishment`` record in Tryton (the
crossdock_outbox module; looked up by the request id before it is made): Crossdock's
rule (``services/erp/replenishment.py``) decides purchase or transfer from Tryton's
stock at the other warehouses, their order points and the transfers already planned.
The simulated supplier and carrier (a loop) send ``cmd.wms.stock.receive`` for what is
due: the command is written to the adapter's outbox first (a fixed event id), then the
record is marked delivered in Tryton; a crash between the two sends it again, which
the broker and WMS (idempotent on the receipt id) drop."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, timedelta

import structlog

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import replenishment_pb2 as pb
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from services.mesh.bus import PermanentError
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.paging import encode_token
from services.mesh.store import Tx, utcnow

from .. import contract
from ..replenishment import (
    PURCHASE,
    TRANSFER,
    Source,
    lead_time,
    plan_replenishment,
    planned_request_problem,
)
from .base import TrytonErp, permanent_on_refusal, refusal_as_precondition
from .ledger import PREFIX
from .masterdata import page
from .store import cursors

log = structlog.get_logger()

FIELDS = [
    "replenishment_id",
    "request_id",
    "kind",
    "sku",
    "warehouse_id",
    "source_warehouse_id",
    "quantity",
    "status",
    "position",
    "reorder_point",
    "note",
    "due_at",
    "received_at",
    "create_date",
]


def _naive(when):
    return when.astimezone(UTC).replace(tzinfo=None)


def replenishment_pb(r: dict) -> pb.Replenishment:
    out = pb.Replenishment(
        replenishment_id=r["replenishment_id"],
        kind=pb.ReplenishmentKind.Value(f"REPLENISHMENT_KIND_{r['kind']}"),
        sku=r["sku"],
        warehouse_id=r["warehouse_id"],
        source_warehouse_id=r["source_warehouse_id"] or "",
        quantity=r["quantity"],
        status=pb.ReplenishmentStatus.Value(f"REPLENISHMENT_STATUS_{r['status']}"),
        request_id=r["request_id"],
        position=r["position"] or 0,
        reorder_point=r["reorder_point"] or 0,
        note=r["note"] or "",
    )
    if r["due_at"]:
        out.expected_receipt_time.FromDatetime(r["due_at"].replace(tzinfo=UTC))
    if r["create_date"]:
        out.create_time.FromDatetime(r["create_date"].replace(tzinfo=UTC))
    if r["received_at"]:
        out.receive_time.FromDatetime(r["received_at"].replace(tzinfo=UTC))
    return out


class TrytonReplenishment:
    def __init__(self, erp: TrytonErp) -> None:
        self.erp = erp

    async def _find(self, domain: list) -> list[dict]:
        return await self.erp.rpc.search_read(
            "crossdock.replenishment", domain, FIELDS, order=[("replenishment_id", "ASC")]
        )

    async def _sources(self, sku: str, warehouse_id: str) -> list[Source]:
        from .ledger import TrytonLedger

        c = cursors.c
        async with self.erp.store.read() as conn:
            names = (
                (
                    await conn.execute(
                        cursors.select().with_only_columns(c.name).where(c.name.like(f"{PREFIX}%/{sku}"))
                    )
                )
                .scalars()
                .all()
            )
        warehouses = sorted({n.removeprefix(PREFIX).split("/", 1)[0] for n in names} - {warehouse_id})
        points = {p.warehouse_id: p.reorder_point for p in await self.list_all() if p.sku == sku}
        committed: dict[str, int] = {}
        for r in await self._find([("sku", "=", sku), ("kind", "=", TRANSFER), ("status", "=", "PLANNED")]):
            committed[r["source_warehouse_id"]] = committed.get(r["source_warehouse_id"], 0) + r["quantity"]
        ledger = TrytonLedger(self.erp)
        out = []
        for wh in warehouses:
            on_hand = (await ledger.quantities(wh, [sku])).get(sku, 0)
            out.append(Source(wh, on_hand, points.get(wh, 0), committed.get(wh, 0)))
        return out

    async def _emit_planned(self, tx: Tx, replenishment_id: str) -> None:
        (r,) = await self._find([("replenishment_id", "=", replenishment_id)])
        await tx.emit(
            "erp.replenishment.planned",
            pb.ReplenishmentPlanned(replenishment=replenishment_pb(r)),
            key=replenishment_id,
        )

    @permanent_on_refusal
    async def plan(self, tx: Tx, req: wms_repl.ReplenishmentRequested) -> None:
        if problem := planned_request_problem(req.request_id, req.sku, req.warehouse_id, req.quantity):
            raise PermanentError(problem)
        if await self._find([("request_id", "=", req.request_id)]):
            return
        decision = plan_replenishment(
            req.warehouse_id, req.quantity, await self._sources(req.sku, req.warehouse_id)
        )
        replenishment_id = f"RPL-{uuid.uuid4().hex[:12].upper()}"
        due = utcnow() + timedelta(seconds=lead_time(decision.kind, self.erp.settings))
        await self.erp.rpc.model(
            "crossdock.replenishment",
            "create",
            [
                {
                    "replenishment_id": replenishment_id,
                    "request_id": req.request_id,
                    "kind": decision.kind,
                    "sku": req.sku,
                    "warehouse_id": req.warehouse_id,
                    "source_warehouse_id": decision.source_warehouse_id,
                    "quantity": req.quantity,
                    "status": "PLANNED",
                    "position": req.position,
                    "reorder_point": req.reorder_point,
                    "note": decision.note,
                    "due_at": _naive(due),
                }
            ],
        )
        if decision.kind == TRANSFER:
            await tx.emit(
                "cmd.wms.stock.transfer_out",
                wms_repl.TransferStockOut(
                    transfer_id=replenishment_id,
                    warehouse_id=decision.source_warehouse_id,
                    destination_warehouse_id=req.warehouse_id,
                    lines=[SkuQuantity(sku=req.sku, quantity=req.quantity)],
                ),
                key=replenishment_id,
            )
        await self._emit_planned(tx, replenishment_id)
        log.info(
            "erp.replenishment.planned",
            replenishment_id=replenishment_id,
            kind=decision.kind,
            sku=req.sku,
            warehouse_id=req.warehouse_id,
            quantity=req.quantity,
            note=decision.note,
        )

    async def _update(self, replenishment_id: str, when: list, values: dict) -> bool:
        found = await self._find([("replenishment_id", "=", replenishment_id), *when])
        if found:
            await self.erp.rpc.model("crossdock.replenishment", "write", [found[0]["id"]], values)
        return bool(found)

    @permanent_on_refusal
    async def transfer_issued(self, tx: Tx, ev: wms_repl.StockTransferredOut) -> None:
        due = utcnow() + timedelta(seconds=self.erp.settings.erp_transfer_lead_time)
        await self._update(
            ev.transfer_id, [("status", "=", "PLANNED")], {"status": "IN_TRANSIT", "due_at": _naive(due)}
        )

    @permanent_on_refusal
    async def transfer_refused(self, tx: Tx, ev: wms_repl.StockTransferRefused) -> None:
        due = utcnow() + timedelta(seconds=self.erp.settings.erp_supplier_lead_time)
        if await self._update(
            ev.transfer_id,
            [("status", "=", "PLANNED"), ("kind", "=", TRANSFER)],
            {
                "kind": PURCHASE,
                "source_warehouse_id": "",
                "due_at": _naive(due),
                "note": f"transfer from {ev.warehouse_id} refused ({ev.reason_code}: {ev.reason}); purchased",
            },
        ):
            await self._emit_planned(tx, ev.transfer_id)

    @permanent_on_refusal
    async def received(self, tx: Tx, ev: wms_repl.StockReceived) -> None:
        await self._update(
            ev.receipt_id,
            [("status", "!=", "RECEIVED")],
            {"status": "RECEIVED", "received_at": _naive(utcnow())},
        )

    async def deliver_due(self) -> list[str]:
        now = _naive(utcnow())
        due = await self._find(
            [
                ("due_at", "<=", now),
                [
                    "OR",
                    [("kind", "=", PURCHASE), ("status", "=", "PLANNED")],
                    [("kind", "=", TRANSFER), ("status", "=", "IN_TRANSIT")],
                ],
            ]
        )
        for r in due:
            async with self.erp.store.transaction() as tx:
                await tx.emit(
                    "cmd.wms.stock.receive",
                    wms_repl.ReceiveStock(
                        receipt_id=r["replenishment_id"],
                        warehouse_id=r["warehouse_id"],
                        request_id=r["request_id"],
                        lines=[SkuQuantity(sku=r["sku"], quantity=r["quantity"])],
                    ),
                    key=r["replenishment_id"],
                    event_id=f"deliver-{r['replenishment_id']}",
                )
            await self.erp.rpc.model("crossdock.replenishment", "write", [r["id"]], {"status": "DELIVERED"})
            log.info("erp.replenishment.delivered", replenishment_id=r["replenishment_id"], kind=r["kind"])
        return [r["replenishment_id"] for r in due]

    def loop(self):
        async def tryton_replenishment_deliveries(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    await self.deliver_due()
                except Exception:  # noqa: BLE001 - Tryton away: what is due stays due
                    log.exception("erp.replenishment.delivery_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.erp.settings.erp_replenishment_interval)

        return tryton_replenishment_deliveries

    async def get(self, replenishment_id: str) -> pb.Replenishment:
        if not replenishment_id:
            raise InvalidArgument([("replenishment_id", "required")])
        found = await self._find([("replenishment_id", "=", replenishment_id)])
        if not found:
            raise NotFound("replenishment", replenishment_id)
        return replenishment_pb(found[0])

    async def list(self, page_size: int, page_token: str, warehouse_id: str = "", sku: str = ""):
        size, key = page(page_size, page_token)
        dom = ([("warehouse_id", "=", warehouse_id)] if warehouse_id else []) + (
            [("sku", "=", sku)] if sku else []
        )
        if key:
            dom.append(("replenishment_id", ">", str(key[0])))
        rows = (await self._find(dom))[: size + 1]
        more, rows = len(rows) > size, rows[:size]
        return [replenishment_pb(r) for r in rows], encode_token(
            [rows[-1]["replenishment_id"]]
        ) if more else ""

    async def _points(self, domain: list) -> list[pb.ReorderPoint]:
        rows = await self.erp.rpc.search_read(
            "stock.order_point",
            [("type", "=", "purchase"), *domain],
            ["product", "location", "min_quantity", "target_quantity", "write_date", "create_date"],
        )
        skus = (
            {
                r["id"]: r["code"]
                for r in await self.erp.rpc.model(
                    "product.product", "read", sorted({r["product"] for r in rows}), ["code"]
                )
            }
            if rows
            else {}
        )
        codes = await self.erp.warehouse_codes()
        out = []
        for r in rows:
            p = pb.ReorderPoint(
                sku=skus.get(r["product"], ""),
                warehouse_id=codes.get(r["location"], ""),
                reorder_point=int(r["min_quantity"] or 0),
                reorder_quantity=int((r["target_quantity"] or 0) - (r["min_quantity"] or 0)),
                revision=0,
            )
            p.update_time.FromDatetime(r["write_date"] or r["create_date"] or utcnow())
            out.append(p)
        for p in out:  # the revision the adapter published last for the point
            p.revision = await self.erp.cursor(f"reorderpoint:{p.warehouse_id}/{p.sku}")
        return sorted(out, key=lambda p: (p.warehouse_id, p.sku))

    @refusal_as_precondition
    async def upsert_reorder_point(self, point: pb.ReorderPoint) -> pb.ReorderPoint:
        contract.validate_reorder_point(point)
        erp = self.erp
        if (product := await erp.product(point.sku)) is None:
            raise NotFound("item", point.sku)
        wh = await erp.warehouse(point.warehouse_id)
        values = {
            "min_quantity": point.reorder_point,
            "target_quantity": point.reorder_point + point.reorder_quantity,
        }
        found = await erp.rpc.model(
            "stock.order_point",
            "search",
            [("type", "=", "purchase"), ("product", "=", product), ("location", "=", wh["id"])],
            0,
            1,
            None,
        )
        if found:
            await erp.rpc.model("stock.order_point", "write", found, values)
        else:
            await erp.rpc.model(
                "stock.order_point",
                "create",
                [
                    {
                        "type": "purchase",
                        "product": product,
                        "location": wh["id"],
                        "company": (await erp.fixed())["company"],
                        **values,
                    }
                ],
            )
        (now,) = [
            p for p in await self.list_all() if (p.sku, p.warehouse_id) == (point.sku, point.warehouse_id)
        ]
        async with erp.store.transaction() as tx:
            key = f"reorderpoint:{point.warehouse_id}/{point.sku}"
            now.revision = await erp.cursor(key, tx.conn) + 1
            await erp.set_cursor(tx, key, now.revision)
            await tx.emit(
                "erp.reorderpoint.upserted",
                pb.ReorderPointUpserted(reorder_point=now),
                key=f"{point.warehouse_id}/{point.sku}",
            )
        return now

    async def list_all(self) -> list[pb.ReorderPoint]:
        return await self._points([])

    async def list_reorder_points(self, page_size: int, page_token: str, warehouse_id: str = ""):
        size, key = page(page_size, page_token, 2)
        points = [p for p in await self.list_all() if not warehouse_id or p.warehouse_id == warehouse_id]
        if key:
            points = [p for p in points if (p.warehouse_id, p.sku) > (key[0], key[1])]
        more, points = len(points) > size, points[:size]
        return points, encode_token([points[-1].warehouse_id, points[-1].sku]) if more and points else ""
