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
    app.add_consumer("ordertoship-erp", "ERP", ["erp.salesorder.>", "erp.invoice.posted"],
                     handlers.on_system_event)
    app.add_consumer("ordertoship-wms", "WMS", ["wms.fulfilment.>"], handlers.on_system_event)
    app.add_consumer("ordertoship-master-data", "ERP", ["erp.customer.upserted", "erp.item.upserted"],
                     handlers.on_master_data)
    app.add_consumer("ordertoship-tms", "TMS", ["tms.shipment.booked", "tms.shipment.booking_failed"],
                     handlers.on_system_event)


if __name__ == "__main__":
    run("ordertoship", metadata, MIGRATIONS, bootstrap)
