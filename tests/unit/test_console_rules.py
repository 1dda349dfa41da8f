"""The console's rules, as a spec: who may do what, when a sign-in is throttled, when a
session ends, what a cancellation compensates, which resolution fits an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway import users
from gateway.console import words

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_each_role_has_its_own_work_and_admin_has_all():
    assert users.may("customer-service", "", "orders.cancel")
    assert not users.may("customer-service", "", "exceptions.resolve")
    assert not users.may("customer-service", "", "deadletters.act")
    assert users.may("supply-chain", "", "exceptions.resolve")
    assert users.may("supply-chain", "", "policies.change")
    assert not users.may("supply-chain", "", "deadletters.view")
    assert not users.may("supply-chain", "", "orders.cancel")
    assert users.may("operations", "", "deadletters.act")
    assert users.may("operations", "", "inventory.reconcile")
    assert not users.may("operations", "", "exceptions.resolve")
    assert all(users.may("admin", "", p) for p in users.PERMISSIONS)


def test_a_customer_bound_person_keeps_only_their_customers_orders_and_returns():
    assert users.may("admin", "C-1", "orders.view") and users.may("admin", "C-1", "orders.cancel")
    for permission in set(users.PERMISSIONS) - users.CUSTOMER_SAFE:
        assert not users.may("admin", "C-1", permission), permission
    p = users.Person("a", "A", "customer-service", "C-1")
    assert p.owns("C-1") and not p.owns("C-2")
    assert users.Person("b", "B", "admin").owns("C-2")


def test_an_unknown_permission_is_refused_to_everyone():
    assert not users.may("admin", "", "users.delete_everything")


def test_five_failures_of_a_username_in_the_window_throttle_it_until_the_oldest_leaves():
    rule = users.Throttle(per_user=5, per_address=20, window=900)
    failures = [T0 + timedelta(seconds=i * 10) for i in range(5)]
    now = T0 + timedelta(seconds=60)
    assert users.throttle_wait(failures, failures, now, rule) == 840
    assert users.throttle_wait(failures[:4], failures[:4], now, rule) == 0
    assert users.throttle_wait(failures, failures, T0 + timedelta(seconds=901), rule) == 0


def test_many_failures_from_one_address_throttle_every_username_from_it():
    rule = users.Throttle(per_user=5, per_address=20, window=900)
    spread = [T0 + timedelta(seconds=i) for i in range(20)]
    assert users.throttle_wait([], spread, T0 + timedelta(seconds=30), rule) > 0


def test_a_session_ends_after_its_idle_timeout_or_its_lifetime():
    rules = users.SessionRules(idle_timeout=1800, lifetime=12 * 3600)
    assert users.session_state(T0, T0, T0 + timedelta(minutes=29), rules) == "active"
    assert users.session_state(T0, T0, T0 + timedelta(minutes=30), rules) == "idle"
    busy = T0 + timedelta(hours=12) - timedelta(seconds=1)
    assert users.session_state(T0, busy, T0 + timedelta(hours=12), rules) == "expired"


def test_usernames_and_passwords():
    assert users.check_username("jane.doe") is None and users.check_username("Jane") is not None
    assert users.check_username("a") is not None and users.check_username("-x") is not None
    assert users.check_password("short") is not None and users.check_password("x" * 12) is None


def test_passwords_are_argon2id_hashes_that_verify_only_the_password():
    h = users.hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct" not in h
    assert users.verify_password(h, "correct horse battery")
    assert not users.verify_password(h, "wrong horse battery")
    assert not users.verify_password("not a hash", "x")


def test_cancelling_spells_out_its_compensation_by_status():
    assert "releases the credit" in " ".join(words.compensation("RECEIVED"))
    assert any("releases the stock it reserved" in s for s in words.compensation("ALLOCATED"))
    assert any("stays shipped" in s for s in words.compensation("PARTIALLY_SHIPPED"))
    for status in ("PACKED", "SHIPPED", "INVOICED", "CANCELLED", "REJECTED"):
        assert words.compensation(status) == [] and not words.cancellable(status)


def test_the_resolutions_offered_fit_the_kind_of_exception():
    assert words.ACTIONS_FOR["SHORT_PICK"] == ("SHIP_PARTIAL", "CANCEL_LINES", "CANCEL_ORDER")
    assert words.ACTIONS_FOR["CARRIER_FAILED"] == ("RETRY", "REASSIGN_CARRIER", "CANCEL_ORDER")


def test_the_workflow_accepts_exactly_the_resolutions_the_console_offers():
    from services.ordertoship import workflow

    assert {k.value: tuple(a.value for a in v) for k, v in workflow.ACTIONS.items()} == words.ACTIONS_FOR


def test_times_are_shown_in_the_readers_zone():
    assert words.when(T0, ZoneInfo("Europe/Paris")) == "2026-12-01 13:00:00 CET"
    assert words.when(None, ZoneInfo("UTC")) == ""


def test_the_navigation_shows_only_what_the_reader_may_open():
    titles = [t for _, t in words.nav(users.Person("a", "A", "customer-service"))]
    assert titles == ["Orders"]
    assert "Dead letters" in [t for _, t in words.nav(users.Person("o", "O", "operations"))]
    assert [t for _, t in words.nav(users.Person("x", "X", "admin", "C-1"))] == ["Orders"]
