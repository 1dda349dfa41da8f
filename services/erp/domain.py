"""ERP rules (pure: no I/O), Crossdock's own, shared by every ERP backend: credit,
whether a sales order is accepted, what a line cancellation releases, invoice pricing,
when an order is closed, return authorisation and credit memos, the document numbers,
the ledger's stock sequence and conditional corrections, master-data changes.

A backend (the built-in reference ERP, or an adapter to a real one) asks these
functions what to do and records the answer in its system of record.
"""

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


# ---- sales orders ----

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


@dataclass(frozen=True)
class OrderDecision:
    """How a sales order is taken: accepted (its total reserved on the customer's
    credit) or rejected with a stable code and a reason."""

    accepted: bool
    total: int
    reason_code: str = ""
    reason: str = ""


def decide_sales_order(credit: Credit | None, lines: list[Line], currencies: set[str],
                       customer_id: str = "") -> OrderDecision:
    """Accept an order iff its customer exists, its lines are usable, its prices are in
    the customer's currency and its total fits the customer's available credit."""
    total, problem = order_total(lines), order_line_problem(lines)
    if credit is None:
        return OrderDecision(False, total, "UNKNOWN_CUSTOMER", f"no customer {customer_id!r}")
    if problem:
        return OrderDecision(False, total, "INVALID_ORDER", problem)
    if currencies != {credit.currency_code}:
        return OrderDecision(False, total, "CURRENCY_MISMATCH", f"prices must be in {credit.currency_code}")
    decision = check_credit(credit, total)
    return OrderDecision(decision.approved, total, decision.reason_code, decision.reason)


@dataclass(frozen=True)
class OrderLine:
    """A sales order line as the ERP holds it: what was ordered, invoiced and cancelled."""

    line_number: int
    sku: str
    quantity: int
    unit_price: int
    invoiced: int = 0
    cancelled: int = 0

    @property
    def open(self) -> int:
        """Neither invoiced nor cancelled: still to ship, and holding credit."""
        return self.quantity - self.invoiced - self.cancelled


def open_amount(lines: list[OrderLine]) -> int:
    """The credit an order still holds: its open quantities at its prices."""
    return sum(x.open * x.unit_price for x in lines)


def open_lines(lines: list[OrderLine]) -> list[Line]:
    """What may still be invoiced on each line (earlier shipments invoiced, exceptions cancelled)."""
    return [Line(x.line_number, x.sku, x.open, x.unit_price) for x in lines]


class LinesRefused(ValueError):
    """A cancellation that names a line the order does not have."""


@dataclass(frozen=True)
class LineCancellation:
    cancelled: dict[int, int]  # line number -> quantity cancelled now
    released: int  # credit released, minor units


def cancel_lines(lines: list[OrderLine], requested: list[Line]) -> LineCancellation:
    """Cancel quantities of open lines: never more than is still open on a line (a
    repeat cancels nothing more); the credit they held is released."""
    by_number = {x.line_number: x for x in lines}
    cancelled: Counter[int] = Counter()
    released = 0
    for r in requested:
        line = by_number.get(r.line_number)
        if line is None or (r.sku and r.sku != line.sku):
            raise LinesRefused(f"line {r.line_number} ({r.sku}) is not on the order")
        qty = min(r.quantity, line.open - cancelled[line.line_number])
        if qty <= 0:
            continue
        cancelled[line.line_number] += qty
        released += qty * line.unit_price
    return LineCancellation(dict(cancelled), released)


def closed_status(lines: list[OrderLine]) -> str:
    """"" while anything is open; else INVOICED (something was invoiced) or CANCELLED."""
    if any(x.open for x in lines):
        return ""
    return "INVOICED" if any(x.invoiced for x in lines) else "CANCELLED"


@dataclass(frozen=True)
class CancelDecision:
    cancel: bool  # cancel it now and release what it holds
    ignore: bool  # too late (invoiced): say nothing


