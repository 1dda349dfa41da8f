"""Warehouse exceptions on the Tryton ERP backend: the built-in ERP's end-to-end tests
of partial shipments (two shipments, two invoices) and cancelled lines (their credit
released), imported and run on a mesh whose ERP is Tryton, handhelds at the dock."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import start_tryton_mesh
from tests.e2e.test_exceptions import (  # noqa: F401  (the same tests, on this module's mesh)
    HANDHELDS,
    test_a_damaged_line_is_cancelled_by_the_customers_policy_and_never_invoiced,
    test_short_pick_ships_partially_then_a_receipt_releases_the_rest_each_shipment_invoiced_once,
)

pytestmark = [pytest.mark.e2e, pytest.mark.tryton]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_tryton_mesh(tmp_path_factory, HANDHELDS)
    yield m
    m.stop()
