"""The WMS fulfilment state machine, without I/O (services/wms/fulfilment_rules.py)."""

from __future__ import annotations

import pytest

from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import InvalidArgument
from services.wms import fulfilment_rules as rules
from services.wms.fulfilment_rules import Due, FulfilmentLine, Movement
from services.wms.statuses import ExceptionKind, FulfilmentStatus, ShortagePolicy

S = FulfilmentStatus


def fulfilment(status: S = S.BACKORDERED, *lines: FulfilmentLine, **kw) -> rules.Fulfilment:
    lines = lines or (FulfilmentLine(0, "A", 3), FulfilmentLine(1, "B", 2))
    return rules.Fulfilment(order_id="O1", warehouse_id="WH1", status=status, lines=tuple(lines), **kw)


def allocated(status: S = S.ALLOCATED, **kw) -> rules.Fulfilment:
    """A = 3 and B = 2, all in the current wave."""
    return fulfilment(status, FulfilmentLine(0, "A", 3, wave_quantity=3),
                      FulfilmentLine(1, "B", 2, wave_quantity=2), **kw)


def pairs(quantities) -> list[tuple[str, int]]:
    return [(q.sku, q.quantity) for q in quantities]


# ---- a new order ----


def test_a_new_order_that_fits_is_allocated_whole_and_the_autopilot_picks_it_next():
    change = rules.decide_new_order(fulfilment(), ShortagePolicy.BACKORDER, True, {"A": 10, "B": 2})
    assert (change.expected, change.status, change.announce) == (
        S.BACKORDERED, S.ALLOCATED, "wms.fulfilment.allocated")
    assert change.due is Due.PICK
    assert change.lines == {0: {"wave_quantity": 3}, 1: {"wave_quantity": 2}}
    assert change.allocations == (("A", 3), ("B", 2))
    assert change.recheck == ("A", "B")  # the allocation lowers the position: replenishment looks


def test_a_short_order_waits_as_a_backorder_and_says_what_is_missing():
    change = rules.decide_new_order(fulfilment(), ShortagePolicy.BACKORDER, True, {"A": 1})
    assert (change.status, change.announce) == (S.BACKORDERED, "wms.fulfilment.backordered")
    assert pairs(change.details["shortages"]) == [("A", 2), ("B", 2)]
    assert change.allocations == () and change.lines == {}
    assert change.recheck_after == ("A", "B")


def test_an_unspecified_policy_backorders_like_backorder():
    change = rules.decide_new_order(fulfilment(), ShortagePolicy.UNSPECIFIED, True, {})
    assert change.status is S.BACKORDERED


def test_a_short_order_under_policy_cancel_is_rejected_with_its_shortages():
    change = rules.decide_new_order(fulfilment(), ShortagePolicy.CANCEL, True, {"A": 3, "B": 1})
    assert (change.status, change.announce) == (S.REJECTED, "wms.fulfilment.rejected")
    assert change.details["reason_code"] == "INSUFFICIENT_STOCK"
    assert pairs(change.details["shortages"]) == [("B", 1)]


def test_invalid_lines_are_rejected_before_the_warehouse_is_looked_at():
    bad = fulfilment(S.BACKORDERED, FulfilmentLine(0, "A", 0), FulfilmentLine(1, "A", 1))
    change = rules.decide_new_order(bad, ShortagePolicy.BACKORDER, False, {})
    assert change.details["reason_code"] == "INVALID_LINES"
    assert "lines[0].quantity: must be positive" in change.details["reason"]
    assert "lines[1].sku: duplicate SKU 'A'" in change.details["reason"]


def test_an_unknown_warehouse_is_rejected():
    change = rules.decide_new_order(fulfilment(), ShortagePolicy.BACKORDER, False, {})
    assert (change.details["reason_code"], change.details["reason"]) == (
        "UNKNOWN_WAREHOUSE", "no warehouse 'WH1'")


# ---- allocation of a backorder ----


def test_a_backorder_is_allocated_all_or_nothing():
    assert rules.decide_allocation(fulfilment(), {"A": 3, "B": 1}) is None
    assert rules.decide_allocation(fulfilment(), {"A": 3, "B": 2}).status is S.ALLOCATED


def test_only_the_open_quantities_are_allocated_for_a_later_wave():
    later = fulfilment(S.BACKORDERED, FulfilmentLine(0, "A", 3, shipped=2),
                       FulfilmentLine(1, "B", 2, shipped=2))
    change = rules.decide_allocation(later, {"A": 1})
    assert change.lines == {0: {"wave_quantity": 1}} and change.allocations == (("A", 1),)


