"""Returns and reconciliation rules (pure: no I/O).

- What may still be returned of an order's lines.
- Whether an ERP ledger position and the WMS stock it follows have drifted,
  judged at a consistent cut: the ERP position says which WMS movement it
  last applied, WMS says what it held right after that movement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .workflow import ReturnStatus

# ---- returnable quantities ----

# Returns that hold nothing any more (nothing came back, nothing is expected).
RELEASED = {ReturnStatus.CANCELLED, ReturnStatus.EXPIRED}
# Finished returns hold what physically came back (accepted or refused).
FINISHED = {ReturnStatus.CREDITED, ReturnStatus.PARTIALLY_CREDITED, ReturnStatus.REFUSED}


@dataclass(frozen=True)
class OrderLine:
    line_number: int
    sku: str
    quantity: int  # shipped


@dataclass(frozen=True)
class HeldLine:
    """A line of another return of the same order."""

    status: str
    line_number: int
    quantity: int  # requested
    received: int


def held_quantity(line: HeldLine) -> int:
    """How much of its order line a return still holds: all it asks while open,
    what came back once finished, nothing once cancelled or expired."""
    if line.status in RELEASED:
        return 0
    if line.status in FINISHED:
        return line.received
    return line.quantity


def returnable(ordered: Iterable[OrderLine], others: Iterable[HeldLine]) -> dict[int, int]:
    """Per order line: shipped less what other returns hold."""
    held: Counter[int] = Counter()
    for h in others:
        held[h.line_number] += held_quantity(h)
    return {o.line_number: max(o.quantity - held[o.line_number], 0) for o in ordered}


@dataclass(frozen=True)
class Requested:
    line_number: int  # 0: find by SKU
    sku: str
    quantity: int


def match_lines(ordered: list[OrderLine], requested: list[Requested],
                left: Mapping[int, int]) -> tuple[list[OrderLine], list[tuple[str, str]]]:
    """Each requested line resolved to its order line, and the violations found.

    A violation names the request field: ``lines[i].quantity`` when more is
    asked than can still be returned (shipped less already returned).
    """
    by_number = {o.line_number: o for o in ordered}
    out: list[OrderLine] = []
    problems: list[tuple[str, str]] = []
    seen: dict[int, int] = {}
    for i, r in enumerate(requested):
        line = by_number.get(r.line_number) if r.line_number else next(
            (o for o in ordered if o.sku == r.sku), None)
        if line is None or (r.sku and r.sku != line.sku):
            what = f"line {r.line_number}" if r.line_number else f"SKU {r.sku}"
            problems.append((f"lines[{i}]", f"{what} is not on the order"))
            continue
        if line.line_number in seen:
            problems.append((f"lines[{i}]", f"order line {line.line_number} is already "
                                            f"lines[{seen[line.line_number]}]; merge the quantities"))
            continue
        seen[line.line_number] = i
        can = left.get(line.line_number, 0)
        if r.quantity > can:
            problems.append((f"lines[{i}].quantity",
                             f"at most {can} of line {line.line_number} ({line.sku}) can be returned: "
                             f"{line.quantity} shipped, {line.quantity - can} already returned or "
                             "in other returns"))
            continue
        out.append(OrderLine(line.line_number, line.sku, r.quantity))
    return out, problems


# ---- inventory reconciliation ----

QUANTITY_MISMATCH = "QUANTITY_MISMATCH"
MISSED_MOVEMENTS = "MISSED_MOVEMENTS"
UNKNOWN_TO_WMS = "UNKNOWN_TO_WMS"
SEQUENCE_AHEAD = "SEQUENCE_AHEAD"


@dataclass(frozen=True)
class LedgerRow:
    """ERP's view of a position, and when it was read."""

    sku: str
    warehouse_id: str
    on_hand: int
    last_sequence: int
    updated_at: datetime | None = None


