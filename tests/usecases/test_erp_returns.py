"""ERP return authorisations, credit memos and the settlement export, use case by use
case: an RMA is priced as invoiced and holds what it authorises; one credit memo per
return, never more than invoiced; the export's rows add up to its totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.erp import contract
from services.erp.builtin.returns import NotInvoicedYet
from services.mesh.errors import InvalidArgument, NotFound
from tests.usecases.erp_support import builtin_erp, customer, sales_order, shipped


@pytest.fixture
async def erp(usecase_store):
    erp = await builtin_erp(usecase_store)
    await erp.backend.master_data.upsert_customer(customer("C-1", 1_000_000))
    return erp


async def invoiced(erp, order_id: str, *lines: tuple[str, int, int]) -> None:
    await erp.create(sales_order(order_id, "C-1", *lines))
    await erp.invoice(shipped(order_id, f"SHP-{order_id}",
                              *[(n, s, q) for n, (s, q, _) in enumerate(lines, 1)]))


def authorize(return_id: str, order_id: str, *lines: tuple[int, str, int]) -> msgs.AuthorizeReturn:
    return msgs.AuthorizeReturn(return_id=return_id, order_id=order_id, lines=[
        erp_pb2.ReturnAuthorizationLine(line_number=n, sku=s, quantity=q) for n, s, q in lines])


def credit(return_id: str, rma: str, *lines: tuple[int, str, int]) -> msgs.PostCreditMemo:
    return msgs.PostCreditMemo(return_id=return_id, rma_number=rma, accepted_lines=[
        erp_pb2.CreditMemoLine(line_number=n, sku=s, quantity=q) for n, s, q in lines])


def of_return(published, return_id: str) -> list:
    def rid(m):
        for path in ("authorization", "credit_memo"):
            if m.DESCRIPTOR.fields_by_name.get(path):
                return getattr(m, path).return_id
        return m.return_id
    return [p.body for p in published if rid(p.body) == return_id]


async def test_a_return_is_authorised_as_invoiced_credited_once_and_never_beyond(erp, outbox):
    r = erp.backend.returns
    await invoiced(erp, "O1", ("SKU-R1", 3, 500), ("SKU-R2", 2, 1000))
    await erp.send(r.authorize, authorize("RET-A", "O1", (1, "SKU-R1", 2), (2, "SKU-R2", 2)))
    await erp.send(r.authorize, authorize("RET-A", "O1", (1, "SKU-R1", 2), (2, "SKU-R2", 2)))  # a repeat
    first, repeat = of_return(await outbox(erp.store, "erp.return.authorized"), "RET-A")
    a = first.authorization
    assert a.rma_number == "RMA-O1-1" and repeat.authorization.rma_number == a.rma_number
    assert ([(x.line_number, x.quantity, x.unit_price.amount_minor) for x in a.lines]
            == [(1, 2, 500), (2, 2, 1000)])
    assert a.expected_credit.amount_minor == 3000

    # Only 1 of line 1 and nothing of line 2 is left to return.
    await erp.send(r.authorize, authorize("RET-B", "O1", (2, "SKU-R2", 1)))
    (refused,) = of_return(await outbox(erp.store, "erp.return.refused"), "RET-B")
    assert refused.reason_code == "QUANTITY_EXCEEDS_INVOICED" and "2 already returned" in refused.reason

    # 1 of line 1 and 2 of line 2 accepted at inspection; a repeat posts nothing more.
    await erp.send(r.post_credit_memo, credit("RET-A", a.rma_number, (1, "SKU-R1", 1), (2, "SKU-R2", 2)))
    await erp.send(r.post_credit_memo, credit("RET-A", a.rma_number, (1, "SKU-R1", 2)))
    memo, again = of_return(await outbox(erp.store, "erp.creditmemo.posted"), "RET-A")
    assert (memo.credit_memo.credit_memo_id, memo.credit_memo.total.amount_minor) == ("CM-O1-1", 2500)
    assert again == memo
    memos, _ = await r.list_credit_memos(10, "", "O1", "")
    assert [m.credit_memo_id for m in memos] == ["CM-O1-1"]
    assert (await erp.backend.master_data.get_customer("C-1")).open_balance.amount_minor == 3500 - 2500
    rma = await r.get_authorization(a.rma_number)
    assert (rma.status, rma.credit_memo_id) == (erp_pb2.RETURN_AUTHORIZATION_STATUS_CREDITED, "CM-O1-1")

    # What was credited stays held: of line 1 only 2 more may be authorised; cancelled, nothing credits.
    await erp.send(r.authorize, authorize("RET-C", "O1", (1, "SKU-R1", 2)))
    (c_auth,) = of_return(await outbox(erp.store, "erp.return.authorized"), "RET-C")
    assert c_auth.authorization.rma_number == "RMA-O1-2"
    await erp.send(r.cancel, msgs.CancelReturnAuthorization(return_id="RET-C", reason="expired"))
    await erp.send(r.post_credit_memo, credit("RET-C", "RMA-O1-2", (1, "SKU-R1", 2)))
    (cm_refused,) = of_return(await outbox(erp.store, "erp.creditmemo.refused"), "RET-C")
    assert cm_refused.reason_code == "RMA_NOT_AUTHORIZED"


async def test_a_return_of_a_shipped_order_waits_for_its_invoice(erp, outbox):
    await erp.create(sales_order("O1", "C-1", ("SKU-W", 2, 300)))
    with pytest.raises(NotInvoicedYet):  # retried with back-off by the consumer, not refused
        await erp.send(erp.backend.returns.authorize, authorize("RET-W", "O1", (1, "SKU-W", 1)))
    await erp.invoice(shipped("O1", "SHP-1", (1, "SKU-W", 2)))
    await erp.send(erp.backend.returns.authorize, authorize("RET-W", "O1", (1, "SKU-W", 1)))
    (auth,) = of_return(await outbox(erp.store, "erp.return.authorized"), "RET-W")
    assert auth.authorization.expected_credit.amount_minor == 300


@pytest.mark.parametrize("cmd, code", [
    (authorize("RET-U", "NOPE", (1, "A", 1)), "UNKNOWN_ORDER"),
    (msgs.AuthorizeReturn(return_id="RET-M", order_id="O1", customer_id="C-OTHER"), "CUSTOMER_MISMATCH"),
])
async def test_what_cannot_be_returned_is_refused_with_a_code(erp, outbox, cmd, code):
    await invoiced(erp, "O1", ("A", 1, 100))
    await erp.send(erp.backend.returns.authorize, cmd)
    (refused,) = of_return(await outbox(erp.store, "erp.return.refused"), cmd.return_id)
    assert refused.reason_code == code


async def test_a_cancel_that_arrives_first_leaves_a_tombstone(erp, outbox):
    await invoiced(erp, "O1", ("A", 1, 100))
    await erp.send(erp.backend.returns.cancel, msgs.CancelReturnAuthorization(return_id="RET-X"))
    await erp.send(erp.backend.returns.authorize, authorize("RET-X", "O1", (1, "A", 1)))
    assert len(of_return(await outbox(erp.store, "erp.return.cancelled"), "RET-X")) == 2
    assert of_return(await outbox(erp.store, "erp.return.authorized"), "RET-X") == []
    with pytest.raises(NotFound):
        await erp.backend.returns.get_authorization("RMA-NOPE")


async def test_the_settlement_export_is_one_snapshot_whose_rows_add_up_to_its_totals(erp):
    start = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(3):
        await invoiced(erp, f"O{i}", ("SKU-S", 1 + i, 250))
    await erp.send(erp.backend.returns.authorize, authorize("RET-S", "O2", (1, "SKU-S", 2)))
    await erp.send(erp.backend.returns.post_credit_memo, credit("RET-S", "RMA-O2-1", (1, "SKU-S", 2)))
    end = datetime.now(UTC) + timedelta(seconds=1)
    chunks = [c async for c in erp.backend.settlement.export(start, end)]
    (totals,) = chunks[0].totals
    assert chunks[0].record_count == 4 and not chunks[0].records
    records = [r for c in chunks[1:] for r in c.records]
    assert [r.document_type for r in records] == [erp_pb2.SETTLEMENT_DOCUMENT_TYPE_INVOICE] * 3 + [
        erp_pb2.SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO]
    assert (totals.invoice_count, totals.invoiced_minor, totals.credit_memo_count, totals.credited_minor,
            totals.net_minor) == (3, 1500, 1, 500, 1000)
    assert await erp.backend.settlement.totals(start, end) == [totals]
    assert records[-1].reference == "RMA-O2-1" and records[0].reference == "SHP-O0"
    empty = [c async for c in erp.backend.settlement.export(start - timedelta(days=2),
                                                            start - timedelta(days=1))]
    assert len(empty) == 1 and empty[0].record_count == 0
    with pytest.raises(InvalidArgument, match="end_time"):
        contract.period(end, start)
