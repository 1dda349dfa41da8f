"""ERP rules (pure: no I/O): credit, invoice pricing, stock sequence, paging tokens."""

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


# ---- paging ----