def test_only_a_backordered_fulfilment_is_allocated():
    assert rules.decide_allocation(allocated(), {"A": 10, "B": 10}) is None
    nothing_open = fulfilment(S.BACKORDERED, FulfilmentLine(0, "A", 3, cancelled=3))
    assert rules.decide_allocation(nothing_open, {"A": 10}) is None


# ---- picking ----


def test_a_full_pick_moves_to_picked_and_the_autopilot_packs_next():
    for found in (None, {"A": 3, "B": 2}):
        change = rules.decide_pick(allocated(), found)
        assert (change.expected, change.status, change.due) == (S.ALLOCATED, S.PICKED, Due.PACK)
        assert change.movements == () and change.lines == {}


def test_a_short_pick_raises_an_exception_and_writes_the_missing_units_off():
    change = rules.decide_pick(allocated(), {"A": 1})
    assert (change.status, change.announce, change.due) == (S.EXCEPTION, "wms.fulfilment.exception", None)
    assert change.fields == {"exception_kind": ExceptionKind.SHORT_PICK,
                             "exception_detail": "found less than allocated: A 1 of 3",
                             "resume_status": S.PICKED}
    assert change.lines == {0: {"wave_quantity": 1, "exception_quantity": 2}}
    assert change.movements == (Movement("A", -2, events.MOVEMENT_REASON_ADJUSTMENT, "short-pick O1",
                                         allocated_delta=-2),)
    assert change.details["kind"] == wms_pb2.EXCEPTION_KIND_SHORT_PICK
    assert pairs(change.details["lines"]) == [("A", 2)]


def test_a_pick_of_nothing_at_all_is_still_a_short_pick():
    change = rules.decide_pick(allocated(), {"A": 0, "B": 0})
    assert change.lines == {0: {"wave_quantity": 0, "exception_quantity": 3},
                            1: {"wave_quantity": 0, "exception_quantity": 2}}


@pytest.mark.parametrize("found, field", [({"A": 4}, "picked_lines[A]"), ({"A": -1}, "picked_lines[A]"),
                                          ({"Z": 1}, "picked_lines[Z]")])
def test_a_pick_report_outside_the_wave_is_refused(found, field):
    with pytest.raises(InvalidArgument) as info:
        rules.decide_pick(allocated(), found)
    assert [f for f, _ in info.value.violations] == [field]


def test_only_an_allocated_fulfilment_is_picked():
    for status in (S.BACKORDERED, S.PICKED, S.EXCEPTION, S.CANCELLED):
        assert rules.decide_pick(allocated(status), {"A": 0}) is None  # not even validated


# ---- packing ----


def test_packing_weighs_the_wave_from_the_item_master_unless_a_weight_is_declared():
    change = rules.decide_pack(allocated(S.PICKED), unit_weights={"A": 200})
    # PACKED waits for a shipment: no autopilot step is due.
    assert (change.expected, change.status, change.due) == (S.PICKED, S.PACKED, None)
    assert change.fields == {"package_weight_grams": 3 * 200 + 2 * 500}  # B unknown: 500 g a unit
    assert rules.decide_pack(allocated(S.PICKED), 1234).fields == {"package_weight_grams": 1234}


def test_damage_at_packing_raises_an_exception_that_resumes_packed():
    change = rules.decide_pack(allocated(S.PICKED), damaged={"B": 1})
    assert change.fields["exception_kind"] == ExceptionKind.DAMAGED
    assert change.fields["resume_status"] == S.PACKED
    assert change.fields["exception_detail"] == "damaged at packing: B 1"
    assert change.movements == (Movement("B", -1, events.MOVEMENT_REASON_ADJUSTMENT, "damaged O1",
                                         allocated_delta=-1),)


def test_damage_of_a_sku_not_on_the_order_or_beyond_the_wave_is_refused():
    for damaged in ({"Z": 1}, {"A": 4}):
        with pytest.raises(InvalidArgument):
            rules.decide_pack(allocated(S.PICKED), damaged=damaged)


# ---- a bin count ----


def waves(*quantities: int) -> list[rules.AllocatedWave]:
    return [rules.AllocatedWave(f"O{i}", 0, q) for i, q in enumerate(quantities, 1)]


def test_a_count_that_covers_the_allocations_only_corrects_on_hand():
    count = rules.decide_stock_count(on_hand=10, allocated=4, counted=7, allocated_waves=waves(4))
    assert (count.takes, count.adjustment, count.refused) == ((), -3, False)


def test_a_count_below_the_allocations_takes_the_difference_from_the_newest_allocations_first():
    count = rules.decide_stock_count(on_hand=10, allocated=8, counted=3, allocated_waves=waves(2, 4, 2))
    assert [(w.order_id, take) for w, take in count.takes] == [("O1", 2), ("O2", 3)]
    assert (count.adjustment, count.refused) == (-7, False)


