"""Returns message handlers: every ERP and WMS fact about a return."""

from __future__ import annotations

import structlog

from services.mesh.bus import Envelope
from services.mesh.store import Tx

from . import service

log = structlog.get_logger()


async def on_system_event(env: Envelope, tx: Tx) -> None:
    if not await service.advance(tx, env.subject, env.body):
        log.info("event.for_unknown_return", subject=env.subject, id=env.id, key=env.key)
