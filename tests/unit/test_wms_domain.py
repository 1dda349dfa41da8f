"""WMS rules without I/O: line validation, shortages, FCFS backorders, package weight."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.wms import domain
from services.wms.domain import Backorder

T0 = datetime(2025, 1, 1, 12, 0, 0)


def test_line_problems_name_each_field():
    assert domain.line_problems([]) == [("lines", "at least one line is required")]
    assert domain.line_problems([("A", 1), ("", 2), ("A", 0)]) == [
        ("lines[1].sku", "required"),
        ("lines[2].sku", "duplicate SKU 'A'"),
        ("lines[2].quantity", "must be positive"),
    ]
    assert domain.line_problems([("A", 1), ("B", 2)]) == []


def test_shortages_are_the_missing_quantities():
    assert domain.shortages([("A", 5), ("B", 2), ("C", 1)], {"A": 3, "B": 2}) == [("A", 2), ("C", 1)]
    assert domain.shortages([("A", 5)], {"A": 5}) == []


def test_allocation_is_all_or_nothing():
    # One short line makes the whole order short, however much of the rest is there.
    assert domain.shortages([("A", 1), ("B", 10)], {"A": 100, "B": 9}) == [("B", 1)]


def test_negative_availability_counts_as_none():
    assert domain.shortages([("A", 2)], {"A": -3}) == [("A", 2)]


def test_backorders_are_served_first_come_first_served():
    queue = [
        Backorder("O-3", T0 + timedelta(seconds=2), (("A", 1),)),
        Backorder("O-1", T0, (("A", 3),)),
        Backorder("O-2", T0 + timedelta(seconds=1), (("A", 3),)),
    ]
    # 4 units: the oldest takes 3; the next (3) does not fit and keeps waiting;
    # the newest (1) fits in what is left.
    assert domain.fcfs_allocation(queue, {"A": 4}) == ["O-1", "O-3"]
    assert domain.fcfs_allocation(queue, {"A": 7}) == ["O-1", "O-2", "O-3"]
    assert domain.fcfs_allocation(queue, {"A": 2}) == ["O-3"]


def test_fcfs_breaks_ties_by_order_id_and_needs_every_line():
    queue = [
        Backorder("O-B", T0, (("A", 2),)),
        Backorder("O-A", T0, (("A", 2), ("B", 1))),
    ]
    assert domain.fcfs_allocation(queue, {"A": 2, "B": 1}) == ["O-A"]
    assert domain.fcfs_allocation(queue, {"A": 2}) == ["O-B"]


def test_package_weight_defaults_to_item_master_then_500g_per_unit():
    lines = [("A", 3), ("B", 2)]
    assert domain.package_weight(lines, {"A": 200}) == 3 * 200 + 2 * domain.DEFAULT_UNIT_WEIGHT_GRAMS
    assert domain.package_weight(lines, {"A": 200, "B": 50}) == 700
    assert domain.package_weight(lines, {"A": 200}, declared=1234) == 1234


def test_a_transfer_out_is_issued_whole_from_available_stock_or_refused_with_why():
    assert domain.transfer_refusal([("A", 2)], True, "WH1", {"A": 2}) is None
    assert domain.transfer_refusal([("A", 3), ("B", 1)], True, "WH1", {"A": 2}) == (
        "INSUFFICIENT_STOCK", "A short by 1, B short by 1")
    assert domain.transfer_refusal([("A", 1)], False, "WH9", {}) == (
        "UNKNOWN_WAREHOUSE", "no warehouse 'WH9'")
    assert domain.transfer_refusal([("A", 0)], False, "WH9", {}) == (
        "INVALID_LINES", "lines[0].quantity: must be positive")
