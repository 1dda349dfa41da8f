"""`crossdock clients create|list|revoke`: API clients of the gateway, through
its admin API (crossdock.admin.v1.ApiClientService at CROSSDOCK_GATEWAY_ADDR),
as the operator: the token in CROSSDOCK_GATEWAY_OPERATOR_TOKEN, else the one
`crossdock up` keeps in <data dir>/operator.token. A client's token is printed
once; the gateway keeps only a hash of its secret."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from crossdock.admin.v1 import api_clients_pb2 as pb

from .rpc import Stubs, console, run

app = typer.Typer(help="API clients of the gateway (keys, scopes, tenant)", no_args_is_help=True)

SCOPES = "orders:read, orders:write, returns:read, returns:write, lookups, admin"


@app.command("create")
def create(
    channel: Annotated[str, typer.Option(help="the channel: ecommerce, returns-portal, cs-desk, ...")],
    scopes: Annotated[str, typer.Option(help=f"comma-separated: {SCOPES}")],
    customer: Annotated[str, typer.Option(
        help="bind to this customer (tenant); empty = every customer")] = "",
    name: Annotated[str, typer.Option(help="a label")] = "",
    rate: Annotated[float, typer.Option(help="requests per second (0: the gateway default)")] = 0,
) -> None:
    """Create an API client; prints its token once."""
    wanted = [x.strip() for x in scopes.split(",") if x.strip()]

    async def main() -> pb.CreateApiClientResponse:
        async with Stubs() as s:
            return await s.api_clients.CreateApiClient(pb.CreateApiClientRequest(
                name=name, channel=channel, customer_id=customer, scopes=wanted, rate_limit=rate),
                metadata=s.operator(), timeout=10)

    made = run(main())
    c = made.api_client
    console.print(f"client {c.client_id} ({c.channel}, customer {c.customer_id or '*'}, "
                  f"scopes {' '.join(c.scopes)})")
    console.print("token (shown once, keep it secret):")
    print(made.token)


def _when(ts) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M") if ts.seconds else ""


@app.command("list")
def list_() -> None:
    """Every API client (never the keys)."""
    async def main() -> list[pb.ApiClient]:
        found, token = [], ""
        async with Stubs() as s:
            while True:
                page = await s.api_clients.ListApiClients(
                    pb.ListApiClientsRequest(page_size=500, page_token=token),
                    metadata=s.operator(), timeout=10)
                found += page.api_clients
                if not (token := page.next_page_token):
                    return found

    t = Table(title="API clients")
    for col in ("client", "name", "channel", "customer", "scopes", "rate/s", "created", "revoked"):
        t.add_column(col)
    for c in sorted(run(main()), key=lambda c: (c.create_time.seconds, c.create_time.nanos)):
        t.add_row(c.client_id, c.name, c.channel, c.customer_id or "*", " ".join(c.scopes),
                  str(c.rate_limit or "default"), _when(c.create_time), _when(c.revoke_time))
    console.print(t)


@app.command("revoke")
def revoke(client_id: str) -> None:
    """Revoke a client's key (effective within seconds)."""
    async def main() -> None:
        async with Stubs() as s:
            await s.api_clients.RevokeApiClient(pb.RevokeApiClientRequest(client_id=client_id),
                                                metadata=s.operator(), timeout=10)
    run(main())
    console.print(f"revoked {client_id}")