@dataclass(frozen=True)
class WmsAsOf:
    """WMS's answer for a position as of ERP's last applied sequence."""

    sku: str
    warehouse_id: str
    exists: bool
    sequence: int  # the one asked about (ERP's)
    known: bool  # the history reaches back to it
    on_hand_at: int
    sequence_time: datetime | None
    current_sequence: int
    current_on_hand: int
    next_time: datetime | None  # the first movement ERP has not applied
    next_unpublished: bool  # ... still in WMS's outbox


@dataclass(frozen=True)
class Drift:
    sku: str
    warehouse_id: str
    kind: str
    erp_quantity: int
    wms_quantity: int
    erp_sequence: int
    wms_sequence: int
    since: datetime | None
    detail: str
    # Where a repair takes the ERP position (WMS now).
    target_on_hand: int
    target_sequence: int

    @property
    def delta(self) -> int:
        return self.erp_quantity - self.wms_quantity


@dataclass(frozen=True)
class Verdict:
    drift: Drift | None
    # WMS has movements ERP has not applied yet, younger than the grace period
    # (or not even published): on their way, not drift.
    in_flight: bool


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def judge(erp: LedgerRow | None, wms: WmsAsOf | None, *, now: datetime,
          grace: timedelta) -> Verdict:
    """Has this position drifted? ``now`` is when ERP's position was read.

    - Same sequence, different quantity: QUANTITY_MISMATCH (the ledger was
      changed outside the event flow).
    - WMS moved stock after ERP's sequence: in flight while the first such
      movement is younger than ``grace`` or still unpublished; older, ERP lost
      its event: MISSED_MOVEMENTS.
    - ERP ahead of WMS, or holding a position WMS never had: drift.
    A repair always brings ERP to WMS's current quantity and sequence.
    """
    now = _utc(now)
    q, seq = (erp.on_hand, erp.last_sequence) if erp else (0, 0)
    sku = erp.sku if erp else wms.sku  # type: ignore[union-attr]
    wh = erp.warehouse_id if erp else wms.warehouse_id  # type: ignore[union-attr]

    def drift(kind: str, wms_qty: int, wms_seq: int, since, detail: str) -> Verdict:
        target = (wms.current_on_hand, wms.current_sequence) if wms and wms.exists else (0, 0)
        return Verdict(Drift(sku, wh, kind, q, wms_qty, seq, wms_seq, _utc(since), detail, *target),
                       in_flight=False)

    if wms is None or not wms.exists:
        if q != 0 or seq != 0:
            return drift(UNKNOWN_TO_WMS, 0, 0, erp.updated_at if erp else None,
                         "ERP holds a position WMS never had")
        return Verdict(None, False)
    current = wms.current_sequence
    if seq > current:
        return drift(SEQUENCE_AHEAD, wms.current_on_hand, current, erp.updated_at if erp else None,
                     f"ERP claims movement {seq}, WMS is at {current}")
    behind = current > seq
    if behind:
        next_time = _utc(wms.next_time)
        if not wms.next_unpublished and (next_time is None or now - next_time > grace):
            missed = current - seq
            since = next_time or _utc(wms.sequence_time)
            return drift(MISSED_MOVEMENTS, wms.current_on_hand, current, since,
                         f"ERP never applied {missed} WMS movement(s) {seq + 1}..{current}, the "
                         f"first one older than {grace.total_seconds():g}s")
    if wms.known and q != wms.on_hand_at:
        return drift(QUANTITY_MISMATCH, wms.on_hand_at, seq, wms.sequence_time,
                     f"at movement {seq} ERP holds {q}, WMS held {wms.on_hand_at}")
    if not wms.known and not behind and q != wms.current_on_hand:
        return drift(QUANTITY_MISMATCH, wms.current_on_hand, current, None,
                     f"at movement {seq} ERP holds {q}, WMS holds {wms.current_on_hand}")
    return Verdict(None, in_flight=behind)
