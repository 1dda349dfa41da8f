"""`crossdock`: run the mesh, load reference data, submit and follow orders.

Every command module has its own ``typer.Typer()``; they are put together here,
in one place, and reach the mesh only through its gRPC APIs (``rpc.Stubs``).
"""

from __future__ import annotations

import typer

from . import (
    clients,
    demo,
    dlq,
    erp,
    exceptions,
    finance,
    orders,
    replenishment,
    returns,
    status,
    users,
)

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False)
# Commands of the root: up, seed, demo; submit, order, orders, cancel, stock; reconcile; status, trace.
for commands in (demo.app, orders.app, finance.app, status.app):
    app.add_typer(commands)
app.add_typer(dlq.app, name="dlq")
app.add_typer(returns.app, name="returns")
app.add_typer(exceptions.app, name="exceptions")
app.add_typer(finance.export_app, name="export")
app.add_typer(replenishment.app, name="replenishment")
app.add_typer(clients.app, name="clients")
app.add_typer(erp.app, name="erp")
app.add_typer(users.app, name="users")


def main() -> None:
    app()
