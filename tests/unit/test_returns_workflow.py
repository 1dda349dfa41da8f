"""The return-to-credit state machine, without I/O."""

from __future__ import annotations

import pytest

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.returns.v1 import returns_pb2 as pb
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import InvalidArgument
from services.returns import workflow
from services.returns.service import validate_request


def ret(status: str = "REQUESTED", **line_values) -> workflow.Return:
    return workflow.Return(
        return_id="RET-1", order_id="O1", customer_id="C1", warehouse_id="WH1", status=status,
        currency_code="USD", rma_number="RMA-O1-1" if status != "REQUESTED" else "",
        receive_within_s=3600,
        lines=[workflow.Line(1, "A", 3, "NOT_NEEDED", unit_price_minor=500, **line_values),
               workflow.Line(2, "B", 2, "DEFECTIVE", unit_price_minor=1000, **line_values)])


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


def authorized() -> erp.ReturnAuthorized:
    return erp.ReturnAuthorized(authorization=erp_pb2.ReturnAuthorization(
        rma_number="RMA-O1-1", return_id="RET-1", expected_credit=usd(3500),
        lines=[erp_pb2.ReturnAuthorizationLine(line_number=1, sku="A", quantity=3, unit_price=usd(500)),
               erp_pb2.ReturnAuthorizationLine(line_number=2, sku="B", quantity=2, unit_price=usd(1000))]))


def receipt(*lines: tuple[int, str, int, int, int, int]) -> wms_pb2.ReturnReceipt:
    """(line, sku, received, restock, scrap, refuse)"""
    return wms_pb2.ReturnReceipt(rma_number="RMA-O1-1", return_id="RET-1", lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, sku=s, received_quantity=rc, restocked_quantity=rs,
                                  scrapped_quantity=sc, refused_quantity=rf)
        for n, s, rc, rs, sc, rf in lines])


def subjects(d: workflow.Decision) -> list[str]:
    return [s for s, _ in d.commands]


def steps(d: workflow.Decision) -> list[str]:
    return [e.step for e in d.entries]


def test_authorisation_prices_lines_as_invoiced_and_tells_the_warehouse():
    d = workflow.react(ret(), "erp.return.authorized", authorized())
    assert d.status == "AUTHORIZED"
    assert d.updates == {"rma_number": "RMA-O1-1", "expected_credit_minor": 3500}
    assert d.lines == {1: {"unit_price_minor": 500}, 2: {"unit_price_minor": 1000}}
    assert d.restart_timer  # the receive window starts with the RMA
    assert subjects(d) == ["cmd.wms.return.expect"]
    expect = d.commands[0][1]
    assert expect.rma_number == "RMA-O1-1" and expect.warehouse_id == "WH1"
    assert [(x.line_number, x.sku, x.expected_quantity, x.reason_code) for x in expect.lines] == [
        (1, "A", 3, "NOT_NEEDED"), (2, "B", 2, "DEFECTIVE")]
    assert steps(d) == ["rma.authorized", "expect.requested"]


def test_erp_refusal_is_terminal_and_sends_nothing():
    d = workflow.react(ret(), "erp.return.refused", erp.ReturnAuthorizationRefused(
        return_id="RET-1", reason_code="QUANTITY_EXCEEDS_INVOICED", reason="3 to return, 2 invoiced"))
    assert d.status == "REFUSED" and "QUANTITY_EXCEEDS_INVOICED" in d.reason
    assert d.commands == [] and d.clear_timer


def test_received_records_quantities_and_stops_the_timer():
    d = workflow.react(ret("EXPECTED"), "wms.return.received",
                       wms.ReturnReceived(return_receipt=receipt((1, "A", 2, 0, 0, 0), (2, "B", 2, 0, 0, 0))))
    assert d.status == "RECEIVED" and d.clear_timer
    assert d.lines == {1: {"received_quantity": 2}, 2: {"received_quantity": 2}}
    assert d.commands == []


