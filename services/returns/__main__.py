"""`python -m services.returns`: the return-to-credit process service.

Also hosts inventory reconciliation (ERP ledger vs WMS stock), the other
batch process across ERP and WMS: on request (ReconciliationService) and on
a schedule (CROSSDOCK_RECONCILE_INTERVAL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import structlog

from crossdock.reconciliation.v1 import reconciliation_pb2_grpc
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import handlers, reconciliation, service
from .grpc_api import ReconciliationServicer, ReturnsServicer
from .store import metadata

MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger()


def receive_window_timers(app: ServiceApp) -> Callable[[asyncio.Event], Awaitable[None]]:
    """Fires the durable receive-window timers kept in the store (a restart loses none)."""
    async def receive_window_timers(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await service.expire_due(app.store)
            except Exception:  # noqa: BLE001 - the timers stay in the store; try again
                log.exception("returns.timers.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), app.settings.returns_timer_interval)

    return receive_window_timers


def scheduled_reconciliation(app: ServiceApp) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def scheduled_reconciliation(stop: asyncio.Event) -> None:
        s = app.settings
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.reconcile_interval)
            if stop.is_set():
                break
            try:
                await reconciliation.reconcile(app.store, app.clients, repair=s.reconcile_repair,
                                               grace=timedelta(seconds=s.reconcile_grace),
                                               trigger="schedule")
            except Exception:  # noqa: BLE001 - the next run tries again
                log.exception("reconciliation.scheduled_run_failed")

    return scheduled_reconciliation


def bootstrap(app: ServiceApp) -> None:
    app.add_servicer(returns_pb2_grpc.add_ReturnsServiceServicer_to_server,
                     ReturnsServicer(app.store, app.clients, app.settings),
                     "crossdock.returns.v1.ReturnsService")
    app.add_servicer(reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server,
                     ReconciliationServicer(app.store, app.clients, app.settings),
                     "crossdock.reconciliation.v1.ReconciliationService")
    app.add_consumer("returns-erp", handlers.ERP_EVENTS)
    app.add_consumer("returns-wms", handlers.WMS_EVENTS)
    app.add_loop(receive_window_timers(app))
    if app.settings.reconcile_interval:
        app.add_loop(scheduled_reconciliation(app))


if __name__ == "__main__":
    run("returns", metadata, MIGRATIONS, bootstrap)
