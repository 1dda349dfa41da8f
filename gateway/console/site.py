"""The console put together: every view on one sub-application (mounted at /console)."""

from __future__ import annotations

from fastapi import FastAPI

from . import signin
from .web import create_app

VIEWS = [signin.add]


def build(core) -> FastAPI:
    from . import audit, deadletters, exceptions, health, inventory, orders

    return create_app(core, [*VIEWS, orders.add, exceptions.add, deadletters.add, inventory.add, health.add,
                             audit.add])
