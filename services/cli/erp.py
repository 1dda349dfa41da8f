"""`crossdock erp status|tryton`: the ERP behind the mesh (CROSSDOCK_ERP_BACKEND) — which
backend, whether its system of record answers, the dead letters of the ERP consumers —
and a standalone Tryton server for the Tryton backend (what `crossdock up` starts by
itself when CROSSDOCK_ERP_BACKEND=tryton)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from crossdock.admin.v1 import admin_pb2, admin_pb2_grpc
from services.mesh.config import load_settings

from .rpc import Stubs

app = typer.Typer(help=__doc__, no_args_is_help=True)
console = Console()

ERP_CONSUMERS = ("erp-commands", "erp-wms-events", "erp-replenishment")


async def erp_dead_letters(stubs: Stubs) -> int:
    """Dead letters of the ERP consumers (a cut-over refuses to start while there are any)."""
    async with stubs:
        stub = admin_pb2_grpc.DeadLetterServiceStub(stubs.channel("erp"))
        total = 0
        for consumer in ERP_CONSUMERS:
            resp = await stub.ListDeadLetters(
                admin_pb2.ListDeadLettersRequest(consumer=consumer, page_size=1), timeout=10
            )
            total += resp.total
        return total


@app.command()
def status() -> None:
    """Which ERP backend this configuration names, whether it answers, and the ERP's dead letters."""
    s = load_settings()

    async def main() -> None:
        console.print(
            f"ERP backend: [bold]{s.erp_backend}[/bold] (CROSSDOCK_ERP_BACKEND), ERP at {s.erp_addr}"
        )
        if s.erp_backend == "tryton":
            from services.erp.tryton.rpc import Tryton, TrytonError

            rpc = Tryton(s.erp_tryton_url, s.erp_tryton_database, s.erp_tryton_user, s.erp_tryton_password)
            try:
                company = (await rpc.call("model.res.user.get_preferences", True)).get("company.rec_name")
                console.print(
                    f"Tryton {s.erp_tryton_url} database {s.erp_tryton_database}: answers as "
                    f"{s.erp_tryton_user} (company {company})"
                )
            except TrytonError as exc:
                console.print(f"[red]Tryton {s.erp_tryton_url} does not answer: {exc}[/red]")
            finally:
                await rpc.close()
        try:
            dead = await erp_dead_letters(Stubs(s))
            console.print(
                f"ERP dead letters: {dead}" + (" [red](see `crossdock dlq list`)[/red]" if dead else "")
            )
        except grpc.aio.AioRpcError as err:
            console.print(f"[red]ERP does not answer: {err.code().name}[/red]")

    asyncio.run(main())


@app.command()
def tryton(
    data_dir: Annotated[Path | None, typer.Option(help="default: CROSSDOCK_DATA_DIR")] = None,
    port: Annotated[int, typer.Option(help="0: CROSSDOCK_ERP_TRYTON_PORT, else 8000")] = 0,
) -> None:
    """Prepare (first start: create, activate, set up) and serve a Tryton server for the Tryton backend."""
    from services.erp.tryton.server import TrytonServer

    s = load_settings()
    server = TrytonServer(
        data_dir or s.data_dir,
        database=s.erp_tryton_database,
        database_url=s.erp_tryton_database_url,
        port=port or s.erp_tryton_port or 8000,
        workers=s.erp_tryton_workers,
        password=s.erp_tryton_password,
        template=Path(s.erp_tryton_template) if s.erp_tryton_template else None,
    )
    with console.status("preparing the Tryton database"):
        server.prepare()
    console.print(
        f"trytond serving {server.database} on {server.start()} ({server.workers} worker(s)); Ctrl-C stops it"
    )
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
