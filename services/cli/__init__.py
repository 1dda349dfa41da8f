"""`crossdock`: run the mesh, load reference data, submit and follow orders."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.rpc import error_details_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.tms.v1 import tms_pb2_grpc
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh.config import SERVICES, load_settings
from services.mesh.errors import status_details

from . import reference_data, workload

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()


class Stubs:
    """gRPC stubs to the services at the configured addresses."""

    def __init__(self) -> None:
        s = load_settings()
        self.channels = {n: grpc.aio.insecure_channel(s.addr(n)) for n in SERVICES}
        self.erp = erp_pb2_grpc.ErpServiceStub(self.channels["erp"])
        self.wms = wms_pb2_grpc.WmsServiceStub(self.channels["wms"])
        self.tms = tms_pb2_grpc.TmsServiceStub(self.channels["tms"])
        self.ots = order_to_ship_pb2_grpc.OrderToShipServiceStub(self.channels["ordertoship"])

    async def __aenter__(self) -> Stubs:
        return self

    async def __aexit__(self, *exc) -> None:
        for ch in self.channels.values():
            await ch.close()


def _run(coro) -> None:
    """Run a coroutine; print a gRPC error with its details instead of a traceback."""
    try:
        asyncio.run(coro)
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        status = status_details(err)
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                for v in bad.field_violations:
                    console.print(f"  {v.field}: {v.description}")
        raise typer.Exit(1) from None


def _status(value: int) -> str:
    return pb.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")


def outcome_table(out: workload.Outcome) -> Table:
    labels = {
        "INVOICED": "shipped + invoiced", "REJECTED": "rejected (credit)", "BACKORDERED": "backordered",
        "CANCELLED": "cancelled", "SHIPPED": "shipped, invoice pending",
    }
    table = Table(title="Sample workload outcome")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("example")
    for status, count in sorted(out.counts().items(), key=lambda kv: -kv[1]):
        example = next(o for o in out.orders.values() if _status(o.status) == status)
        reason = f" — {example.status_reason}" if example.status_reason else ""
        table.add_row(labels.get(status, status.lower()), str(count), f"{example.order_id}{reason}")
    returns.add_outcome_rows(table, out)
    return table


async def _demo(stubs: Stubs, n: int, timeout: float) -> workload.Outcome:
    requests = workload.sample_requests(n)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        sub = progress.add_task("submitted", total=len(requests))
        done = progress.add_task("settled  ", total=len(requests))
        out = await workload.run_workload(
            stubs.ots, requests, timeout=timeout,
            on_submitted=lambda k: progress.update(sub, completed=k),
            on_settled=lambda k: progress.update(done, completed=k))
        await returns.demo_returns(stubs.channels["returns"], out, progress)
    console.print(outcome_table(out))
    excs = (await stubs.ots.ListExceptions(pb.ListExceptionsRequest(page_size=500), timeout=10)).exceptions
    if excs:
        kinds = Counter(f"{pb.ExceptionKind.Name(e.kind).removeprefix('EXCEPTION_KIND_')} -> "
                        f"{pb.ResolutionAction.Name(e.action).removeprefix('RESOLUTION_ACTION_') if e.action else 'OPEN'}"
                        for e in excs)
        console.print("warehouse/carrier exceptions: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
                      + " (`crossdock exceptions list --all`)")
    console.print(f"{len(out.orders)} orders submitted in {out.submitted_in:.1f}s, settled in "
                  f"{out.settled_in:.1f}s: {out.completed_per_second:.1f} orders/s shipped+invoiced"
                  + (" [red](timed out)[/red]" if out.timed_out else ""))
    await replenishment.show_backorder_releases(stubs.ots, out)
    return out


@app.command()
def seed() -> None:
    """Load reference data (customers, items, warehouses with stock, carriers) into a running mesh."""
    async def main() -> None:
        async with Stubs() as s:
            counts = await reference_data.load(s.erp, s.wms, s.tms)
        counts["reorder_points"] = await replenishment.seed_reorder_points()
        console.print("reference data loaded: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    _run(main())


@app.command()
def demo(orders: Annotated[int, typer.Option("--orders", "-n", min=1)] = 30,
         timeout: float = 300.0) -> None:
    """Push N sample orders through a running mesh and show how they end."""
    async def main() -> None:
        async with Stubs() as s:
            out = await _demo(s, orders, timeout)
        if out.timed_out:
            raise typer.Exit(1)
    _run(main())


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
        console.print(f"{order.order_id}: {_status(order.status)}, total "
                      f"{order.total.amount_minor / 100:.2f} {order.total.currency_code}, "
                      f"warehouse {order.warehouse_id}")
    _run(main())


@app.command()
def order(order_id: str) -> None:
    """Show an order and its timeline (every step, time and source system)."""
    async def main() -> None:
        async with Stubs() as s:
            o = (await s.ots.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10)).order
        console.print(f"[bold]{o.order_id}[/bold] {o.customer_id} — {_status(o.status)}"
                      + (f" ({o.status_reason})" if o.status_reason else ""))
        console.print(f"total {o.total.amount_minor / 100:.2f} {o.total.currency_code}, warehouse "
                      f"{o.warehouse_id}, carrier {o.carrier_id or '-'} {o.tracking_number}, invoice "
                      f"{o.invoice_id or '-'}, trace {o.trace_id or '-'}")
        if len(o.shipments) > 1 or o.cancelled_lines:
            for sh in o.shipments:
                console.print(f"shipment {sh.shipment_id}: " + ", ".join(f"{q.sku} x{q.quantity}" for q in sh.lines)
                              + f", {sh.carrier_id} {sh.tracking_number}, invoice {sh.invoice_id or '-'}")
            if o.cancelled_lines:
                console.print("cancelled: " + ", ".join(f"{q.sku} x{q.quantity}" for q in o.cancelled_lines))
        t = Table("time", "source", "step", "status", "detail")
        for e in o.timeline:
            t.add_row(e.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3], e.source, e.step,
                      _status(e.status), e.detail)
        console.print(t)
    _run(main())


@app.command("orders")
def list_orders(status: str = "", customer: str = "", limit: int = 50) -> None:
    """List orders (oldest first)."""
    async def main() -> None:
        req = pb.ListOrdersRequest(page_size=limit, customer_id=customer,
                                   status=pb.OrderStatus.Value(f"ORDER_STATUS_{status.upper()}") if status else 0)
        async with Stubs() as s:
            resp = await s.ots.ListOrders(req, timeout=10)
        t = Table("order", "customer", "status", "total", "reason")
        for o in resp.orders:
            t.add_row(o.order_id, o.customer_id, _status(o.status),
                      f"{o.total.amount_minor / 100:.2f} {o.total.currency_code}", o.status_reason)
        console.print(t)
    _run(main())


@app.command()
def cancel(order_id: str, reason: str = "") -> None:
    """Cancel an order (until it is packed); the steps already done are compensated."""
    async def main() -> None:
        async with Stubs() as s:
            o = (await s.ots.CancelOrder(pb.CancelOrderRequest(order_id=order_id, reason=reason),
                                         timeout=10)).order
        console.print(f"{o.order_id}: {_status(o.status)}")
    _run(main())


@app.command()
def stock(warehouse: str = "") -> None:
    """WMS stock next to the ERP inventory ledger, per SKU and warehouse."""
    async def main() -> None:
        async with Stubs() as s:
            wms = (await s.wms.ListInventory(wms_pb2.ListInventoryRequest(page_size=500, warehouse_id=warehouse),
                                             timeout=10)).positions
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
    _run(main())


@app.command()
def up(
    demo_orders: Annotated[int, typer.Option("--demo", help="sample orders to push through (0: none)")] = 30,
    data_dir: Annotated[Path | None, typer.Option(help="default: CROSSDOCK_DATA_DIR or .data")] = None,
    fresh: Annotated[bool, typer.Option(help="delete the data folder first")] = False,
    wait: Annotated[bool, typer.Option(help="keep serving until Ctrl-C")] = True,
    short_pick_rate: Annotated[float, typer.Option(
        help="share of autopilot picks that come up one unit short (warehouse exceptions in the demo)",
        min=0, max=1)] = 0.1,
) -> None:
    """Start nats-server and every service as its own process, seed, run a demo, keep serving."""
    import shutil

    from services.mesh.launcher import Mesh

    settings = load_settings()
    folder = data_dir or settings.data_dir
    if fresh and folder.exists():
        shutil.rmtree(folder)
    ports = {n: int(settings.addr(n).rsplit(":", 1)[1]) for n in SERVICES}
    ports["gateway-http"] = settings.gateway_http_port
    nats_port = int(settings.nats_url.rsplit(":", 1)[1])
    env = {"CROSSDOCK_WMS_SHORT_PICK_RATE": os.environ.get("CROSSDOCK_WMS_SHORT_PICK_RATE", str(short_pick_rate))}
    # Supervised: a service that crashes is restarted with back-off (see `crossdock status`).
    mesh = Mesh(folder, ports=ports, nats_port=nats_port, env=env, supervise=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status("starting the mesh") as status:
            mesh.start(progress=lambda msg: status.update(msg))
        console.print(f"mesh up: nats {mesh.nats.url}, " + ", ".join(
            f"{n} {p.addr}" for n, p in mesh.services.items()) + f"; logs in {mesh.data_dir / 'logs'}")
        if "gateway" in mesh.services:
            console.print(f"gateway HTTP/JSON API: {mesh.http_url()} (OpenAPI at {mesh.http_url()}/openapi.json; "
                          "API keys: `crossdock clients create`)")
        os.environ["CROSSDOCK_NATS_URL"] = mesh.nats.url
        seed()
        if demo_orders:
            async def main() -> None:
                async with Stubs() as s:
                    await _demo(s, demo_orders, timeout=300)
            _run(main())
        if wait:
            console.print("serving — try `.venv/bin/crossdock orders` or `crossdock order <id>`; "
                          "Ctrl-C stops everything")
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping"):
            mesh.stop()
        console.print("mesh stopped")


from . import dlq  # noqa: E402

app.add_typer(dlq.app, name="dlq")

from . import finance, returns  # noqa: E402

app.add_typer(returns.app, name="returns")

from . import exceptions  # noqa: E402

app.add_typer(exceptions.app, name="exceptions")
app.add_typer(finance.export_app, name="export")
app.command()(finance.reconcile)
from . import replenishment  # noqa: E402  (registers `crossdock replenishment`)
from . import status as status_commands  # noqa: E402, F401  (registers `crossdock status` and `crossdock trace`)


def main() -> None:
    app()


from . import clients  # noqa: E402, F401  (registers `crossdock clients`)
from . import erp as erp_commands  # noqa: E402

app.add_typer(erp_commands.app, name="erp")
