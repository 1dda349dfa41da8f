"""Replenishment on the Tryton ERP backend: the built-in ERP's end-to-end tests
(imported: the same functions) on a mesh whose ERP is Tryton: reorder points as Tryton
order points, a backorder released by a purchase, a transfer from another warehouse."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import start_tryton_mesh
from tests.e2e.test_replenishment import (  # noqa: F401  (the same tests and fixtures, on this mesh)
    LEAD_TIMES,
    repl,
    requests_log,
    test_backorder_released_by_a_purchase_and_invoiced,
    test_reorder_points_are_master_data,
    test_transfer_from_another_warehouse_releases_a_backorder,
)

pytestmark = [pytest.mark.e2e, pytest.mark.tryton]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_tryton_mesh(tmp_path_factory, LEAD_TIMES)
    yield m
    m.stop()
