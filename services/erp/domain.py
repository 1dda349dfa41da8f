"""ERP rules (pure: no I/O): credit, invoice pricing, return authorisation and credit
memos, stock sequence, master-data changes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# ---- credit ----

@dataclass(frozen=True)
class Credit:
    """A customer's credit position, in minor units of the customer's currency."""

    currency_code: str
    limit: int
    open_balance: int
    open_orders: int
    blocked: bool = False

    @property
    def available(self) -> int:
        return self.limit - self.open_balance - self.open_orders


@dataclass(frozen=True)
class CreditDecision:
    approved: bool
    available: int
    reason_code: str = ""
    reason: str = ""


def check_credit(credit: Credit, amount: int) -> CreditDecision:
    """Approved iff the customer is not blocked and the amount fits the available credit."""
    available = credit.available
    if credit.blocked:
        return CreditDecision(False, available, "CUSTOMER_BLOCKED", "the customer is blocked")
    if amount > available:
        return CreditDecision(
            False, available, "CREDIT_LIMIT_EXCEEDED",
            f"amount {amount} exceeds the available credit {available} ({credit.currency_code} "
            f"minor units: limit {credit.limit}, open balance {credit.open_balance}, "
            f"open orders {credit.open_orders})",
        )
    return CreditDecision(True, available)


# ---- sales orders and invoices ----

@dataclass(frozen=True)
class Line:
    line_number: int
    sku: str
    quantity: int
    unit_price: int = 0  # minor units; ignored on a shipped line

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price


def order_total(lines: list[Line]) -> int:
    return sum(line.amount for line in lines)


def order_line_problem(lines: list[Line]) -> str:
    """Why these lines cannot make a sales order ("" when they can)."""
    if not lines:
        return "the order has no lines"
    if len({x.line_number for x in lines}) != len(lines):
        return "line numbers must be unique"
    for x in lines:
        if not x.sku or x.quantity <= 0 or x.unit_price < 0:
            return f"line {x.line_number}: needs a SKU, a positive quantity and a price >= 0"
    return ""


class InvoiceRefused(ValueError):
    """A shipment that cannot be invoiced against its order."""


def invoice_lines(ordered: list[Line], shipped: list[Line]) -> list[Line]:
    """Price shipped quantities at the order's prices: one line per order line shipped.

    A shipped line matches the order line with its line number (and the same
    SKU, when one is given), else the first order line of its SKU with
    quantity left. Never invoices more than was ordered.
    """
    by_number = {o.line_number: o for o in ordered}
    invoiced: Counter[int] = Counter()
    for s in shipped:
        if s.quantity < 0:
            raise InvoiceRefused(f"line {s.line_number} ({s.sku}): negative quantity {s.quantity}")
        if s.quantity == 0:
            continue
        line = by_number.get(s.line_number)
        if line is None or (s.sku and s.sku != line.sku):
            line = next((o for o in ordered
                         if o.sku == s.sku and invoiced[o.line_number] < o.quantity), None)
        if line is None:
            raise InvoiceRefused(f"line {s.line_number} ({s.sku}) is not on the order")
        invoiced[line.line_number] += s.quantity
        if invoiced[line.line_number] > line.quantity:
            raise InvoiceRefused(
                f"line {line.line_number} ({line.sku}): shipped {invoiced[line.line_number]}, "
                f"ordered {line.quantity}"
            )
    if not invoiced:
        raise InvoiceRefused("nothing was shipped")
    return [Line(o.line_number, o.sku, invoiced[o.line_number], o.unit_price)
            for o in ordered if invoiced[o.line_number]]


# ---- inventory ledger ----

@dataclass(frozen=True)
class SequenceCheck:
    stale: bool
    # First and last sequence that never arrived, when the new one skips some.
    missing: tuple[int, int] | None = None


def check_sequence(last_sequence: int, sequence: int) -> SequenceCheck:
    """Is a movement stale (already applied or older), and does it skip any?"""
    if sequence <= last_sequence:
        return SequenceCheck(stale=True)
    if sequence > last_sequence + 1:
        return SequenceCheck(stale=False, missing=(last_sequence + 1, sequence - 1))
    return SequenceCheck(stale=False)


# ---- returns and credit memos ----

class ReturnRefused(ValueError):
    """A return (or its credit) that cannot be authorised; ``code`` is a stable machine code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def invoiced_by_line(invoiced: list[Line]) -> dict[int, Line]:
    """Sum the invoiced quantities of an order per order line (an order may have several invoices)."""
    out: dict[int, Line] = {}
    for x in invoiced:
        prev = out.get(x.line_number)
        out[x.line_number] = Line(x.line_number, x.sku, x.quantity + (prev.quantity if prev else 0),
                                  x.unit_price)
    return out


