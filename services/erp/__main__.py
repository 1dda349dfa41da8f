"""`python -m services.erp`: the ERP system service."""

from __future__ import annotations

from pathlib import Path

from crossdock.erp.v1 import erp_pb2_grpc, replenishment_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers, replenishment
from .grpc_api import ErpServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(app: ServiceApp) -> None:
    app.add_servicer(erp_pb2_grpc.add_ErpServiceServicer_to_server, ErpServicer(app.store),
                     "crossdock.erp.v1.ErpService")
    # Postings into ERP (sales orders, invoices, ledger updates) respect the
    # ERP's API rate limit (CROSSDOCK_ERP_POSTING_RATE); the rest waits in the stream.
    app.add_consumer("erp-commands", handlers.COMMANDS, rate_limited=True)
    app.add_consumer("erp-wms-events", handlers.WMS_EVENTS, rate_limited=True,
                     batch_handler=handlers.on_inventory_movements)
    # Replenishment: plan purchases/transfers for WMS requests; deliver them when due.
    app.add_servicer(replenishment_pb2_grpc.add_ReplenishmentServiceServicer_to_server,
                     replenishment.ReplenishmentServicer(app.store), "crossdock.erp.v1.ReplenishmentService")
    app.add_consumer("erp-replenishment", handlers.replenishment_events(app.settings))
    app.add_loop(replenishment.delivery_loop(app.store, app.settings))


if __name__ == "__main__":
    run("erp", metadata, MIGRATIONS, bootstrap)