def test_a_count_below_what_picked_orders_hold_is_refused():
    # 6 allocated, of which only 2 are not picked yet: a count of 1 cannot be booked.
    count = rules.decide_stock_count(on_hand=6, allocated=6, counted=1, allocated_waves=waves(2))
    assert count.refused
    assert not rules.decide_stock_count(on_hand=6, allocated=6, counted=6, allocated_waves=()).refused


def test_a_discrepancy_parks_the_missing_units_and_releases_their_allocation_without_a_write_off():
    change = rules.decide_discrepancy(allocated(), "A", 2, counted=1)
    assert (change.status, change.fields["exception_kind"], change.fields["resume_status"]) == (
        S.EXCEPTION, ExceptionKind.STOCK_DISCREPANCY, S.ALLOCATED)
    assert change.allocations == (("A", -2),) and change.movements == ()  # the count books them out
    assert change.fields["exception_detail"] == "bin count of A is 1: 2 allocated unit(s) are not there"
    assert rules.decide_discrepancy(allocated(S.PICKED), "A", 2, counted=1) is None


# ---- an exception resolved ----


def in_exception(resume: S, wave_a: int = 1, exception_a: int = 2) -> rules.Fulfilment:
    return fulfilment(S.EXCEPTION,
                      FulfilmentLine(0, "A", 3, wave_quantity=wave_a, exception_quantity=exception_a),
                      FulfilmentLine(1, "B", 2, wave_quantity=2 if wave_a else 0), resume_status=resume)


SHIP_PARTIAL, CANCEL_LINES = wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL, wms_pb2.EXCEPTION_ACTION_CANCEL_LINES


def test_ship_partial_resumes_where_it_stopped_and_keeps_the_missing_units_open():
    change = rules.decide_resolution(in_exception(S.PICKED), SHIP_PARTIAL)
    assert (change.expected, change.status, change.announce, change.due) == (
        S.EXCEPTION, S.PICKED, "wms.fulfilment.picked", Due.PACK)
    assert change.lines == {0: {"exception_quantity": 0}}
    assert change.fields == {"exception_kind": "", "exception_detail": "", "exception_at": None,
                             "resume_status": ""}


def test_cancel_lines_cancels_the_missing_units():
    change = rules.decide_resolution(in_exception(S.PICKED), CANCEL_LINES)
    assert change.lines == {0: {"exception_quantity": 0, "cancelled": 2}}


def test_resuming_packed_weighs_the_package_again():
    change = rules.decide_resolution(in_exception(S.PACKED), SHIP_PARTIAL, unit_weights={"A": 100, "B": 10})
    assert (change.status, change.due) == (S.PACKED, None)
    assert change.fields["package_weight_grams"] == 1 * 100 + 2 * 10


def test_with_nothing_left_in_the_wave_the_order_waits_for_stock_again():
    change = rules.decide_resolution(in_exception(S.PICKED, wave_a=0, exception_a=3), SHIP_PARTIAL)
    assert (change.status, change.announce) == (S.BACKORDERED, "wms.fulfilment.backordered")
    assert pairs(change.details["shortages"]) == [("A", 3), ("B", 2)]
    assert change.allocate_again == ("A", "B")  # at once, if the stock is there


def test_with_nothing_open_at_all_the_order_is_cancelled():
    only_a = fulfilment(S.EXCEPTION, FulfilmentLine(0, "A", 3, exception_quantity=3), resume_status=S.PICKED)
    change = rules.decide_resolution(only_a, CANCEL_LINES)
    assert (change.status, change.details["reason"]) == (S.CANCELLED, "every missing line cancelled")


def test_a_resolution_of_another_wave_or_of_no_exception_is_ignored():
    assert rules.decide_resolution(in_exception(S.PICKED), SHIP_PARTIAL, wave=2) is None
    assert rules.decide_resolution(allocated(), SHIP_PARTIAL) is None
    assert rules.decide_resolution(allocated(), 99) is None  # ignored before the action is looked at
    with pytest.raises(rules.UnknownAction):
        rules.decide_resolution(in_exception(S.PICKED), 99)


# ---- shipment ----


def test_a_booked_shipment_labels_a_packed_order_and_the_autopilot_ships_it_next():
    change = rules.decide_assign_shipment(allocated(S.PACKED), "SHP-1", "FAST", "T1")
    assert (change.expected, change.status, change.due, change.announce) == (
        S.PACKED, S.LABELLED, Due.SHIP, "")
    assert change.fields == {"shipment_id": "SHP-1", "carrier_id": "FAST", "tracking_number": "T1"}


