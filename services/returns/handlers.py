"""Returns message handlers: a dispatch table per consumer (subject -> handler).

Every ERP and WMS fact about a return goes to the workflow
(``service.advance`` -> ``workflow.react``). The subjects each table must
cover are those routed to its consumer in ``services/mesh/contracts.py``; a
subject missing here is refused at start.
"""

from __future__ import annotations

import structlog

from services.mesh.bus import Envelope, Handlers
from services.mesh.store import Tx

from . import service

log = structlog.get_logger()


async def on_system_event(env: Envelope, tx: Tx) -> None:
    if not await service.advance(tx, env.subject, env.body):
        log.info("event.for_unknown_return", subject=env.subject, id=env.id, key=env.key)


def _to_workflow(*subjects: str) -> Handlers:
    return dict.fromkeys(subjects, on_system_event)


ERP_EVENTS = _to_workflow(
    "erp.return.authorized", "erp.return.refused", "erp.return.cancelled",
    "erp.creditmemo.posted", "erp.creditmemo.refused")
WMS_EVENTS = _to_workflow(
    "wms.return.expected", "wms.return.rejected", "wms.return.received", "wms.return.inspected",
    "wms.return.cancelled", "wms.return.cancel_refused")
