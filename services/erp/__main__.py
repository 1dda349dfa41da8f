"""`python -m services.erp`: the ERP system service (its backend: CROSSDOCK_ERP_BACKEND)."""

from __future__ import annotations

from pathlib import Path

from crossdock.erp.v1 import erp_pb2_grpc, replenishment_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers
from .backend import ErpBackend
from .builtin import builtin_backend
from .grpc_api import ErpServicer, ReplenishmentServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"
TRYTON_MIGRATIONS = Path(__file__).parent / "tryton" / "migrations"


def serve_backend(app: ServiceApp, erp: ErpBackend) -> None:
    """The ERP contract (gRPC servicers, consumers) in front of one backend."""
    app.add_servicer(erp_pb2_grpc.add_ErpServiceServicer_to_server, ErpServicer(erp),
                     "crossdock.erp.v1.ErpService")
    # Postings into ERP (sales orders, invoices, ledger updates) respect the
    # ERP's API rate limit (CROSSDOCK_ERP_POSTING_RATE); the rest waits in the stream.
    app.add_consumer("erp-commands", handlers.commands(erp), rate_limited=True)
    app.add_consumer("erp-wms-events", handlers.wms_events(erp), rate_limited=True,
                     batch_handler=handlers.inventory_movements(erp))
    # Replenishment: plan purchases/transfers for WMS requests; deliver them when due.
    app.add_servicer(replenishment_pb2_grpc.add_ReplenishmentServiceServicer_to_server,
                     ReplenishmentServicer(erp), "crossdock.erp.v1.ReplenishmentService")
    app.add_consumer("erp-replenishment", handlers.replenishment_events(erp))
    for loop in erp.loops:
        app.add_loop(loop)


def bootstrap(app: ServiceApp) -> None:
    """The backend CROSSDOCK_ERP_BACKEND names: the built-in reference ERP (the embedded
    default) or the adapter to a Tryton server."""
    if app.settings.erp_backend == "tryton":
        from .tryton import tryton_backend

        serve_backend(app, tryton_backend(app.store, app.settings))
    else:
        serve_backend(app, builtin_backend(app.store, app.settings))


def main() -> None:
    from services.mesh.config import load_settings

    if load_settings().erp_backend == "tryton":
        from .tryton.store import metadata as adapter_metadata

        run("erp", adapter_metadata, TRYTON_MIGRATIONS, bootstrap)
    else:
        run("erp", metadata, MIGRATIONS, bootstrap)


if __name__ == "__main__":
    main()
