"""ERP's return-authorisation and credit-memo rules, WMS's inspection rules, without I/O."""

from __future__ import annotations

from collections import Counter

import pytest

from services.erp import domain as erp
from services.erp.domain import Line, ReturnRefused
from services.wms import domain as wms

INVOICED = [Line(1, "A", 2, 500), Line(2, "B", 4, 1000), Line(1, "A", 1, 500)]  # two invoices


def test_an_authorisation_is_priced_as_invoiced_across_invoices():
    lines = erp.authorize_return(INVOICED, Counter(), [Line(2, "B", 4), Line(0, "A", 3)])
    assert lines == [Line(1, "A", 3, 500), Line(2, "B", 4, 1000)]
    assert erp.order_total(lines) == 5500


@pytest.mark.parametrize("requested, held, code", [
    ([Line(2, "B", 3)], Counter({2: 2}), "QUANTITY_EXCEEDS_INVOICED"),
    ([Line(3, "C", 1)], Counter(), "UNKNOWN_LINE"),
    ([Line(1, "B", 1)], Counter(), "UNKNOWN_LINE"),
    ([Line(1, "A", 1), Line(0, "A", 1)], Counter(), "INVALID_RETURN"),
    ([Line(1, "A", 0)], Counter(), "INVALID_RETURN"),
])
def test_what_cannot_be_authorised(requested, held, code):
    with pytest.raises(ReturnRefused) as info:
        erp.authorize_return(INVOICED, held, requested)
    assert info.value.code == code


def test_nothing_invoiced_nothing_to_return():
    with pytest.raises(ReturnRefused) as info:
        erp.authorize_return([], Counter(), [Line(1, "A", 1)])
    assert info.value.code == "NOT_INVOICED"
    assert "2 already returned" in str(pytest.raises(ReturnRefused, erp.authorize_return, INVOICED,
                                                     Counter({2: 2}), [Line(2, "B", 3)]).value)


def test_a_credit_memo_credits_accepted_units_at_the_authorised_price():
    authorized = [Line(1, "A", 3, 500), Line(2, "B", 2, 1000)]
    lines = erp.credit_memo_lines(authorized, [Line(1, "A", 2), Line(2, "B", 0)], INVOICED, Counter())
    assert lines == [Line(1, "A", 2, 500)]


def test_a_credit_memo_never_credits_more_than_authorised_or_invoiced():
    authorized = [Line(1, "A", 3, 500)]
    with pytest.raises(ReturnRefused) as info:
        erp.credit_memo_lines(authorized, [Line(1, "A", 4)], INVOICED, Counter())
    assert info.value.code == "QUANTITY_EXCEEDS_AUTHORIZED"
    with pytest.raises(ReturnRefused) as info:
        erp.credit_memo_lines(authorized, [Line(1, "A", 2)], INVOICED, Counter({1: 2}))
    assert info.value.code == "QUANTITY_EXCEEDS_INVOICED"
    with pytest.raises(ReturnRefused) as info:
        erp.credit_memo_lines(authorized, [Line(1, "A", 0)], INVOICED, Counter())
    assert info.value.code == "NOTHING_ACCEPTED"


def test_master_data_changes_name_their_fields():
    assert erp.changed_fields(None, {"unit_price": 1}) == []
    assert (erp.changed_fields({"unit_price": 1, "uom": "EA"}, {"unit_price": 2, "uom": "EA"})
            == ["unit_price"])


def test_return_rules_parse_and_decide():
    rules = wms.parse_return_rules("NOT_NEEDED=RESTOCK, defective=scrap,*=REFUSE")
    assert rules == {"NOT_NEEDED": "RESTOCK", "DEFECTIVE": "SCRAP", "*": "REFUSE"}
    assert wms.autopilot_disposition(1, 3, "NOT_NEEDED", rules) == wms.Disposition(1, 3, 0, 0)
    assert wms.autopilot_disposition(2, 2, "DEFECTIVE", rules) == wms.Disposition(2, 0, 2, 0)
    assert wms.autopilot_disposition(3, 1, "OTHER", rules) == wms.Disposition(3, 0, 0, 1)
    assert wms.autopilot_disposition(3, 1, "OTHER", {}) == wms.Disposition(3, 0, 0, 1)
    with pytest.raises(ValueError):
        wms.parse_return_rules("DAMAGED=KEEP")


def test_a_receipt_takes_at_most_what_is_expected():
    assert wms.receipt_problems({1: 3, 2: 1}, {1: 2}) == []
    assert [f for f, _ in wms.receipt_problems({1: 3}, {1: 4, 2: 1})] == [
        "lines[0].received_quantity", "lines[1].line_number"]
    assert wms.receipt_problems({1: 3}, {1: 0}) == [
        ("lines", "nothing received: leave the return expected instead")]


def test_an_inspection_disposes_of_every_received_unit_exactly_once():
    received = {1: 3, 2: 2, 3: 0}
    assert wms.inspection_problems(received, [wms.Disposition(1, 1, 1, 1), wms.Disposition(2, 0, 0, 2)]) == []
    problems = wms.inspection_problems(received, [wms.Disposition(1, 1, 1, 0), wms.Disposition(1, 3, 0, 0),
                                                  wms.Disposition(9, 1, 0, 0)])
    assert [f for f, _ in problems] == ["lines[0]", "lines[1].line_number", "lines[2].line_number", "lines"]
    assert "restock + scrap + refuse = 2, but 3 were received" in problems[0][1]
    assert problems[-1] == ("lines", "line 2 (2 received) has no disposition")
