"""`crossdock replenishment reorder-point set|list`, `crossdock replenishment list|show`:
reorder points (ERP master data) and the purchases and transfers planned when
a warehouse's inventory position falls below one (CROSSDOCK_ERP_ADDR)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.table import Table

from crossdock.erp.v1 import replenishment_pb2 as pb
from crossdock.ordertoship.v1 import order_to_ship_pb2 as opb

from .reference_data import REORDER_POINTS
from .rpc import Stubs, console, run

app = typer.Typer(help="Reorder points and replenishments (purchases, transfers)", no_args_is_help=True)
points_app = typer.Typer(help="Reorder points per SKU and warehouse (ERP master data)", no_args_is_help=True)
app.add_typer(points_app, name="reorder-point")



def _name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)


def _time(ts) -> str:
    return ts.ToDatetime().strftime("%H:%M:%S") if ts.seconds else "-"


@points_app.command("set")
def set_point(
    sku: Annotated[str, typer.Option(help="SKU, e.g. SKU-RARE")],
    warehouse: Annotated[str, typer.Option(help="warehouse id, e.g. WH-EAST")],
    point: Annotated[int, typer.Option(min=0, help="replenish when the position falls below this")],
    quantity: Annotated[int, typer.Option(min=1, help="order up to point + quantity")],
) -> None:
    """Create or change a reorder point (replicated to WMS)."""
    async def main() -> None:
        async with Stubs() as s:
            p = (await s.replenishment.UpsertReorderPoint(pb.UpsertReorderPointRequest(
                reorder_point=pb.ReorderPoint(sku=sku, warehouse_id=warehouse, reorder_point=point,
                                              reorder_quantity=quantity)), timeout=10)).reorder_point
        console.print(f"{p.warehouse_id} {p.sku}: reorder point {p.reorder_point}, reorder quantity "
                      f"{p.reorder_quantity} (revision {p.revision})")
    run(main())


@points_app.command("list")
def list_points(warehouse: str = "", limit: int = 100) -> None:
    """List reorder points."""
    async def main() -> None:
        async with Stubs() as s:
            resp = await s.replenishment.ListReorderPoints(pb.ListReorderPointsRequest(
                warehouse_id=warehouse, page_size=limit), timeout=10)
        t = Table("warehouse", "sku", "reorder point", "reorder quantity", "revision", "updated")
        for p in resp.reorder_points:
            t.add_row(p.warehouse_id, p.sku, str(p.reorder_point), str(p.reorder_quantity), str(p.revision),
                      _time(p.update_time))
        console.print(t)
    run(main())


@app.command("list")
def list_replenishments(warehouse: str = "", sku: str = "", limit: int = 100) -> None:
    """List replenishments (purchases and transfers), oldest id first."""
    async def main() -> None:
        async with Stubs() as s:
            resp = await s.replenishment.ListReplenishments(pb.ListReplenishmentsRequest(
                warehouse_id=warehouse, sku=sku, page_size=limit), timeout=10)
        t = Table("replenishment", "kind", "sku", "into", "from", "qty", "status", "expected", "received",
                  "why")
        for r in resp.replenishments:
            t.add_row(r.replenishment_id, _name(pb.ReplenishmentKind, r.kind, "REPLENISHMENT_KIND_"), r.sku,
                      r.warehouse_id, r.source_warehouse_id or "-", str(r.quantity),
                      _name(pb.ReplenishmentStatus, r.status, "REPLENISHMENT_STATUS_"),
                      _time(r.expected_receipt_time), _time(r.receive_time), r.note)
        console.print(t)
    run(main())


async def seed_reorder_points(stub) -> int:
    """Load the demo world's reorder points (idempotent upserts)."""
    for warehouse, sku, point, quantity in REORDER_POINTS:
        await stub.UpsertReorderPoint(pb.UpsertReorderPointRequest(reorder_point=pb.ReorderPoint(
            sku=sku, warehouse_id=warehouse, reorder_point=point, reorder_quantity=quantity)), timeout=10)
    return len(REORDER_POINTS)


async def show_backorder_releases(ots, out, timeout: float = 60.0) -> None:
    """Follow the demo's backordered orders until a replenishment releases them
    (or the timeout) and say how they ended."""
    waiting = [o.order_id for o in out.orders.values() if o.status == opb.ORDER_STATUS_BACKORDERED]
    if not waiting:
        return
    console.print(f"{len(waiting)} backordered order(s) wait for a replenishment "
                  "(`crossdock replenishment list`)…")
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for order_id in list(waiting):
            order = (await ots.GetOrder(opb.GetOrderRequest(order_id=order_id), timeout=10)).order
            finished = (opb.ORDER_STATUS_INVOICED, opb.ORDER_STATUS_CANCELLED, opb.ORDER_STATUS_REJECTED)
            if order.status in finished:
                out.orders[order_id] = order
                waiting.remove(order_id)
                how = ("released by a replenishment receipt" if order.status == opb.ORDER_STATUS_INVOICED
                       else "ended")
                now = _name(opb.OrderStatus, order.status, "ORDER_STATUS_")
                console.print(f"  {order_id}: {how} → {now}")
        if waiting:
            await asyncio.sleep(0.5)  # polling interval of the display
    for order_id in waiting:
        console.print(f"  {order_id}: still backordered after {timeout:.0f}s")
