"""The stores the console changed (the gateway's; order-to-ship's and returns' timelines) are
exactly what their migrations make: autogenerate finds no difference after an upgrade."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from services.mesh.store import migrate


@pytest.mark.parametrize("package", ["gateway", "services.ordertoship", "services.returns"])
def test_migrations_match_the_tables(tmp_path, package):
    module = importlib.import_module(f"{package}.store")
    migrations = Path(importlib.import_module(package).__file__).parent / "migrations"
    url = f"sqlite:///{tmp_path}/store.db"
    migrate(url, migrations)
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), module.metadata)
    engine.dispose()
    assert diff == [], diff
