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


def package_weight(lines: Sequence[Line], unit_weights: Mapping[str, int], declared: int = 0) -> int:
    """The declared weight when given, else the sum of the items' master-data weights."""
    if declared > 0:
        return declared
    return sum(qty * unit_weights.get(sku, DEFAULT_UNIT_WEIGHT_GRAMS) for sku, qty in lines)
