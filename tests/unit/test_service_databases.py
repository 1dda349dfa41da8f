"""The names of the per-service PostgreSQL databases of `crossdock up --postgres`."""

from __future__ import annotations

import pytest

from services.mesh.databases import database_name


def test_a_database_per_service_under_the_prefix():
    assert database_name("crossdock", "erp") == "crossdock_erp"
    assert database_name("ci_run7", "ordertoship") == "ci_run7_ordertoship"


@pytest.mark.parametrize("prefix", ["", "Crossdock", "a-b", 'x"; DROP DATABASE y; --', "9x", "p" * 60])
def test_a_prefix_that_is_not_a_plain_identifier_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix|longer"):
        database_name(prefix, "erp")
