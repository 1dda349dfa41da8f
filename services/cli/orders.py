"""`crossdock submit|order|orders|cancel|stock`: orders through order-to-ship
(CROSSDOCK_ORDERTOSHIP_ADDR), stock from WMS next to the ERP ledger."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.table import Table

from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2

from .rpc import Stubs, console, run

app = typer.Typer()


def status_name(value: int) -> str:
    return pb.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")


@app.command()
def submit(
    customer: Annotated[str, typer.Option(help="customer id, e.g. C-ACME")],
    line: Annotated[list[str], typer.Option(help="SKU=QTY, repeatable")],
    warehouse: str = "",
    policy: Annotated[str, typer.Option(help="backorder or cancel (on shortage)")] = "",
    request_id: Annotated[str, typer.Option(help="idempotency key; a new one when empty")] = "",
) -> None:
    """Submit an order."""
    lines = []
    for spec in line:
        sku, _, qty = spec.partition("=")
        if not qty.lstrip("-").isdigit():
            raise typer.BadParameter(f"{spec!r}: expected SKU=QTY", param_hint="--line")
        lines.append(pb.OrderLine(sku=sku, quantity=int(qty)))
    req = pb.SubmitOrderRequest(
        request_id=request_id or str(uuid.uuid4()), customer_id=customer, lines=lines,
        warehouse_id=warehouse,
        shortage_policy=pb.ShortagePolicy.Value(f"SHORTAGE_POLICY_{policy.upper()}") if policy else 0)

    async def main() -> None:
        async with Stubs() as s:
            order = (await s.ots.SubmitOrder(req, timeout=30)).order
        console.print(f"{order.order_id}: {status_name(order.status)}, total "
                      f"{order.total.amount_minor / 100:.2f} {order.total.currency_code}, "
                      f"warehouse {order.warehouse_id}")
    run(main())


@app.command()
def order(order_id: str) -> None:
    """Show an order and its timeline (every step, time and source system)."""
    async def main() -> None:
        async with Stubs() as s:
            o = (await s.ots.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10)).order
        console.print(f"[bold]{o.order_id}[/bold] {o.customer_id} — {status_name(o.status)}"
                      + (f" ({o.status_reason})" if o.status_reason else ""))
        console.print(f"total {o.total.amount_minor / 100:.2f} {o.total.currency_code}, warehouse "
                      f"{o.warehouse_id}, carrier {o.carrier_id or '-'} {o.tracking_number}, invoice "
                      f"{o.invoice_id or '-'}, trace {o.trace_id or '-'}")
        if len(o.shipments) > 1 or o.cancelled_lines:
            for sh in o.shipments:
                console.print(f"shipment {sh.shipment_id}: "
                              + ", ".join(f"{q.sku} x{q.quantity}" for q in sh.lines)
                              + f", {sh.carrier_id} {sh.tracking_number}, invoice {sh.invoice_id or '-'}")
            if o.cancelled_lines:
                console.print("cancelled: " + ", ".join(f"{q.sku} x{q.quantity}" for q in o.cancelled_lines))
        t = Table("time", "source", "step", "status", "detail")
        for e in o.timeline:
            t.add_row(e.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3], e.source, e.step,
                      status_name(e.status), e.detail)
        console.print(t)
    run(main())


@app.command("orders")
def list_orders(status: str = "", customer: str = "", limit: int = 50) -> None:
    """List orders (oldest first)."""
    async def main() -> None:
        req = pb.ListOrdersRequest(
            page_size=limit, customer_id=customer,
            status=pb.OrderStatus.Value(f"ORDER_STATUS_{status.upper()}") if status else 0)
        async with Stubs() as s:
            resp = await s.ots.ListOrders(req, timeout=10)
        t = Table("order", "customer", "status", "total", "reason")
        for o in resp.orders:
            t.add_row(o.order_id, o.customer_id, status_name(o.status),
                      f"{o.total.amount_minor / 100:.2f} {o.total.currency_code}", o.status_reason)
        console.print(t)
    run(main())


@app.command()
def cancel(order_id: str, reason: str = "") -> None:
    """Cancel an order (until it is packed); the steps already done are compensated."""
    async def main() -> None:
        async with Stubs() as s:
            o = (await s.ots.CancelOrder(pb.CancelOrderRequest(order_id=order_id, reason=reason),
                                         timeout=10)).order
        console.print(f"{o.order_id}: {status_name(o.status)}")
    run(main())


@app.command()
def stock(warehouse: str = "") -> None:
    """WMS stock next to the ERP inventory ledger, per SKU and warehouse."""
    async def main() -> None:
        async with Stubs() as s:
            wms = (await s.wms.ListInventory(wms_pb2.ListInventoryRequest(
                page_size=500, warehouse_id=warehouse), timeout=10)).positions
            erp = (await s.erp.ListLedgerPositions(erp_pb2.ListLedgerPositionsRequest(
                page_size=500, warehouse_id=warehouse), timeout=10)).positions
        ledger = {(p.warehouse_id, p.sku): p.on_hand for p in erp}
        t = Table("warehouse", "sku", "WMS on hand", "allocated", "available", "ERP ledger", "drift")
        for p in wms:
            erp_qty = ledger.get((p.warehouse_id, p.sku))
            drift = "" if erp_qty == p.on_hand else "[red]yes[/red]"
            t.add_row(p.warehouse_id, p.sku, str(p.on_hand), str(p.allocated), str(p.available),
                      "-" if erp_qty is None else str(erp_qty), drift)
        console.print(t)
    run(main())
