"""Stock and fulfilment rules (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

Line = tuple[str, int]  # (sku, quantity)

# Weight of a unit whose item the ERP master has not (yet) replicated.
DEFAULT_UNIT_WEIGHT_GRAMS = 500


def line_problems(lines: Sequence[Line], field: str = "lines") -> list[tuple[str, str]]:
    """Field violations of a list of lines: at least one, SKUs present and unique, quantities > 0."""
    if not lines:
        return [(field, "at least one line is required")]
    problems = []
    seen = set()
    for i, (sku, quantity) in enumerate(lines):
        if not sku:
            problems.append((f"{field}[{i}].sku", "required"))
        elif sku in seen:
            problems.append((f"{field}[{i}].sku", f"duplicate SKU {sku!r}"))
        seen.add(sku)
        if quantity <= 0:
            problems.append((f"{field}[{i}].quantity", "must be positive"))
    return problems


def shortages(lines: Sequence[Line], available: Mapping[str, int]) -> list[Line]:
    """The missing quantity of every line that the available stock does not cover.

    An order is allocated all or nothing: only when this is empty.
    """
    missing = [(sku, qty - max(available.get(sku, 0), 0)) for sku, qty in lines]
    return [(sku, qty) for sku, qty in missing if qty > 0]


@dataclass(frozen=True)
class Backorder:
    order_id: str
    created_at: datetime
    lines: tuple[Line, ...]


def fcfs_allocation(backorders: Sequence[Backorder], available: Mapping[str, int]) -> list[str]:
    """Which backordered orders to allocate now, first come first served.

    Orders are considered oldest first (``created_at``, then ``order_id`` to
    break ties). Each one that fits entirely in what is still available gets
    it (all or nothing); one that does not fit is skipped and keeps its place
    in the queue, so a later, smaller order may go ahead of it rather than
    leave stock idle.
    """
    left = dict(available)
    chosen = []
    for b in sorted(backorders, key=lambda b: (b.created_at, b.order_id)):
        if not shortages(b.lines, left):
            for sku, qty in b.lines:
                left[sku] -= qty
            chosen.append(b.order_id)
    return chosen


def transfer_refusal(lines: Sequence[Line], warehouse_known: bool, warehouse_id: str,
                     available: Mapping[str, int]) -> tuple[str, str] | None:
    """Why a transfer out cannot be issued (reason code, reason), or None: it is issued
    whole from available stock, or not at all."""
    if problems := line_problems(lines):
        return "INVALID_LINES", "; ".join(f"{field}: {what}" for field, what in problems)
    if not warehouse_known:
        return "UNKNOWN_WAREHOUSE", f"no warehouse {warehouse_id!r}"
    if short := shortages(lines, available):
        return "INSUFFICIENT_STOCK", ", ".join(f"{sku} short by {qty}" for sku, qty in short)
    return None


def package_weight(lines: Sequence[Line], unit_weights: Mapping[str, int], declared: int = 0) -> int:
    """The declared weight when given, else the sum of the items' master-data weights."""
    if declared > 0:
        return declared
    return sum(qty * unit_weights.get(sku, DEFAULT_UNIT_WEIGHT_GRAMS) for sku, qty in lines)


# ---- returns ----

DISPOSITIONS = ("RESTOCK", "SCRAP", "REFUSE")


@dataclass(frozen=True)
class Disposition:
    """What inspection decided for one returned line (their sum is what was received)."""

    line_number: int
    restock: int
    scrap: int
    refuse: int

    @property
    def total(self) -> int:
        return self.restock + self.scrap + self.refuse


def parse_return_rules(text: str) -> dict[str, str]:
    """``REASON=RESTOCK|SCRAP|REFUSE`` pairs, comma-separated; ``*`` is any other reason."""
    rules = {}
    for part in text.split(","):
        if not part.strip():
            continue
        reason, _, disposition = part.partition("=")
        reason, disposition = reason.strip().upper(), disposition.strip().upper()
        if not reason or disposition not in DISPOSITIONS:
            raise ValueError(f"bad return rule {part.strip()!r}: expected REASON=RESTOCK|SCRAP|REFUSE")
        rules[reason] = disposition
    return rules


def autopilot_disposition(line_number: int, received: int, reason_code: str,
                          rules: Mapping[str, str]) -> Disposition:
    """The whole received quantity goes where the rule for its reason says (REFUSE without a rule)."""
    where = rules.get(reason_code.upper(), rules.get("*", "REFUSE"))
    return Disposition(line_number, *(received if where == d else 0 for d in DISPOSITIONS))


def receipt_problems(expected: Mapping[int, int], received: Mapping[int, int]) -> list[tuple[str, str]]:
    """Violations of a receipt: known lines, quantities between 0 and what is expected."""
    problems = []
    for i, (line_number, qty) in enumerate(received.items()):
        if line_number not in expected:
            problems.append((f"lines[{i}].line_number", f"line {line_number} is not on the RMA"))
        elif qty < 0 or qty > expected[line_number]:
            problems.append((f"lines[{i}].received_quantity",
                             f"between 0 and the {expected[line_number]} expected"))
    if received and not any(received.values()):
        problems.append(("lines", "nothing received: leave the return expected instead"))
    return problems


def inspection_problems(received: Mapping[int, int],
                        dispositions: Sequence[Disposition]) -> list[tuple[str, str]]:
    """Violations of an inspection: every received line exactly once, quantities adding up."""
    problems = []
    seen = set()
    for i, d in enumerate(dispositions):
        if d.line_number not in received:
            problems.append((f"lines[{i}].line_number", f"line {d.line_number} is not on the RMA"))
            continue
        if d.line_number in seen:
            problems.append((f"lines[{i}].line_number", f"line {d.line_number} appears twice"))
        seen.add(d.line_number)
        if min(d.restock, d.scrap, d.refuse) < 0:
            problems.append((f"lines[{i}]", "quantities must not be negative"))
        elif d.total != received[d.line_number]:
            problems.append((f"lines[{i}]", f"restock + scrap + refuse = {d.total}, but "
                                             f"{received[d.line_number]} were received"))
    for line_number, qty in received.items():
        if qty and line_number not in seen:
            problems.append(("lines", f"line {line_number} ({qty} received) has no disposition"))
    return problems
