"""Replenishment on Tryton: reorder points are Tryton's ``stock.order_point`` (type
purchase, at the warehouse, ``min_quantity`` = the reorder point, ``target_quantity`` =
point + quantity), published as ``erp.reorderpoint.upserted`` (revision = the order
point's write count in the change feed).

Planning a purchase or a transfer for a WMS request, and the simulated supplier, stay
with the built-in ERP for now: on Tryton they are answered with a clear error
(``unsupported.py``), dead-lettered and replayable once an adapter serves them (Tryton's
purchase requests and internal shipments are where they would go)."""

from __future__ import annotations

from crossdock.erp.v1 import replenishment_pb2 as pb
from services.mesh.errors import NotFound
from services.mesh.paging import encode_token
from services.mesh.store import utcnow

from .. import contract
from .base import TrytonErp, refusal_as_precondition
from .masterdata import page
from .unsupported import UnsupportedReplenishment


class TrytonReplenishment(UnsupportedReplenishment):
    def __init__(self, erp: TrytonErp) -> None:
        self.erp = erp

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
                revision=1,
            )
            p.update_time.FromDatetime(r["write_date"] or r["create_date"] or utcnow())
            out.append(p)
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
