"""`python -m services.ordertoship`: the order-to-ship process service."""

from __future__ import annotations

from pathlib import Path

from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers
from .grpc_api import OrderToShipServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(app: ServiceApp) -> None:
    app.add_servicer(order_to_ship_pb2_grpc.add_OrderToShipServiceServicer_to_server,
                     OrderToShipServicer(app.store, app.clients, app.settings),
                     "crossdock.ordertoship.v1.OrderToShipService")
    app.add_consumer("ordertoship-erp", handlers.ERP_EVENTS)
    app.add_consumer("ordertoship-wms", handlers.WMS_EVENTS)
    app.add_consumer("ordertoship-master-data", handlers.MASTER_DATA)
    app.add_consumer("ordertoship-tms", handlers.TMS_EVENTS)

if __name__ == "__main__":
    run("ordertoship", metadata, MIGRATIONS, bootstrap)
