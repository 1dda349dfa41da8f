"""The whole mesh on PostgreSQL: a database per service, orders to invoiced."""

from __future__ import annotations

import uuid

import pytest

from services.mesh.config import SERVICES
from tests.e2e.conftest import Stubs, make_world, start_mesh
from tests.e2e.test_order_to_ship import check_books, random_orders, submit_all, wait_all
from tests.helpers import PG_URL, pg_database, pg_drop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")]


@pytest.fixture(scope="module")
def pg_mesh(tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    names = {svc: f"crossdock_{svc}_{run}" for svc in SERVICES}
    urls = {svc: pg_database(PG_URL, name) for svc, name in names.items()}
    try:
        m = start_mesh(tmp_path_factory, database_urls=urls)
        yield m
        m.stop()
    finally:
        for name in names.values():
            pg_drop(PG_URL, name)


async def test_orders_complete_on_postgresql(pg_mesh):
    stubs = Stubs(pg_mesh)
    try:
        world = await make_world(stubs)
        order_ids = await submit_all(stubs, random_orders(world, 15, seed=3))
        orders = await wait_all(stubs, order_ids)
        await check_books(stubs, world, orders)
    finally:
        await stubs.close()
