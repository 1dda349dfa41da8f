"""`crossdock clients create|list|revoke`: API clients of the gateway.

Works on the gateway's store directly (CROSSDOCK_DATABASE_URL, or the SQLite
file under CROSSDOCK_DATA_DIR): the token is printed once and only its hash kept.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from gateway.__main__ import MIGRATIONS
from gateway.governance import SCOPES, create_client, list_clients, revoke_client
from gateway.store import metadata
from services.mesh.config import load_settings
from services.mesh.store import Store

from . import app as root_app
from . import console

app = typer.Typer(help="API clients of the gateway (keys, scopes, tenant)", no_args_is_help=True)


async def _with_store(fn):
    s = load_settings()
    store = Store("gateway", s.store_url("gateway"), metadata)
    try:
        await store.migrate(MIGRATIONS)
        return await fn(store)
    finally:
        await store.close()


@app.command("create")
def create(
    channel: Annotated[str, typer.Option(help="the channel: ecommerce, returns-portal, cs-desk, ...")],
    scopes: Annotated[str, typer.Option(help=f"comma-separated: {', '.join(SCOPES)}")],
    customer: Annotated[str, typer.Option(help="bind to this customer (tenant); empty = every customer")] = "",
    name: Annotated[str, typer.Option(help="a label")] = "",
    rate: Annotated[float, typer.Option(help="requests per second (0: the gateway default)")] = 0,
) -> None:
    """Create an API client; prints its token once."""
    wanted = [x.strip() for x in scopes.split(",") if x.strip()]
    try:
        client_id, token = asyncio.run(_with_store(lambda st: create_client(
            st, name=name or channel, channel=channel, customer_id=customer, scopes=wanted, rate_limit=rate)))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"client {client_id} ({channel}, customer {customer or '*'}, scopes {' '.join(wanted)})")
    console.print("token (shown once, keep it secret):")
    print(token)


@app.command("list")
def list_() -> None:
    """Every API client (never the keys)."""
    rows = asyncio.run(_with_store(list_clients))
    t = Table(title="API clients")
    for col in ("client", "name", "channel", "customer", "scopes", "rate/s", "created", "revoked"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["client_id"], r["name"], r["channel"], r["customer_id"] or "*", r["scopes"],
                  str(r["rate_limit"] or "default"), f"{r['created_at']:%Y-%m-%d %H:%M}",
                  f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    console.print(t)


@app.command("revoke")
def revoke(client_id: str) -> None:
    """Revoke a client's key (effective within seconds)."""
    if not asyncio.run(_with_store(lambda st: revoke_client(st, client_id))):
        console.print(f"[red]no active client {client_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {client_id}")


root_app.add_typer(app, name="clients")