def test_a_shipment_before_packing_waits():
    assert isinstance(rules.decide_assign_shipment(allocated(S.PICKED), "SHP-1", "C", "T"), rules.NotYet)


def test_a_repeated_earlier_wave_closed_or_stale_shipment_changes_nothing():
    repeat = rules.decide_assign_shipment(allocated(S.LABELLED, shipment_id="S1"), "S1", "C", "T")
    assert repeat == rules.Ignored()
    assert rules.decide_assign_shipment(allocated(S.PACKED, wave=2), "S1", "C", "T", wave=1).why
    closed = rules.decide_assign_shipment(allocated(S.CANCELLED), "S1", "C", "T")
    assert isinstance(closed, rules.Ignored) and closed.warn
    stale = rules.decide_assign_shipment(allocated(S.LABELLED, shipment_id="S2"), "S1", "C", "T")
    assert stale == rules.Ignored("wms.assign_shipment.stale", warn=True)


def test_shipping_moves_the_wave_out_of_stock_line_by_line():
    change = rules.decide_ship(allocated(S.LABELLED))
    assert (change.expected, change.status, change.then) == (S.LABELLED, S.SHIPPED, None)
    assert change.movements == (
        Movement("A", -3, events.MOVEMENT_REASON_SHIPMENT, "O1", allocated_delta=-3),
        Movement("B", -2, events.MOVEMENT_REASON_SHIPMENT, "O1", allocated_delta=-2))
    assert change.lines == {0: {"shipped": 3, "wave_quantity": 0}, 1: {"shipped": 2, "wave_quantity": 0}}
    assert change.details["wave"] == 1 and pairs(change.details["remaining_lines"]) == []


def test_a_partial_shipment_opens_the_next_wave_as_a_backorder():
    partial = fulfilment(S.LABELLED, FulfilmentLine(0, "A", 3, wave_quantity=1),
                         FulfilmentLine(1, "B", 2, wave_quantity=2), shipment_id="S1")
    change = rules.decide_ship(partial)
    assert pairs(change.details["shipped_lines"]) == [("A", 1), ("B", 2)]
    assert pairs(change.details["remaining_lines"]) == [("A", 2)]
    after = change.then
    assert (after.expected, after.status, after.announce) == (
        S.SHIPPED, S.BACKORDERED, "wms.fulfilment.backordered")
    assert after.fields == {"wave": 2, "shipment_id": "", "carrier_id": "", "tracking_number": "",
                            "package_weight_grams": 0}
    assert after.allocate_again == ("A",)


def test_only_a_labelled_order_ships():
    for status in (S.PACKED, S.SHIPPED):
        assert rules.decide_ship(allocated(status)) is None


# ---- cancel ----


@pytest.mark.parametrize("status", [S.BACKORDERED, S.ALLOCATED, S.PICKED, S.PACKED, S.EXCEPTION])
def test_cancel_before_labelling_releases_the_wave_and_cancels_what_is_not_shipped(status):
    change = rules.decide_cancel(allocated(status), "customer")
    assert (change.expected, change.status, change.details) == (status, S.CANCELLED, {"reason": "customer"})
    assert change.allocations == (("A", -3), ("B", -2))
    assert change.lines[0] == {"wave_quantity": 0, "exception_quantity": 0, "cancelled": 3}
    assert change.serve_backorders  # the released stock may serve others
    assert change.recheck_after == ("A", "B")


def test_cancel_of_a_backorder_releases_nothing_and_serves_no_one():
    change = rules.decide_cancel(fulfilment(), "customer")
    assert change.allocations == () and not change.serve_backorders


@pytest.mark.parametrize("status", [S.LABELLED, S.SHIPPED])
def test_cancel_after_labelling_is_refused(status):
    outcome = rules.decide_cancel(allocated(status), "customer")
    assert outcome == rules.Announce("wms.fulfilment.cancel_refused",
                                     {"reason": f"fulfilment is already {status}: too late to cancel"})


@pytest.mark.parametrize("status", [S.CANCELLED, S.REJECTED])
def test_a_repeated_cancel_says_again_that_it_is_cancelled(status):
    assert rules.decide_cancel(allocated(status), "again") == rules.Announce(
        "wms.fulfilment.cancelled", {"reason": "again"})


def test_a_cancel_before_the_order_exists_leaves_a_tombstone():
    assert rules.decide_cancel(None, "customer") == rules.Tombstone("customer")


def test_statuses_are_the_database_words():
    assert [s.value for s in S] == ["BACKORDERED", "ALLOCATED", "PICKED", "PACKED", "LABELLED", "SHIPPED",
                                    "CANCELLED", "REJECTED", "EXCEPTION"]
    assert f"{S.PICKED}" == "PICKED" and S("PICKED") is S.PICKED