def test_inspection_requests_credit_for_restocked_and_scrapped_units_only():
    r = ret("RECEIVED")
    d = workflow.react(r, "wms.return.inspected", wms.ReturnInspected(
        return_receipt=receipt((1, "A", 3, 1, 1, 1), (2, "B", 2, 0, 0, 2))))
    assert d.status == "INSPECTED"
    assert subjects(d) == ["cmd.erp.creditmemo.post"]
    post = d.commands[0][1]
    assert post.rma_number == "RMA-O1-1"
    assert [(x.line_number, x.sku, x.quantity) for x in post.accepted_lines] == [(1, "A", 2)]
    assert d.lines[1] == {"received_quantity": 3, "restocked_quantity": 1, "scrapped_quantity": 1,
                          "refused_quantity": 1}
    assert steps(d) == ["inspected", "credit.requested"]
    assert "10.00 USD" in d.entries[-1].detail


def test_everything_refused_at_inspection_is_refused_and_the_rma_cancelled():
    d = workflow.react(ret("RECEIVED"), "wms.return.inspected", wms.ReturnInspected(
        return_receipt=receipt((1, "A", 3, 0, 0, 3), (2, "B", 2, 0, 0, 2))))
    assert d.status == "REFUSED" and "refused at inspection" in d.reason
    assert subjects(d) == ["cmd.erp.return.cancel"]


def test_a_late_received_event_is_applied_with_the_inspection():
    d = workflow.react(ret("EXPECTED"), "wms.return.inspected", wms.ReturnInspected(
        return_receipt=receipt((1, "A", 3, 3, 0, 0), (2, "B", 2, 2, 0, 0))))
    assert d.status == "INSPECTED"
    assert steps(d) == ["received", "inspected", "credit.requested"]


def test_credit_memo_for_everything_requested_credits_in_full():
    r = ret("INSPECTED", received=3, restocked=3)
    r.lines[1] = workflow.Line(2, "B", 2, "DEFECTIVE", unit_price_minor=1000, received=2, scrapped=2)
    memo = erp_pb2.CreditMemo(credit_memo_id="CM-O1-1", total=usd(3500), lines=[
        erp_pb2.CreditMemoLine(line_number=1, amount=usd(1500)),
        erp_pb2.CreditMemoLine(line_number=2, amount=usd(2000))])
    d = workflow.react(r, "erp.creditmemo.posted", erp.CreditMemoPosted(credit_memo=memo))
    assert d.status == "CREDITED"
    assert d.updates == {"credit_memo_id": "CM-O1-1", "credited_minor": 3500}
    assert d.lines == {1: {"credit_minor": 1500}, 2: {"credit_minor": 2000}}


def test_credit_memo_for_less_than_requested_is_a_partial_credit_that_says_why():
    r = ret("INSPECTED")
    r.lines[0] = workflow.Line(1, "A", 3, "NOT_NEEDED", unit_price_minor=500, received=2, restocked=1,
                               refused=1)
    r.lines[1] = workflow.Line(2, "B", 2, "DEFECTIVE", unit_price_minor=1000, received=2, scrapped=2)
    memo = erp_pb2.CreditMemo(credit_memo_id="CM-O1-1", total=usd(2500))
    d = workflow.react(r, "erp.creditmemo.posted", erp.CreditMemoPosted(credit_memo=memo))
    assert d.status == "PARTIALLY_CREDITED"
    assert d.reason == "3 of 5 unit(s) credited: 1 refused at inspection, 1 not sent back"


def test_credit_refused_after_authorisation_is_compensated():
    d = workflow.react(ret("INSPECTED"), "erp.creditmemo.refused", erp.CreditMemoRefused(
        return_id="RET-1", reason_code="RMA_NOT_AUTHORIZED", reason="no open RMA"))
    assert d.status == "REFUSED" and "RMA_NOT_AUTHORIZED" in d.reason
    assert subjects(d) == ["cmd.erp.return.cancel"]
    assert "compensate" in steps(d)


def test_warehouse_rejection_after_authorisation_cancels_the_rma():
    for status in ("AUTHORIZED", "EXPECTED"):
        d = workflow.react(ret(status), "wms.return.rejected", wms.ReturnRejected(
            return_receipt=receipt(), reason_code="UNKNOWN_WAREHOUSE", reason="no warehouse"))
        assert d.status == "CANCELLED" and d.clear_timer
        assert subjects(d) == ["cmd.erp.return.cancel"]


