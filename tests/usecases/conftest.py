"""The use-case tier: a service's use cases called in-process against a real
SQLite store made from that service's own migrations.

No broker and no process: the outbox plays the part of the message bus
(cosmicpython's "fake bus"), so a test asserts on the state and on the
messages the use case left to be published. A test here takes milliseconds.

    async def test_something(usecase_store):
        store = await usecase_store("wms")
        async with store.transaction() as tx:
            ...
        assert [m.subject for m in await outbox(store)] == [...]
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from services.mesh.store import Store, migrate

from .support import Outbox

# Migrating a fresh database costs ~0.1-0.3 s per service; do it once per
# session and copy the file for each test.
_TEMPLATES: dict[str, Path] = {}


@pytest.fixture(scope="session")
def _template_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("usecase-templates")


@pytest.fixture
async def usecase_store(tmp_path: Path, _template_dir: Path):
    """Factory: ``store = await usecase_store("wms")`` gives a migrated SQLite Store."""
    stores: list[Store] = []

    async def make(service: str) -> Store:
        package = importlib.import_module(f"services.{service}")
        migrations = Path(package.__file__).parent / "migrations"
        metadata = importlib.import_module(f"services.{service}.store").metadata
        template = _TEMPLATES.get(service)
        if template is None:
            template = _template_dir / f"{service}.sqlite"
            migrate(f"sqlite:///{template}", migrations)
            _TEMPLATES[service] = template
        db = tmp_path / f"{service}-{len(stores)}.sqlite"
        db.write_bytes(template.read_bytes())
        store = Store(service, f"sqlite:///{db}", metadata)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
def outbox():
    """``await outbox(store)`` -> the messages left to publish, decoded, oldest first."""
    return Outbox.read
