"""`crossdock up|seed|demo`: run a whole mesh on this machine, load reference
data into a running mesh, push sample orders through it."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from services.mesh.config import SERVICES, load_settings

from . import reference_data, replenishment, returns, users, workload
from .orders import status_name
from .rpc import Stubs, console, run

app = typer.Typer()


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
        example = next(o for o in out.orders.values() if status_name(o.status) == status)
        reason = f" — {example.status_reason}" if example.status_reason else ""
        table.add_row(labels.get(status, status.lower()), str(count), f"{example.order_id}{reason}")
    returns.add_outcome_rows(table, out)
    return table


def _name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix) if value else "OPEN"


async def run_demo(stubs: Stubs, n: int, timeout: float) -> workload.Outcome:
    requests = workload.sample_requests(n)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        sub = progress.add_task("submitted", total=len(requests))
        done = progress.add_task("settled  ", total=len(requests))
        out = await workload.run_workload(
            stubs.ots, requests, timeout=timeout,
            on_submitted=lambda k: progress.update(sub, completed=k),
            on_settled=lambda k: progress.update(done, completed=k))
        await returns.demo_returns(stubs.returns, out, progress)
    console.print(outcome_table(out))
    excs = (await stubs.ots.ListExceptions(pb.ListExceptionsRequest(page_size=500), timeout=10)).exceptions
    if excs:
        kinds = Counter(f"{_name(pb.ExceptionKind, e.kind, 'EXCEPTION_KIND_')} -> "
                        f"{_name(pb.ResolutionAction, e.action, 'RESOLUTION_ACTION_')}" for e in excs)
        console.print("warehouse/carrier exceptions: "
                      + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
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
            counts["reorder_points"] = await replenishment.seed_reorder_points(s.replenishment)
        console.print("reference data loaded: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    run(main())


@app.command()
def demo(orders: Annotated[int, typer.Option("--orders", "-n", min=1)] = 30,
         timeout: float = 300.0) -> None:
    """Push N sample orders through a running mesh and show how they end."""
    async def main() -> None:
        async with Stubs() as s:
            out = await run_demo(s, orders, timeout)
        if out.timed_out:
            raise typer.Exit(1)
    run(main())


@app.command()
def up(
    demo_orders: Annotated[int, typer.Option("--demo", help="sample orders to push through (0: none)")] = 30,
    data_dir: Annotated[Path | None, typer.Option(help="default: CROSSDOCK_DATA_DIR or .data")] = None,
    fresh: Annotated[bool, typer.Option(help="delete the data folder first")] = False,
    wait: Annotated[bool, typer.Option(help="keep serving until Ctrl-C")] = True,
    short_pick_rate: Annotated[float, typer.Option(
        help="share of autopilot picks that come up one unit short (warehouse exceptions in the demo)",
        min=0, max=1)] = 0.1,
    erp: Annotated[str, typer.Option(
        "--erp",
        help="the ERP's system of record: builtin or tryton (default: CROSSDOCK_ERP_BACKEND, else builtin)",
    )] = "",
    postgres: Annotated[str, typer.Option(
        "--postgres",
        help="a PostgreSQL server, e.g. postgresql://postgres@127.0.0.1:5432/ : every service gets "
             "its own database on it, <prefix>_<service>, created when missing (default: SQLite files)",
    )] = "",
    postgres_prefix: Annotated[str, typer.Option(
        "--postgres-prefix", help="the service databases' name prefix (with --postgres)",
    )] = "crossdock",
    tls: Annotated[bool, typer.Option(
        "--tls", help="mutual TLS between the internal services: a mesh CA and certificates made "
                      "under <data dir>/tls (the gateway's public port stays plaintext, API keys)",
    )] = False,
) -> None:
    """Start nats-server and every service as its own process, seed, run a demo, keep serving."""
    import shutil

    from services.mesh.databases import DatabaseServerError, database_name, drop_service_databases
    from services.mesh.launcher import Mesh

    if erp:
        if erp not in ("builtin", "tryton"):
            raise typer.BadParameter("builtin or tryton", param_hint="--erp")
        os.environ["CROSSDOCK_ERP_BACKEND"] = erp  # the launcher and every service read it
    settings = load_settings()
    folder = data_dir or settings.data_dir
    if postgres:
        try:
            database_name(postgres_prefix, "erp")
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--postgres-prefix") from None
    if fresh and folder.exists():
        shutil.rmtree(folder)
    ports = {n: int(settings.addr(n).rsplit(":", 1)[1]) for n in SERVICES}
    ports["gateway-http"] = settings.gateway_http_port
    nats_port = int(settings.nats_url.rsplit(":", 1)[1])
    env = {"CROSSDOCK_WMS_SHORT_PICK_RATE": os.environ.get("CROSSDOCK_WMS_SHORT_PICK_RATE",
                                                           str(short_pick_rate))}
    # Supervised: a service that crashes is restarted with back-off (see `crossdock status`).
    mesh = Mesh(folder, ports=ports, nats_port=nats_port, env=env, supervise=True,
                postgres=postgres, postgres_prefix=postgres_prefix, tls=tls)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if fresh and postgres:
            drop_service_databases(postgres, postgres_prefix)  # created again, empty, at start
        with console.status("starting the mesh") as status:
            mesh.start(progress=lambda msg: status.update(msg))
        console.print(f"mesh up: nats {mesh.nats.url}, " + ", ".join(
            f"{n} {p.addr}" for n, p in mesh.services.items()) + f"; logs in {mesh.data_dir / 'logs'}")
        if postgres:
            console.print("stores: PostgreSQL, one database per service: " + ", ".join(
                f"{n} {database_name(postgres_prefix, n)}" for n in SERVICES))
        os.environ["CROSSDOCK_NATS_URL"] = mesh.nats.url
        os.environ["CROSSDOCK_DATA_DIR"] = str(folder)
        if tls:  # this process's own calls (seed, demo) show the operator's certificate
            os.environ["CROSSDOCK_TLS_DIR"] = mesh.extra_env["CROSSDOCK_TLS_DIR"]
            console.print(f"mutual TLS inside the mesh: certificates in {mesh.data_dir / 'tls'}; "
                          f"other shells: export CROSSDOCK_TLS_DIR={mesh.data_dir / 'tls'}")
        if "gateway" in mesh.services:
            console.print(f"gateway HTTP/JSON API: {mesh.http_url()} (OpenAPI at {mesh.http_url()}"
                          "/openapi.json); operator token in "
                          f"{mesh.data_dir / 'operator.token'} (mode 0600): API keys with "
                          "`crossdock clients create`")
        seed()
        if "gateway" in mesh.services:
            async def people() -> list[tuple[str, str, str]]:
                async with Stubs() as s:
                    return await users.ensure_demo_users(s)
            console.print(users.demo_users_table(run(people()), f"{mesh.http_url()}/console"))
        if demo_orders:
            async def main() -> None:
                async with Stubs() as s:
                    await run_demo(s, demo_orders, timeout=300)
            run(main())
        if wait:
            console.print("serving — try `.venv/bin/crossdock orders` or `crossdock order <id>`; "
                          "Ctrl-C stops everything")
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    except DatabaseServerError as exc:  # the server of --postgres: unreachable, refused
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        with console.status("stopping"):
            mesh.stop()
        console.print("mesh stopped")
