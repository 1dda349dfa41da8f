"""The Tryton adapter's own rules, without I/O: how Tryton's JSON-RPC errors are
understood, that a refusal or a warning is permanent (never skipped), how the change
feed's tail waits for a transaction that has not committed yet, and which canonical
fields a change touched."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.erp.tryton.base import permanent_on_refusal, to_decimal, to_minor
from services.erp.tryton.feed import CUSTOMER_FIELDS, ITEM_FIELDS, changed, safe_prefix
from services.erp.tryton.rpc import (
    TrytonError,
    TrytonUnavailable,
    TrytonUserError,
    TrytonUserWarning,
    error_of,
)
from services.mesh.bus import PermanentError


def test_a_user_error_keeps_trytons_message():
    err = error_of(["UserError", ["The party \"Acme\" will exceed their $50.00 credit limit.", "", None]])
    assert isinstance(err, TrytonUserError) and "credit limit" in err.message


def test_a_user_warning_keeps_its_name_so_it_can_only_be_accepted_deliberately():
    err = error_of(["UserWarning", ["abc.done", "Stock moves have no origin.", ""]])
    assert isinstance(err, TrytonUserWarning)
    assert (err.name, err.message) == ("abc.done", "Stock moves have no origin.")


@pytest.mark.parametrize("error", [["ConcurrencyException", "Records were modified"],
                                   ["database is locked", "traceback"]])
def test_a_concurrent_write_or_a_locked_database_is_transient(error):
    assert isinstance(error_of(error), TrytonUnavailable)


def test_anything_else_is_an_error_of_its_own_kind():
    err = error_of(["KeyError", "tb"])
    assert type(err) is TrytonError


@pytest.mark.parametrize("raised, message", [
    (TrytonUserError("unknown product"), "Tryton refused: unknown product"),
    (TrytonUserWarning("w1", "no origin"), "Tryton asks to confirm (w1): no origin; not accepted"),
])
async def test_a_refusal_or_a_warning_is_a_permanent_error_with_trytons_message(raised, message):
    @permanent_on_refusal
    async def posting():
        raise raised
    with pytest.raises(PermanentError) as info:
        await posting()
    assert str(info.value) == message


async def test_tryton_away_stays_retryable():
    @permanent_on_refusal
    async def posting():
        raise TrytonUnavailable("connection refused")
    with pytest.raises(TrytonUnavailable):
        await posting()


T0 = datetime(2026, 12, 4, 12, 0, 0)


def rows(*specs: tuple[int, float]) -> list[dict]:
    return [{"id": i, "create_date": T0 + timedelta(seconds=s)} for i, s in specs]


def test_the_feed_takes_rows_in_id_order_from_its_cursor():
    taken = safe_prefix(rows((12, 1), (11, 0)), 10, T0 + timedelta(seconds=1), 5)
    assert [r["id"] for r in taken] == [11, 12]


def test_the_feed_waits_at_a_missing_id_while_a_later_row_is_younger_than_the_window():
    # Row 11 is not visible yet (a transaction that took its id has not committed).
    assert safe_prefix(rows((12, 0), (13, 1)), 10, T0 + timedelta(seconds=2), 5) == []


def test_a_missing_id_older_than_the_window_is_taken_as_rolled_back():
    taken = safe_prefix(rows((12, 0), (13, 1)), 10, T0 + timedelta(seconds=6), 5)
    assert [r["id"] for r in taken] == [12, 13]


def test_the_feed_stops_at_the_first_gap_it_must_wait_for():
    taken = safe_prefix(rows((11, 0), (13, 9)), 10, T0 + timedelta(seconds=10), 5)
    assert [r["id"] for r in taken] == [11]


def test_a_change_names_the_canonical_fields_it_touched():
    assert changed([{"mode": "write", "field_names": "list_price,write_date"}], ITEM_FIELDS) == ["unit_price"]
    assert changed([{"mode": "write", "field_names": "active"},
                    {"mode": "write", "field_names": "addresses"}],
                   CUSTOMER_FIELDS) == ["blocked", "ship_to"]


def test_a_new_record_has_no_changed_fields_and_a_write_of_nothing_canonical_is_no_event():
    assert changed([{"mode": "create", "field_names": ""}, {"mode": "write", "field_names": "name"}],
                   ITEM_FIELDS) == []
    assert changed([{"mode": "write", "field_names": "code_alnum,code_digit"}], CUSTOMER_FIELDS) is None


@pytest.mark.parametrize("minor", [0, 1, 99, 123_456, -250])
def test_money_goes_to_tryton_and_back_unchanged(minor):
    assert to_minor(to_decimal(minor)) == minor
