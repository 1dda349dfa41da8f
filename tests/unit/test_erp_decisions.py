"""Crossdock's own ERP decisions, shared by every ERP backend (no I/O): whether a sales
order is taken, what a cancellation releases, what may be invoiced, when an order is
closed, whether an order's lines may be returned, how the ledger follows WMS, when a
reconciliation may correct it, and the document numbers."""

from __future__ import annotations

import pytest

from services.erp import domain
from services.erp.domain import Line, Movement, OrderLine


def credit(limit=10_000, balance=0, orders=0, blocked=False) -> domain.Credit:
    return domain.Credit("USD", limit, balance, orders, blocked)


LINES = [Line(1, "A", 2, 1_000), Line(2, "B", 1, 500)]  # 2 500


def test_an_order_within_the_available_credit_is_accepted_with_its_total():
    assert (domain.decide_sales_order(credit(orders=7_500), LINES, {"USD"})
            == domain.OrderDecision(True, 2_500))


@pytest.mark.parametrize("customer, lines, currencies, code", [
    (None, LINES, {"USD"}, "UNKNOWN_CUSTOMER"),
    (credit(), [], {"USD"}, "INVALID_ORDER"),
    (credit(), LINES, {"USD", "EUR"}, "CURRENCY_MISMATCH"),
    (credit(orders=7_501), LINES, {"USD"}, "CREDIT_LIMIT_EXCEEDED"),
    (credit(blocked=True), LINES, {"USD"}, "CUSTOMER_BLOCKED"),
])
def test_an_order_is_rejected_for_the_first_reason_that_applies(customer, lines, currencies, code):
    decision = domain.decide_sales_order(customer, lines, currencies, "C-1")
    assert (decision.accepted, decision.reason_code) == (False, code) and decision.reason


def test_an_unknown_customer_is_named_in_the_reason():
    assert "C-9" in domain.decide_sales_order(None, LINES, {"USD"}, "C-9").reason


ORDER = [OrderLine(1, "A", 6, 100, invoiced=4), OrderLine(2, "B", 2, 1_000, cancelled=1)]


def test_an_order_holds_credit_for_what_is_neither_invoiced_nor_cancelled():
    assert [x.open for x in ORDER] == [2, 1]
    assert domain.open_amount(ORDER) == 2 * 100 + 1 * 1_000
    assert domain.open_lines(ORDER) == [Line(1, "A", 2, 100), Line(2, "B", 1, 1_000)]


def test_cancelling_lines_never_cancels_more_than_is_open_and_releases_its_credit():
    c = domain.cancel_lines(ORDER, [Line(1, "A", 5), Line(2, "", 1)])
    assert (c.cancelled, c.released) == ({1: 2, 2: 1}, 2 * 100 + 1_000)


def test_a_line_named_twice_is_cancelled_once_as_far_as_it_is_open():
    assert domain.cancel_lines(ORDER, [Line(1, "A", 2), Line(1, "A", 2)]).cancelled == {1: 2}


@pytest.mark.parametrize("requested", [[Line(9, "A", 1)], [Line(1, "B", 1)]])
def test_cancelling_a_line_the_order_does_not_have_is_refused(requested):
    with pytest.raises(domain.LinesRefused):
        domain.cancel_lines(ORDER, requested)


@pytest.mark.parametrize("lines, status", [
    (ORDER, ""),
    ([OrderLine(1, "A", 2, 1, invoiced=1, cancelled=1)], "INVOICED"),
    ([OrderLine(1, "A", 2, 1, cancelled=2)], "CANCELLED"),
])
def test_an_order_closes_when_nothing_is_open(lines, status):
    assert domain.closed_status(lines) == status


@pytest.mark.parametrize("status, cancel, ignore", [
    ("ACCEPTED", True, False), ("INVOICED", False, True), ("REJECTED", False, False),
    ("CANCELLED", False, False), (None, False, False)])
def test_only_an_accepted_order_is_cancelled_and_an_invoiced_one_stays_invoiced(status, cancel, ignore):
    assert domain.decide_cancel(status) == domain.CancelDecision(cancel, ignore)


def test_only_an_accepted_order_may_be_invoiced():
    assert domain.invoiceable("ACCEPTED", "O1") == ""
    assert "INVOICED" in domain.invoiceable("INVOICED", "O1")
    assert "unknown" in domain.invoiceable(None, "O1")


def test_documents_are_numbered_per_order():
    assert domain.invoice_number("O1", 0) == "INV-O1-1"
    assert domain.invoice_number("O1", 1) == "INV-O1-2"
    assert domain.rma_number("O1", 1) == "RMA-O1-2"
    assert domain.credit_memo_number("RMA-O1-2") == "CM-O1-2"


@pytest.mark.parametrize("status, customer, gate", [
    (None, "", domain.ReturnGate("UNKNOWN_ORDER", "no sales order 'O1'")),
    ("INVOICED", "C-2", domain.ReturnGate("CUSTOMER_MISMATCH", "order O1 is not C-2's")),
    ("ACCEPTED", "", domain.ReturnGate(wait=True, reason="sales order O1 is not invoiced yet")),
    ("CANCELLED", "", domain.ReturnGate("NOT_INVOICED", "sales order O1 is CANCELLED")),
    ("INVOICED", "C-1", domain.ReturnGate()),
])
def test_only_an_invoiced_order_of_the_customer_may_be_returned_and_a_shipped_one_waits(
        status, customer, gate):
    assert domain.return_gate(status, "C-1", "O1", customer) == gate


def test_the_ledger_applies_a_positions_movements_in_sequence_order_and_skips_stale_ones():
    result = domain.apply_movements({("A", "W"): (10, 2)}, [
        Movement("A", "W", 4, 8), Movement("A", "W", 3, 9), Movement("A", "W", 2, 99),
        Movement("B", "W", 1, 5)])
    assert result.positions == {("A", "W"): (8, 4), ("B", "W"): (5, 1)}
    assert [(m.sku, m.sequence) for m in result.applied] == [("A", 3), ("A", 4), ("B", 1)]
    assert [m.sequence for m in result.stale] == [2]
    assert result.gaps == []


def test_a_skipped_sequence_is_reported_and_wms_is_still_followed():
    result = domain.apply_movements({}, [Movement("A", "W", 5, 4)])
    assert result.positions == {("A", "W"): (4, 5)}
    assert [(m.sequence, gap) for m, gap in result.gaps] == [(5, (1, 4))]


def test_a_batch_of_only_stale_movements_changes_no_position():
    assert domain.apply_movements({("A", "W"): (1, 3)}, [Movement("A", "W", 3, 0)]).positions == {}


@pytest.mark.parametrize("current, decision", [
    ((10, 1), "APPLY"),      # still as the reconciliation read it
    ((15, 2), "ALREADY"),    # a repeated correction
    ((12, 2), "STALE"),      # a movement was applied meanwhile: never overwritten
    (None, "STALE"),
])
def test_a_correction_applies_only_to_a_position_still_as_it_was_read(current, decision):
    assert domain.correction(current, expected=(10, 1), target=(15, 2)) == decision