def decide_cancel(status: str | None) -> CancelDecision:
    """An ACCEPTED order is cancelled; an INVOICED one stays invoiced (ignored); any
    other (rejected, cancelled, unknown) gets the answer it already has."""
    return CancelDecision(cancel=status == "ACCEPTED", ignore=status == "INVOICED")


def invoice_number(order_id: str, invoices_before: int) -> str:
    return f"INV-{order_id}-{invoices_before + 1}"


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


def invoiceable(status: str | None, order_id: str) -> str:
    """Why a shipment of an order in this state cannot be invoiced ("" when it can)."""
    if status != "ACCEPTED":
        return f"cannot invoice sales order {order_id!r}: {status or 'unknown'}"
    return ""


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


@dataclass(frozen=True)
class Movement:
    sku: str
    warehouse_id: str
    sequence: int
    on_hand_after: int
    delta: int = 0
    key: object = None  # the caller's handle on the movement (its event, its id)


@dataclass(frozen=True)
class LedgerUpdate:
    positions: dict[tuple[str, str], tuple[int, int]]  # (sku, warehouse) -> (on hand, sequence)
    applied: list[Movement]  # in sequence order per position
    stale: list[Movement]
    gaps: list[tuple[Movement, tuple[int, int]]]  # a movement and the sequences it skipped


def apply_movements(positions: dict[tuple[str, str], tuple[int, int]],
                    movements: list[Movement]) -> LedgerUpdate:
    """Follow WMS (the truth): movements of a position are applied in sequence order,
    each setting the on-hand it reports; an already applied or older one is stale; a
    skipped sequence is reported (WMS's on-hand is still taken as it is)."""
    state = dict(positions)
    applied, stale, gaps = [], [], []
    for m in sorted(movements, key=lambda m: (m.sku, m.warehouse_id, m.sequence)):
        key = (m.sku, m.warehouse_id)
        check = check_sequence(state.get(key, (0, 0))[1], m.sequence)
        if check.stale:
            stale.append(m)
            continue
        if check.missing:
            gaps.append((m, check.missing))
        state[key] = (m.on_hand_after, m.sequence)
        applied.append(m)
    changed = {(m.sku, m.warehouse_id) for m in applied}
    return LedgerUpdate({k: v for k, v in state.items() if k in changed}, applied, stale, gaps)


def correction(current: tuple[int, int] | None, expected: tuple[int, int],
               target: tuple[int, int]) -> str:
    """A reconciliation's correction of a position (on hand, last sequence): APPLY while the
    position is still as the caller read it, ALREADY when it is at the target (a repeat),
    else STALE (something moved meanwhile: never overwritten)."""
    if current is not None and current == target:
        return "ALREADY"
    if current is not None and current == expected:
        return "APPLY"
    return "STALE"


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


@dataclass(frozen=True)
class ReturnGate:
    code: str = ""  # refused with this code
    reason: str = ""
    wait: bool = False  # shipped, not invoiced yet: retry later


def return_gate(order_status: str | None, order_customer: str, order_id: str,
                customer_id: str = "") -> ReturnGate:
    """Whether an order's lines may be returned at all: it must exist, be the customer's
    and be invoiced; an accepted order's shipment is invoiced by a command sent before
    the return's: wait for it."""
    if order_status is None:
        return ReturnGate("UNKNOWN_ORDER", f"no sales order {order_id!r}")
    if customer_id and customer_id != order_customer:
        return ReturnGate("CUSTOMER_MISMATCH", f"order {order_id} is not {customer_id}'s")
    if order_status == "ACCEPTED":
        return ReturnGate(wait=True, reason=f"sales order {order_id} is not invoiced yet")
    if order_status != "INVOICED":
        return ReturnGate("NOT_INVOICED", f"sales order {order_id} is {order_status}")
    return ReturnGate()


def rma_number(order_id: str, authorised_before: int) -> str:
    return f"RMA-{order_id}-{authorised_before + 1}"


def credit_memo_number(rma: str) -> str:
    return "CM-" + rma.removeprefix("RMA-")


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

