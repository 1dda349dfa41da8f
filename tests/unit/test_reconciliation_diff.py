"""Inventory reconciliation: judging one ERP ledger position against WMS, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.returns import domain
from services.returns.domain import LedgerRow, WmsAsOf, judge

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def erp(on_hand: int, seq: int) -> LedgerRow:
    return LedgerRow("SKU-1", "WH-1", on_hand, seq, NOW - timedelta(hours=1))


def wms(seq: int, on_hand_at: int, current_seq: int, current: int, *, next_age_s: float | None = None,
        unpublished: bool = False, known: bool = True, exists: bool = True) -> WmsAsOf:
    return WmsAsOf("SKU-1", "WH-1", exists=exists, sequence=seq, known=known, on_hand_at=on_hand_at,
                   sequence_time=NOW - timedelta(hours=2), current_sequence=current_seq,
                   current_on_hand=current,
                   next_time=None if next_age_s is None else NOW - timedelta(seconds=next_age_s),
                   next_unpublished=unpublished)


def test_in_step_is_no_drift():
    v = judge(erp(100, 7), wms(7, 100, 7, 100), now=NOW, grace=GRACE)
    assert v.drift is None and not v.in_flight


def test_movements_younger_than_the_grace_period_are_in_flight_not_drift():
    v = judge(erp(100, 7), wms(7, 100, 9, 94, next_age_s=5), now=NOW, grace=GRACE)
    assert v.drift is None and v.in_flight


def test_a_movement_still_in_the_wms_outbox_is_in_flight_however_old():
    v = judge(erp(100, 7), wms(7, 100, 8, 97, next_age_s=3600, unpublished=True), now=NOW, grace=GRACE)
    assert v.drift is None and v.in_flight


def test_a_ledger_changed_behind_the_mesh_is_found_at_the_same_sequence():
    # WMS has moved on (in flight), yet the comparison is exact: as of sequence 7.
    v = judge(erp(93, 7), wms(7, 100, 9, 94, next_age_s=5), now=NOW, grace=GRACE)
    d = v.drift
    assert d.kind == domain.QUANTITY_MISMATCH
    assert (d.erp_quantity, d.wms_quantity, d.delta) == (93, 100, -7)
    assert (d.erp_sequence, d.wms_sequence) == (7, 7)
    assert d.since == NOW - timedelta(hours=2)
    # A repair goes to what WMS holds now, at its current sequence.
    assert (d.target_on_hand, d.target_sequence) == (94, 9)


def test_a_movement_older_than_the_grace_period_that_erp_never_applied_is_a_lost_event():
    v = judge(erp(100, 7), wms(7, 100, 8, 105, next_age_s=61), now=NOW, grace=GRACE)
    d = v.drift
    assert d.kind == domain.MISSED_MOVEMENTS
    assert (d.erp_quantity, d.wms_quantity, d.delta) == (100, 105, -5)
    assert (d.erp_sequence, d.wms_sequence) == (7, 8)
    assert d.since == NOW - timedelta(seconds=61)
    assert (d.target_on_hand, d.target_sequence) == (105, 8)


def test_a_position_erp_never_heard_of():
    fresh = wms(0, 0, 1, 50, next_age_s=1)
    assert judge(None, fresh, now=NOW, grace=GRACE) == domain.Verdict(None, in_flight=True)
    lost = judge(None, wms(0, 0, 1, 50, next_age_s=600), now=NOW, grace=GRACE).drift
    assert lost.kind == domain.MISSED_MOVEMENTS and (lost.erp_quantity, lost.wms_quantity) == (0, 50)


def test_a_position_wms_never_had():
    d = judge(erp(4, 2), None, now=NOW, grace=GRACE).drift
    assert d.kind == domain.UNKNOWN_TO_WMS and (d.delta, d.target_on_hand, d.target_sequence) == (4, 0, 0)
    assert judge(erp(0, 0), None, now=NOW, grace=GRACE).drift is None


def test_erp_ahead_of_wms():
    d = judge(erp(10, 12), wms(12, 0, 9, 10, known=False), now=NOW, grace=GRACE).drift
    assert d.kind == domain.SEQUENCE_AHEAD and (d.target_on_hand, d.target_sequence) == (10, 9)


def test_history_older_than_wms_keeps_is_compared_with_the_current_position():
    assert judge(erp(10, 5), wms(5, 0, 5, 10, known=False), now=NOW, grace=GRACE).drift is None
    d = judge(erp(11, 5), wms(5, 0, 5, 10, known=False), now=NOW, grace=GRACE).drift
    assert d.kind == domain.QUANTITY_MISMATCH and d.delta == 1


def test_naive_times_from_a_sqlite_store_are_utc():
    w = wms(7, 100, 8, 105, next_age_s=None)
    w = WmsAsOf(**{**w.__dict__, "next_time": (NOW - timedelta(seconds=120)).replace(tzinfo=None)})
    assert judge(erp(100, 7), w, now=NOW, grace=GRACE).drift.kind == domain.MISSED_MOVEMENTS


def test_returnable_quantities_count_what_other_returns_hold():
    ordered = [domain.OrderLine(1, "A", 5), domain.OrderLine(2, "B", 2)]
    others = [domain.HeldLine("EXPECTED", 1, 2, 0),           # open: all it asks
              domain.HeldLine("PARTIALLY_CREDITED", 1, 2, 1),  # finished: what came back
              domain.HeldLine("EXPIRED", 1, 5, 0),             # released
              domain.HeldLine("REFUSED", 2, 2, 0)]             # refused by ERP: nothing came back
    left = domain.returnable(ordered, others)
    assert left == {1: 2, 2: 2}
    matched, problems = domain.match_lines(ordered, [domain.Requested(0, "A", 3),
                                                     domain.Requested(2, "", 1),
                                                     domain.Requested(3, "", 1),
                                                     domain.Requested(2, "B", 1)], left)
    assert matched == [domain.OrderLine(2, "B", 1)]
    assert problems == [
        ("lines[0].quantity", "at most 2 of line 1 (A) can be returned: 5 shipped, 3 already "
                              "returned or in other returns"),
        ("lines[2]", "line 3 is not on the order"),
        ("lines[3]", "order line 2 is already lines[1]; merge the quantities")]