def test_expiry_before_authorisation_cancels_in_erp_at_once():
    d = workflow.expire(ret("REQUESTED"))
    assert d.status == "EXPIRED" and subjects(d) == ["cmd.erp.return.cancel"]


def test_expiry_withdraws_the_expectation_then_cancels_the_rma():
    d = workflow.expire(ret("EXPECTED"))
    assert d.status == "EXPIRING" and subjects(d) == ["cmd.wms.return.cancel"]
    assert "1 h" in d.reason
    d = workflow.react(ret("EXPIRING"), "wms.return.cancelled", wms.ReturnCancelled(return_receipt=receipt()))
    assert d.status == "EXPIRED" and subjects(d) == ["cmd.erp.return.cancel"]


def test_goods_arriving_while_expiring_carry_on():
    d = workflow.react(ret("EXPIRING"), "wms.return.received",
                       wms.ReturnReceived(return_receipt=receipt((1, "A", 3, 0, 0, 0))))
    assert d.status == "RECEIVED" and "carrying on" in d.entries[0].detail
    d = workflow.react(ret("EXPIRING"), "wms.return.cancel_refused",
                       wms.ReturnCancelRefused(return_receipt=receipt(), reason="already received"))
    assert d.status is None and steps(d) == ["cancel.refused"]


def test_nothing_expires_once_received_or_finished():
    for status in ("RECEIVED", "INSPECTED", "CREDITED", "EXPIRING", "CANCELLED"):
        assert not workflow.expire(ret(status)).changes_anything


def test_cancel_compensates_what_was_done():
    d = workflow.cancel(ret("REQUESTED"), "")
    assert d.status == "CANCELLED" and subjects(d) == ["cmd.erp.return.cancel"]
    d = workflow.cancel(ret("EXPECTED"), "customer kept it")
    assert d.status == "CANCELLING" and subjects(d) == ["cmd.wms.return.cancel"]
    d = workflow.react(ret("CANCELLING"), "wms.return.cancelled",
                       wms.ReturnCancelled(return_receipt=receipt()))
    assert d.status == "CANCELLED" and subjects(d) == ["cmd.erp.return.cancel"]
    assert not workflow.cancel(ret("CANCELLED"), "").changes_anything
    with pytest.raises(workflow.NotCancellable):
        workflow.cancel(ret("RECEIVED"), "")


def test_facts_that_do_not_apply_change_nothing():
    assert not workflow.react(ret("RECEIVED"), "erp.return.authorized", authorized()).changes_anything
    assert not workflow.react(ret("CREDITED"), "erp.creditmemo.posted",
                              erp.CreditMemoPosted(credit_memo=erp_pb2.CreditMemo())).changes_anything
    assert not workflow.react(ret("REQUESTED"), "wms.return.inspected",
                              wms.ReturnInspected(return_receipt=receipt())).changes_anything


def test_every_followed_message_names_its_return():
    assert workflow.return_id_of(authorized()) == "RET-1"
    assert workflow.return_id_of(erp.ReturnAuthorizationRefused(return_id="RET-1")) == "RET-1"
    assert workflow.return_id_of(erp.CreditMemoPosted(
        credit_memo=erp_pb2.CreditMemo(return_id="RET-1"))) == "RET-1"
    assert workflow.return_id_of(wms.ReturnReceived(return_receipt=receipt())) == "RET-1"
    assert workflow.return_id_of(wms.ReturnInspected()) == ""


def test_a_request_is_checked_for_shape():
    with pytest.raises(InvalidArgument) as info:
        validate_request(pb.CreateReturnRequest(lines=[
            pb.ReturnLine(line_number=1, quantity=0),
            pb.ReturnLine(quantity=1, reason=pb.RETURN_REASON_DAMAGED, unit_price=usd(1))]))
    fields = {f for f, _ in info.value.violations}
    assert fields == {"order_id", "lines[0].quantity", "lines[0].reason", "lines[1]",
                      "lines[1].unit_price"}


def test_the_workflows_names_are_the_contracts():
    from services.returns import service

    assert set(service.STATUS.values()) == set(pb.ReturnStatus.values()) - {pb.RETURN_STATUS_UNSPECIFIED}
    assert set(service.REASON.values()) == set(pb.ReturnReason.values()) - {pb.RETURN_REASON_UNSPECIFIED}