def authorize_return(invoiced: list[Line], held: Counter[int], requested: list[Line]) -> list[Line]:
    """The lines of a return authorisation, priced at what was invoiced.

    ``held`` is what other authorisations of the order already hold per order
    line (authorised and not cancelled, or credited). A requested line names
    its order line by number, or by SKU when the number is 0. Each quantity
    must fit what was invoiced less what is held.
    """
    by_number = invoiced_by_line(invoiced)
    if not by_number:
        raise ReturnRefused("NOT_INVOICED", "nothing of this order was invoiced")
    if not requested:
        raise ReturnRefused("INVALID_RETURN", "the return has no lines")
    out: list[Line] = []
    seen: set[int] = set()
    for r in requested:
        line = by_number.get(r.line_number) if r.line_number else next(
            (x for x in by_number.values() if x.sku == r.sku), None)
        label = f"line {r.line_number or '?'} ({r.sku or '?'})"
        if line is None or (r.sku and r.sku != line.sku):
            raise ReturnRefused("UNKNOWN_LINE", f"{label} was not invoiced on this order")
        if line.line_number in seen:
            raise ReturnRefused("INVALID_RETURN", f"order line {line.line_number} appears twice")
        seen.add(line.line_number)
        if r.quantity <= 0:
            raise ReturnRefused("INVALID_RETURN", f"{label}: quantity must be positive")
        left = line.quantity - held[line.line_number]
        if r.quantity > left:
            raise ReturnRefused(
                "QUANTITY_EXCEEDS_INVOICED",
                f"line {line.line_number} ({line.sku}): {r.quantity} to return, {line.quantity} "
                f"invoiced, {held[line.line_number]} already returned or authorised")
        out.append(Line(line.line_number, line.sku, r.quantity, line.unit_price))
    return sorted(out, key=lambda x: x.line_number)


def credit_memo_lines(authorized: list[Line], accepted: list[Line], invoiced: list[Line],
                      credited_elsewhere: Counter[int]) -> list[Line]:
    """The credit memo lines for the accepted quantities, at the authorised (invoiced) prices.

    Never more than the authorisation holds on a line, and never more than
    was invoiced less what other credit memos of the order already credited.
    """
    by_number = {x.line_number: x for x in authorized}
    totals = invoiced_by_line(invoiced)
    out: list[Line] = []
    for a in accepted:
        if a.quantity == 0:
            continue
        line = by_number.get(a.line_number)
        if line is None or (a.sku and a.sku != line.sku):
            raise ReturnRefused("UNKNOWN_LINE", f"line {a.line_number} ({a.sku}) is not on the RMA")
        if a.quantity < 0 or a.quantity > line.quantity:
            raise ReturnRefused("QUANTITY_EXCEEDS_AUTHORIZED",
                                f"line {a.line_number} ({line.sku}): {a.quantity} accepted, "
                                f"{line.quantity} authorised")
        invoiced_qty = totals[a.line_number].quantity if a.line_number in totals else 0
        if credited_elsewhere[a.line_number] + a.quantity > invoiced_qty:
            raise ReturnRefused("QUANTITY_EXCEEDS_INVOICED",
                                f"line {a.line_number} ({line.sku}): crediting {a.quantity} more "
                                f"than the {invoiced_qty - credited_elsewhere[a.line_number]} "
                                "invoiced and not yet credited")
        out.append(Line(a.line_number, line.sku, a.quantity, line.unit_price))
    if not out:
        raise ReturnRefused("NOTHING_ACCEPTED", "no accepted quantity to credit")
    if len({x.line_number for x in out}) != len(out):
        raise ReturnRefused("INVALID_RETURN", "an order line appears twice")
    return sorted(out, key=lambda x: x.line_number)


# ---- master data ----

def changed_fields(old: dict | None, new: dict) -> list[str]:
    """The fields whose value differs (empty for a new record)."""
    if old is None:
        return []
    return sorted(k for k, v in new.items() if old.get(k) != v)


# ---- paging ----
