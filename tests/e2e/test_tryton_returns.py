"""Return-to-credit on the Tryton ERP backend: the built-in ERP's end-to-end tests of a
full, a partial and a refused return (imported: the same functions) run on a mesh
whose ERP is Tryton; the RMA is a Tryton credit note, credited when it is posted."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.e2e.conftest import make_world, start_tryton_mesh, tryton_books
from tests.e2e.returns_support import ReturnsStubs, invoiced_order, return_request, wait_return
from tests.e2e.test_returns import (  # noqa: F401  (the same tests, on this module's mesh)
    NOT_NEEDED,
    RS,
    at_dock,
    inspect,
    test_partial_return_credits_only_what_was_accepted,
    test_return_refused_at_inspection_credits_nothing,
)

pytestmark = [pytest.mark.e2e, pytest.mark.tryton]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_tryton_mesh(tmp_path_factory, {"CROSSDOCK_WMS_RETURN_AUTOPILOT": "false",
                                             "CROSSDOCK_RETURNS_TIMER_INTERVAL": "0.2"})
    yield m
    m.stop()


@pytest.fixture
async def rs(mesh):
    s = ReturnsStubs(mesh)
    yield s
    await s.close()


async def test_a_return_is_credited_by_one_tryton_credit_note(stubs, rs, mesh):
    world = await make_world(stubs)
    a = world.skus[0]
    order = await invoiced_order(stubs, world, {a: 3})  # 3 x 10.00
    r = (await rs.returns.CreateReturn(return_request(order, (1, 3, NOT_NEEDED)))).customer_return
    r = await at_dock(rs, stubs, r)
    await inspect(stubs, r, (1, 3, 0, 0))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_CREDITED)
    assert r.credited.amount_minor == 3000
    books = await tryton_books(mesh)
    try:
        notes = await books.search_read("account.invoice", [("reference", "=", r.return_id)],
                                        ["state", "total_amount", "description"])
        assert [(n["state"], n["total_amount"], n["description"]) for n in notes] == [
            ("posted", Decimal("-30.00"), r.rma_number)]
        (party,) = await books.search_read("party.party", [("code", "=", world.customer_id)], ["receivable"])
        assert party["receivable"] == Decimal("0")  # invoiced 30.00, credited 30.00
    finally:
        await books.close()
