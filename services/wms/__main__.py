"""`python -m services.wms`: the WMS system service."""

from __future__ import annotations

from pathlib import Path

from crossdock.wms.v1 import wms_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers
from .autopilot import Mishaps, ReturnsAutopilot, autopilot, returns_autopilot
from .fulfilment import Delays
from .grpc_api import WmsServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(app: ServiceApp) -> None:
    delays = Delays.from_settings(app.settings)
    pilot = ReturnsAutopilot.from_settings(app.settings)
    app.add_servicer(wms_pb2_grpc.add_WmsServiceServicer_to_server,
                     WmsServicer(app.store, delays, pilot), "crossdock.wms.v1.WmsService")
    app.add_consumer("wms-commands", handlers.commands(delays, pilot))
    app.add_consumer("wms-master-data", handlers.MASTER_DATA)
    app.add_consumer("wms-reorder-points", handlers.REORDER_POINTS)
    if app.settings.wms_autopilot:
        app.add_loop(autopilot(app.store, delays, Mishaps.from_settings(app.settings)))
    if pilot.enabled:
        app.add_loop(returns_autopilot(app.store, pilot))


if __name__ == "__main__":
    run("wms", metadata, MIGRATIONS, bootstrap)
