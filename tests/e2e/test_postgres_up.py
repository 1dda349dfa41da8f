"""`crossdock up --postgres URL`'s mesh: one PostgreSQL server, a database per service, made
by the launcher (created when missing, each migrated by its service), an order to invoiced."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from gateway.store import metadata as gateway_tables
from services.erp.store import metadata as erp_tables
from services.mesh.config import SERVICES
from services.mesh.databases import database_name, drop_service_databases, service_databases
from services.mesh.launcher import Mesh
from services.mesh.store import sync_url
from services.ordertoship.store import metadata as ordertoship_tables
from services.returns.store import metadata as returns_tables
from services.tms.store import metadata as tms_tables
from services.wms.store import metadata as wms_tables
from tests.e2e.conftest import FAST, Stubs, make_world
from tests.e2e.test_order_to_ship import submit_all, wait_all
from tests.helpers import PG_URL

pytestmark = [pytest.mark.e2e, pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")]

TABLES = {"erp": erp_tables, "wms": wms_tables, "tms": tms_tables, "ordertoship": ordertoship_tables,
          "returns": returns_tables, "gateway": gateway_tables}


def tables_in(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revisions_in(url: str) -> list[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return [r for (r,) in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


@pytest.fixture
def prefix():
    p = f"crossdock_t{uuid.uuid4().hex[:8]}"  # a test run of its own: no collision with others
    yield p
    drop_service_databases(PG_URL, p)


async def test_up_on_postgres_gives_every_service_its_own_database(tmp_path, prefix):
    assert set(TABLES) == set(SERVICES)
    # One of them there already (a second `crossdock up`): used as it is, the others created.
    existing = service_databases(PG_URL, prefix, services=("erp",))
    mesh = Mesh(tmp_path / "mesh", env=FAST, postgres=PG_URL, postgres_prefix=prefix)
    try:
        mesh.start()
        assert mesh.database_urls["erp"] == existing["erp"]
        stubs = Stubs(mesh)
        try:
            world = await make_world(stubs)
            [order_id] = await submit_all(stubs, [world.order({world.skus[0]: 2})])
            orders = await wait_all(stubs, [order_id], timeout=120)
        finally:
            await stubs.close()
        urls = dict(mesh.database_urls)
    finally:
        mesh.stop()
    assert orders[order_id].total.amount_minor == 2 * world.prices[world.skus[0]]

    assert {s: make_url(u).database for s, u in urls.items()} == {
        s: database_name(prefix, s) for s in SERVICES}
    assert not list((tmp_path / "mesh").glob("*.db")), "a service fell back to SQLite"
    own = {s: set(m.tables) for s, m in TABLES.items()}
    for service, url in urls.items():
        found = tables_in(url)
        assert own[service] <= found, (service, own[service] - found)
        others = set().union(*(own[o] for o in SERVICES if o != service)) - own[service]
        assert not found & others, (service, found & others)  # no other service's tables here
        assert len(revisions_in(url)) == 1, service  # its own alembic_version, migrated to head
    # Each service's rows in its own database: the order's invoice in ERP's, its shipment in TMS's.
    for service, table in (("erp", "invoices"), ("tms", "shipments")):
        engine = create_engine(sync_url(urls[service]))
        try:
            with engine.connect() as conn:
                assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE order_id = :o"),
                                    {"o": order_id}).scalar() == 1, service
        finally:
            engine.dispose()
