"""`python -m services.tms`: the TMS system service."""

from __future__ import annotations

from pathlib import Path

from crossdock.tms.v1 import tms_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers
from .grpc_api import TmsServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(app: ServiceApp) -> None:
    app.add_servicer(tms_pb2_grpc.add_TmsServiceServicer_to_server, TmsServicer(app.store),
                     "crossdock.tms.v1.TmsService")
    app.add_consumer("tms-commands", handlers.COMMANDS)
    app.add_consumer("tms-wms-events", handlers.WMS_EVENTS)
    app.add_consumer("tms-master-data", handlers.MASTER_DATA)


if __name__ == "__main__":
    run("tms", metadata, MIGRATIONS, bootstrap)
