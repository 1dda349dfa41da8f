"""ERP rules without I/O: credit, invoice pricing, stock sequence, paging tokens."""

from __future__ import annotations

import pytest

from services.erp import domain
from services.erp.domain import Line


def credit(limit=10_000, balance=0, orders=0, blocked=False) -> domain.Credit:
    return domain.Credit("USD", limit, balance, orders, blocked)


def test_available_credit_is_limit_minus_balance_and_open_orders():
    assert credit(10_000, 2_500, 1_500).available == 6_000


def test_credit_approved_up_to_the_available_amount():
    assert domain.check_credit(credit(10_000, 2_000, 3_000), 5_000) == domain.CreditDecision(True, 5_000)


def test_credit_refused_over_the_limit_names_the_amounts():
    decision = domain.check_credit(credit(10_000, 2_000, 3_000), 5_001)
    assert (decision.approved, decision.reason_code, decision.available) == (
        False, "CREDIT_LIMIT_EXCEEDED", 5_000)
    assert "5001" in decision.reason and "5000" in decision.reason


def test_blocked_customer_is_refused_even_within_the_limit():
    decision = domain.check_credit(credit(blocked=True), 1)
    assert (decision.approved, decision.reason_code) == (False, "CUSTOMER_BLOCKED")


def test_order_total_uses_the_prices_as_sent():
    assert domain.order_total([Line(1, "A", 3, 250), Line(2, "B", 2, 1_000)]) == 2_750


@pytest.mark.parametrize("lines", [
    [],
    [Line(1, "A", 1, 100), Line(1, "B", 1, 100)],
    [Line(1, "A", 0, 100)],
    [Line(1, "A", 1, -1)],
    [Line(1, "", 1, 100)],
])
def test_unusable_order_lines_are_named(lines):
    assert domain.order_line_problem(lines)


ORDERED = [Line(1, "A", 5, 200), Line(2, "B", 2, 1_000), Line(3, "A", 1, 150)]


def test_invoice_lines_take_the_order_price_by_line_number():
    shipped = [Line(2, "B", 1, unit_price=1), Line(1, "A", 5)]  # the shipped price is ignored
    lines = domain.invoice_lines(ORDERED, shipped)
    assert lines == [Line(1, "A", 5, 200), Line(2, "B", 1, 1_000)]
    assert domain.order_total(lines) == 2_000


def test_invoice_lines_fall_back_to_the_sku_with_quantity_left():
    assert domain.invoice_lines(ORDERED, [Line(0, "B", 2)]) == [Line(2, "B", 2, 1_000)]
    # Line 1 is fully shipped by the first entry, so the second "A" goes to line 3.
    assert domain.invoice_lines(ORDERED, [Line(1, "A", 5), Line(0, "A", 1)]) == [
        Line(1, "A", 5, 200), Line(3, "A", 1, 150)]


@pytest.mark.parametrize("shipped", [
    [Line(2, "B", 3)],                    # more than ordered
    [Line(2, "B", 1), Line(2, "B", 2)],   # more than ordered, in two entries
    [Line(0, "A", 7)],                    # no line of the SKU has that much left
])
def test_never_invoices_more_than_ordered(shipped):
    with pytest.raises(domain.InvoiceRefused, match="ordered|not on the order"):
        domain.invoice_lines(ORDERED, shipped)


@pytest.mark.parametrize("shipped", [[Line(9, "Z", 1)], [], [Line(1, "A", 0)], [Line(1, "A", -1)]])
def test_unknown_empty_or_negative_shipments_are_refused(shipped):
    with pytest.raises(domain.InvoiceRefused):
        domain.invoice_lines(ORDERED, shipped)


@pytest.mark.parametrize("last, seq, expected", [
    (0, 1, domain.SequenceCheck(stale=False)),
    (4, 5, domain.SequenceCheck(stale=False)),
    (5, 5, domain.SequenceCheck(stale=True)),
    (5, 3, domain.SequenceCheck(stale=True)),
    (5, 9, domain.SequenceCheck(stale=False, missing=(6, 8))),
])
def test_sequence_check(last, seq, expected):
    assert domain.check_sequence(last, seq) == expected
