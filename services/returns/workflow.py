"""The return-to-credit workflow as a pure state machine (no I/O).

Each fact that reaches a return (an ERP or WMS event, the receive-window
timer, a cancel request) goes through ``react``/``expire``/``cancel``, which
return a ``Decision``: the new status, timeline entries, field and line
updates, the commands to send and what happens to the timer. The caller
applies it in one transaction (state + timeline + outbox).

    REQUESTED --erp authorized--> AUTHORIZED (expect at WMS; timer restarts)
        |  \\--erp refused--> REFUSED
        |timer: EXPIRED (RMA cancelled in ERP)    cancel: CANCELLED (RMA cancelled)
    AUTHORIZED --wms expected--> EXPECTED --wms received--> RECEIVED
    AUTHORIZED/EXPECTED --wms rejected--> CANCELLED (compensate: RMA cancelled)
    AUTHORIZED/EXPECTED --timer--> EXPIRING (withdraw expectation) --wms cancelled--> EXPIRED (RMA cancelled)
    AUTHORIZED/EXPECTED --cancel--> CANCELLING --wms cancelled--> CANCELLED (RMA cancelled)
    EXPIRING/CANCELLING --wms received--> RECEIVED (the goods are at the dock: carry on)
    RECEIVED --wms inspected--> INSPECTED (post credit memo for restocked + scrapped)
        \\--everything refused--> REFUSED (RMA cancelled, nothing credited)
    INSPECTED --erp credit memo posted--> CREDITED | PARTIALLY_CREDITED
        \\--erp credit memo refused--> REFUSED (RMA cancelled, nothing credited)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf.message import Message

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.mesh import process
from services.mesh.process import Entry, NotCancellable

# The vocabulary of the workflow. A value is what the store holds and, prefixed
# (RETURN_STATUS_…), the name in the contract; service.py checks each against
# the contract at import.


class ReturnStatus(StrEnum):
    REQUESTED = "REQUESTED"
    AUTHORIZED = "AUTHORIZED"
    EXPECTED = "EXPECTED"
    RECEIVED = "RECEIVED"
    INSPECTED = "INSPECTED"
    CREDITED = "CREDITED"
    PARTIALLY_CREDITED = "PARTIALLY_CREDITED"
    REFUSED = "REFUSED"
    EXPIRING = "EXPIRING"
    EXPIRED = "EXPIRED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class ReturnReason(StrEnum):
    """Why the customer sends it back."""

    DAMAGED = "DAMAGED"
    DEFECTIVE = "DEFECTIVE"
    WRONG_ITEM = "WRONG_ITEM"
    NOT_NEEDED = "NOT_NEEDED"
    OTHER = "OTHER"


TERMINAL = {ReturnStatus.CREDITED, ReturnStatus.PARTIALLY_CREDITED, ReturnStatus.REFUSED,
            ReturnStatus.EXPIRED, ReturnStatus.CANCELLED}
# The receive-window timer runs in these.
TIMED = {ReturnStatus.REQUESTED, ReturnStatus.AUTHORIZED, ReturnStatus.EXPECTED}
AT_DOCK_PENDING = {ReturnStatus.AUTHORIZED, ReturnStatus.EXPECTED, ReturnStatus.EXPIRING,
                   ReturnStatus.CANCELLING}


@dataclass(frozen=True)
class Line:
    line_number: int
    sku: str
    quantity: int  # requested
    reason: ReturnReason
    note: str = ""
    unit_price_minor: int = 0
    received: int = 0
    restocked: int = 0
    scrapped: int = 0
    refused: int = 0

    @property
    def accepted(self) -> int:
        return self.restocked + self.scrapped


@dataclass
class Return:
    return_id: str
    order_id: str
    customer_id: str
    warehouse_id: str
    status: ReturnStatus
    currency_code: str
    lines: list[Line]
    rma_number: str = ""
    receive_within_s: float = 0.0


@dataclass
class Decision(process.Decision):
    """The shared part (status, reason, timeline entries, updates, commands), and what
    only a return records: its lines, and what happens to its receive-window timer."""

    # line_number -> column values
    lines: dict[int, dict[str, int]] = field(default_factory=dict)
    restart_timer: bool = False
    clear_timer: bool = False

    @property
    def changes_anything(self) -> bool:
        return super().changes_anything or bool(self.lines or self.restart_timer or self.clear_timer)


def _money(r: Return, minor: int) -> str:
    return f"{minor / 100:.2f} {r.currency_code}"


# ---- the commands the workflow sends ----

def authorize(r: Return) -> tuple[str, Message]:
    return "cmd.erp.return.authorize", erp.AuthorizeReturn(
        return_id=r.return_id, order_id=r.order_id, customer_id=r.customer_id,
        lines=[erp_pb2.ReturnAuthorizationLine(line_number=x.line_number, sku=x.sku, quantity=x.quantity)
               for x in r.lines])


def _expect(r: Return, rma_number: str) -> tuple[str, Message]:
    return "cmd.wms.return.expect", wms.ExpectReturn(
        rma_number=rma_number, return_id=r.return_id, order_id=r.order_id,
        warehouse_id=r.warehouse_id,
        lines=[wms_pb2.ReturnReceiptLine(line_number=x.line_number, sku=x.sku, reason_code=x.reason,
                                         expected_quantity=x.quantity, note=x.note) for x in r.lines])


def _withdraw(r: Return, reason: str) -> tuple[str, Message]:
    return "cmd.wms.return.cancel", wms.CancelReturn(rma_number=r.rma_number, return_id=r.return_id,
                                                    reason=reason)


def _cancel_rma(r: Return, reason: str) -> tuple[str, Message]:
    return "cmd.erp.return.cancel", erp.CancelReturnAuthorization(return_id=r.return_id, reason=reason)


def _post_credit(r: Return, lines: list[Line]) -> tuple[str, Message]:
    return "cmd.erp.creditmemo.post", erp.PostCreditMemo(
        return_id=r.return_id, rma_number=r.rma_number,
        accepted_lines=[erp_pb2.CreditMemoLine(line_number=x.line_number, sku=x.sku,
                                               quantity=x.accepted) for x in lines if x.accepted])


def _dispositions(lines: list[Line]) -> str:
    return "; ".join(f"{x.sku}: restock {x.restocked}, scrap {x.scrapped}, refuse {x.refused}"
                     for x in lines)


# ---- reactions to facts from the systems ----

def react(r: Return, subject: str, body: Message) -> Decision:
    """What the return does when ``subject`` happens; an empty Decision when it does not apply."""
    s = r.status
    d = Decision()
    match subject:
        case "erp.return.authorized" if s == ReturnStatus.REQUESTED:
            a = body.authorization
            prices = {x.line_number: x.unit_price.amount_minor for x in a.lines}
            d.status = ReturnStatus.AUTHORIZED
            d.updates.update(rma_number=a.rma_number, expected_credit_minor=a.expected_credit.amount_minor)
            d.lines = {n: {"unit_price_minor": p} for n, p in prices.items()}
            d.restart_timer = True
            expected = _money(r, a.expected_credit.amount_minor)
            d.entries += [Entry("erp", "rma.authorized", f"{a.rma_number}, expected credit {expected}"),
                          Entry("returns", "expect.requested",
                                f"warehouse {r.warehouse_id} told to expect {a.rma_number}")]
            d.commands.append(_expect(r, a.rma_number))
        case "erp.return.authorized" if s in (ReturnStatus.CANCELLED, ReturnStatus.EXPIRED):
            # Crossed our cancel: the cancel command that follows closes the RMA.
            d.entries.append(Entry("erp", "rma.authorized", f"{body.authorization.rma_number} "
                                   f"(return already {s.lower()})"))
        case "erp.return.refused" if s == ReturnStatus.REQUESTED:
            d.status, d.reason = ReturnStatus.REFUSED, f"{body.reason_code}: {body.reason}"
            d.clear_timer = True
            d.entries.append(Entry("erp", "rma.refused", d.reason))
        case "erp.return.cancelled":
            d.entries.append(Entry("erp", "rma.cancelled", f"{body.rma_number or 'RMA'} cancelled, "
                                                           "nothing credited"))
        case "wms.return.expected" if s == ReturnStatus.AUTHORIZED:
            d.status = ReturnStatus.EXPECTED
            d.entries.append(Entry("wms", "expected", f"warehouse {r.warehouse_id} expects "
                                                      f"{body.return_receipt.rma_number}"))
        case "wms.return.rejected" if s in (ReturnStatus.AUTHORIZED, ReturnStatus.EXPECTED):
            reason = f"warehouse refused: {body.reason_code}: {body.reason}"
            d.status, d.reason, d.clear_timer = ReturnStatus.CANCELLED, reason, True
            d.entries += [Entry("wms", "expectation.rejected", reason),
                          Entry("returns", "compensate", "RMA cancelled in ERP, nothing credited")]
            d.commands.append(_cancel_rma(r, reason))
        case "wms.return.received" if s in AT_DOCK_PENDING:
            _received(r, body.return_receipt, d)
        case "wms.return.inspected" if s == ReturnStatus.RECEIVED or s in AT_DOCK_PENDING:
            if s != ReturnStatus.RECEIVED:  # the received event is late (redelivery): both at once
                _received(r, body.return_receipt, d)
            _inspected(r, body.return_receipt, d)
        case "wms.return.cancelled" if s in (ReturnStatus.EXPIRING, ReturnStatus.CANCELLING):
            final = ReturnStatus.EXPIRED if s == ReturnStatus.EXPIRING else ReturnStatus.CANCELLED
            d.status = final
            d.entries += [Entry("wms", "expectation.cancelled", "no longer expected at the dock"),
                          Entry("returns", "compensate", "RMA cancelled in ERP, nothing credited")]
            d.commands.append(_cancel_rma(r, "return expired: not received in time"
                                          if final == ReturnStatus.EXPIRED else "return cancelled"))
        case "wms.return.cancel_refused":
            d.entries.append(Entry("wms", "cancel.refused", body.reason))
        case "erp.creditmemo.posted" if s == ReturnStatus.INSPECTED:
            memo = body.credit_memo
            credit = {x.line_number: x.amount.amount_minor for x in memo.lines}
            requested = sum(x.quantity for x in r.lines)
            accepted = sum(x.accepted for x in r.lines)
            d.updates.update(credit_memo_id=memo.credit_memo_id, credited_minor=memo.total.amount_minor)
            d.lines = {x.line_number: {"credit_minor": credit.get(x.line_number, 0)} for x in r.lines}
            d.entries.append(Entry("erp", "creditmemo.posted",
                                   f"{memo.credit_memo_id}: {_money(r, memo.total.amount_minor)} credited"))
            if accepted >= requested:
                d.status, d.reason = ReturnStatus.CREDITED, ""
            else:
                refused = sum(x.refused for x in r.lines)
                missing = requested - sum(x.received for x in r.lines)
                why = ", ".join(p for p in (f"{refused} refused at inspection" if refused else "",
                                            f"{missing} not sent back" if missing else "") if p)
                d.status = ReturnStatus.PARTIALLY_CREDITED
                d.reason = f"{accepted} of {requested} unit(s) credited: {why}"
        case "erp.creditmemo.refused" if s == ReturnStatus.INSPECTED:
            reason = f"credit refused by ERP: {body.reason_code}: {body.reason}"
            d.status, d.reason = ReturnStatus.REFUSED, reason
            d.entries += [Entry("erp", "creditmemo.refused", reason),
                          Entry("returns", "compensate", "RMA cancelled, nothing credited")]
            d.commands.append(_cancel_rma(r, reason))
    return d


def _received(r: Return, receipt: wms_pb2.ReturnReceipt, d: Decision) -> None:
    got = {x.line_number: x.received_quantity for x in receipt.lines}
    d.status, d.clear_timer = ReturnStatus.RECEIVED, True
    for x in r.lines:
        d.lines.setdefault(x.line_number, {})["received_quantity"] = got.get(x.line_number, 0)
    detail = ", ".join(f"{x.sku} {got.get(x.line_number, 0)}/{x.quantity}" for x in r.lines)
    if r.status in (ReturnStatus.EXPIRING, ReturnStatus.CANCELLING):
        detail += " (arrived before the expectation was withdrawn: carrying on)"
    d.entries.append(Entry("wms", "received", detail))


def _inspected(r: Return, receipt: wms_pb2.ReturnReceipt, d: Decision) -> None:
    by_line = {x.line_number: x for x in receipt.lines}
    lines = []
    for x in r.lines:
        got = by_line.get(x.line_number)
        values = dict(received=got.received_quantity if got else 0,
                      restocked=got.restocked_quantity if got else 0,
                      scrapped=got.scrapped_quantity if got else 0,
                      refused=got.refused_quantity if got else 0)
        d.lines.setdefault(x.line_number, {}).update(
            {f"{k}_quantity": v for k, v in values.items()})
        lines.append(Line(x.line_number, x.sku, x.quantity, x.reason, x.note, x.unit_price_minor,
                          **values))
    d.entries.append(Entry("wms", "inspected", _dispositions(lines)))
    accepted = sum(x.accepted for x in lines)
    d.clear_timer = True
    if not accepted:
        reason = "every unit refused at inspection"
        d.status, d.reason = ReturnStatus.REFUSED, reason
        d.entries.append(Entry("returns", "compensate", "RMA cancelled in ERP, nothing credited"))
        d.commands.append(_cancel_rma(r, reason))
        return
    d.status = ReturnStatus.INSPECTED
    amount = sum(x.accepted * x.unit_price_minor for x in lines)
    d.entries.append(Entry("returns", "credit.requested",
                           f"credit memo requested for {accepted} unit(s), {_money(r, amount)}"))
    d.commands.append(_post_credit(r, lines))


# ---- the timer and cancel requests ----

def expire(r: Return) -> Decision:
    """The receive window ended."""
    d = Decision()
    window = f"{r.receive_within_s / 3600:g} h" if r.receive_within_s >= 3600 else f"{r.receive_within_s:g} s"
    if r.status == ReturnStatus.REQUESTED:
        reason = f"not authorised within the receive window ({window})"
        d.status, d.reason, d.clear_timer = ReturnStatus.EXPIRED, reason, True
        d.entries.append(Entry("returns", "expired", reason))
        d.commands.append(_cancel_rma(r, reason))
    elif r.status in (ReturnStatus.AUTHORIZED, ReturnStatus.EXPECTED):
        reason = f"not received within the receive window ({window})"
        d.status, d.reason, d.clear_timer = ReturnStatus.EXPIRING, reason, True
        d.entries.append(Entry("returns", "expired", reason + ": withdrawing the expectation"))
        d.commands.append(_withdraw(r, reason))
    return d


def cancel(r: Return, reason: str) -> Decision:
    """A cancel request from a channel or the customer-service desk."""
    reason = reason or "cancelled on request"
    d = Decision()
    if r.status in (ReturnStatus.CANCELLED, ReturnStatus.CANCELLING):
        return d  # already under way: the same answer again
    if r.status == ReturnStatus.REQUESTED:
        d.status, d.reason, d.clear_timer = ReturnStatus.CANCELLED, reason, True
        d.entries.append(Entry("returns", "cancelled", reason))
        d.commands.append(_cancel_rma(r, reason))
    elif r.status in (ReturnStatus.AUTHORIZED, ReturnStatus.EXPECTED):
        d.status, d.reason, d.clear_timer = ReturnStatus.CANCELLING, reason, True
        d.entries.append(Entry("returns", "cancel.requested", reason))
        d.commands.append(_withdraw(r, reason))
    else:
        raise NotCancellable(f"return {r.return_id} is {r.status} and can no longer be cancelled")
    return d


def return_id_of(body: Message) -> str:
    """Every message the workflow follows names its return in one of these places."""
    for path in ("return_id", "authorization.return_id", "credit_memo.return_id",
                 "return_receipt.return_id"):
        obj = body
        parts = path.split(".")
        for part in parts:
            if part not in obj.DESCRIPTOR.fields_by_name:
                obj = None
                break
            obj = getattr(obj, part)
        if isinstance(obj, str) and obj:
            return obj
    return ""


def money(currency: str, minor: int) -> Money:
    return Money(currency_code=currency, amount_minor=minor)
