"""The mesh on PostgreSQL with its ERP on Tryton, Tryton itself on PostgreSQL too (a copy
of a prepared template database): orders to invoiced, checked in Tryton's books."""

from __future__ import annotations

import uuid

import pytest

from services.mesh.config import SERVICES
from tests.e2e.conftest import start_tryton_mesh
from tests.e2e.test_tryton import (  # noqa: F401
    books,
    test_a_handful_of_orders_shipped_and_invoiced_once_in_trytons_books,
)
from tests.helpers import PG_URL, pg_database, pg_drop
from tests.tryton_support import pg_tryton_template

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.tryton,
              # The first run on a PostgreSQL server prepares the template (module
              # activation: minutes on a loaded machine); later runs copy it.
              pytest.mark.timeout(1200),
              pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    names = {svc: f"crossdock_{svc}_{run}" for svc in SERVICES}
    urls = {svc: pg_database(PG_URL, name) for svc, name in names.items()}
    tryton_db = f"crossdock_tryton_{run}"
    template = pg_tryton_template(PG_URL, tmp_path_factory.mktemp("tryton-template"))
    try:
        m = start_tryton_mesh(tmp_path_factory, {
            "CROSSDOCK_ERP_TRYTON_DATABASE_URL": PG_URL, "CROSSDOCK_ERP_TRYTON_DATABASE": tryton_db,
            "CROSSDOCK_ERP_TRYTON_PG_TEMPLATE": template, "CROSSDOCK_ERP_TRYTON_TEMPLATE": ""},
            database_urls=urls)
        yield m
        m.stop()
    finally:
        for name in [*names.values(), tryton_db]:
            pg_drop(PG_URL, name)
