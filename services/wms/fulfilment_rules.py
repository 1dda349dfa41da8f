"""The fulfilment state machine as pure decisions (no I/O).

    new order ----> ALLOCATED   every line fits in available stock (all or nothing)
              \\--> BACKORDERED  short, policy BACKORDER: waits, allocated first come first served
              \\--> REJECTED     invalid lines, unknown warehouse, or short under policy CANCEL
    BACKORDERED --stock there--> ALLOCATED --picked--> PICKED --packed--> PACKED
        --shipment assigned--> LABELLED --shipped--> SHIPPED [--still open--> BACKORDERED, next wave]
    ALLOCATED --short pick, bin count--> EXCEPTION;  PICKED --damaged at packing--> EXCEPTION
    EXCEPTION --resolved--> where it stopped, or BACKORDERED (nothing left in the wave),
                            or CANCELLED (nothing open at all)
    cancel: before LABELLED --> CANCELLED (allocation released); LABELLED, SHIPPED: refused;
            before the order exists: a CANCELLED tombstone, so a late create changes nothing

A fulfilment ships in one or more waves. Each line has an ordered quantity;
open = ordered - shipped - cancelled. Allocation takes every open quantity at
once into the wave (``wave_quantity``, allocated in stock). An exception writes
off what is missing from the wave and parks it in ``exception_quantity`` until
order-to-ship decides: SHIP_PARTIAL leaves it open (a later wave ships it),
CANCEL_LINES cancels it. Shipping ships the wave; what is still open goes back
to BACKORDERED as the next wave.

Each ``decide_*`` looks at a fulfilment as it is and says what a fact does to
it: a ``Change`` (applied by ``fulfilment.py`` in the caller's transaction, and
only while the fulfilment is still in ``Change.expected``: of two concurrent
advancers exactly one wins), another named outcome, or None when the fact does
not apply in that status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import InvalidArgument

from . import domain
from .statuses import ExceptionKind, FulfilmentStatus, ShortagePolicy, exception_kind_pb

Status = FulfilmentStatus
Line = domain.Line

# A fulfilment in one of these never changes again.
FINAL = frozenset({Status.SHIPPED, Status.CANCELLED, Status.REJECTED})
# Too late to cancel: the parcel has (or is about to have) left.
LEFT_OR_LEAVING = frozenset({Status.LABELLED, Status.SHIPPED})
EXCEPTION_ACTIONS = frozenset({wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL, wms_pb2.EXCEPTION_ACTION_CANCEL_LINES})


@dataclass(frozen=True)
class FulfilmentLine:
    line_no: int
    sku: str
    quantity: int  # ordered
    shipped: int = 0  # by earlier waves
    cancelled: int = 0  # by exception decisions or a cancel
    wave_quantity: int = 0  # allocated to the wave being prepared
    exception_quantity: int = 0  # taken from the wave, waiting for a decision

    @property
    def open(self) -> int:
        return self.quantity - self.shipped - self.cancelled


@dataclass(frozen=True)
class Fulfilment:
    order_id: str
    warehouse_id: str
    status: Status
    lines: tuple[FulfilmentLine, ...]
    wave: int = 1
    shipment_id: str = ""
    resume_status: str = ""  # while EXCEPTION: the status a decision resumes

    def ordered(self) -> list[Line]:
        return [(x.sku, x.quantity) for x in self.lines]

    def open_lines(self) -> list[Line]:
        """What is still to ship, by SKU (lines with nothing open left out)."""
        return [(x.sku, x.open) for x in self.lines if x.open > 0]

    def wave_lines(self) -> list[Line]:
        """What the current wave holds, by SKU (empty lines left out)."""
        return [(x.sku, x.wave_quantity) for x in self.lines if x.wave_quantity]


class Due(Enum):
    """The autopilot's next step, after its configured delay."""

    PICK = "pick"
    PACK = "pack"
    SHIP = "ship"


@dataclass(frozen=True)
class Movement:
    """Stock that moves on hand (and the allocation it consumes) because of the change."""

    sku: str
    delta: int
    reason: int  # events.MovementReason
    reference: str
    allocated_delta: int = 0


@dataclass(frozen=True)
class Change:
    """One transition, and everything that comes with it, in this order:

    the status moves ``expected`` -> ``status`` (with ``fields``, the next step
    ``due`` and a milestone; entering EXCEPTION stamps ``exception_at``), the
    ``lines`` change, stock is (de)allocated by ``allocations`` and moved by
    ``movements``, the replenishment trigger of ``recheck`` is re-evaluated,
    ``announce`` is published with ``details`` (besides the fulfilment order as
    it is after the change), ``then`` is applied, the order is allocated again
    when ``allocate_again`` names its open SKUs (their trigger re-evaluated when
    they do not fit), the warehouse's backorders are served when
    ``serve_backorders``, and ``recheck_after`` is re-evaluated.
    """

    expected: Status
    status: Status
    announce: str = ""
    details: Mapping[str, object] = field(default_factory=dict)
    due: Due | None = None
    fields: Mapping[str, object] = field(default_factory=dict)
    lines: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    allocations: tuple[Line, ...] = ()
    movements: tuple[Movement, ...] = ()
    recheck: tuple[str, ...] = ()
    then: Change | None = None
    allocate_again: tuple[str, ...] = ()
    serve_backorders: bool = False
    recheck_after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Announce:
    """No transition: only say how the fulfilment stands (a repeat, a refusal)."""

    subject: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Tombstone:
    """A cancel before its create: record the order as CANCELLED, so the create finds it."""

    reason: str


@dataclass(frozen=True)
class Ignored:
    """Nothing happens; ``why`` is logged (empty: a plain repeat)."""

    why: str = ""
    warn: bool = False


@dataclass(frozen=True)
class NotYet:
    """The command came before the fulfilment can take it: it is retried with back-off."""

    reason: str


class UnknownAction(ValueError):
    """A resolution with an action the warehouse does not know."""


def quantities(lines) -> list[SkuQuantity]:
    return [SkuQuantity(sku=sku, quantity=qty) for sku, qty in lines]


def _skus(lines: Sequence[Line]) -> tuple[str, ...]:
    return tuple(sku for sku, _ in lines)


# ---- a new order, and allocation ----


def decide_new_order(f: Fulfilment, policy: ShortagePolicy, warehouse_known: bool,
                     available: Mapping[str, int]) -> Change:
    """A new order (recorded as BACKORDERED, undecided) is allocated, rejected or confirmed as
    backordered, from its lines, its warehouse and the stock available there."""
    ordered = f.ordered()
    if problems := domain.line_problems(ordered):
        return _reject("INVALID_LINES", "; ".join(f"{where}: {what}" for where, what in problems))
    if not warehouse_known:
        return _reject("UNKNOWN_WAREHOUSE", f"no warehouse {f.warehouse_id!r}")
    short = domain.shortages(ordered, available)
    if not short and (allocation := decide_allocation(f, available)) is not None:
        return allocation
    if policy is ShortagePolicy.CANCEL:
        return _reject("INSUFFICIENT_STOCK", "not enough stock and policy CANCEL", short)
    return Change(Status.BACKORDERED, Status.BACKORDERED, "wms.fulfilment.backordered",
                  dict(shortages=quantities(short)), recheck_after=_skus(ordered))


def _reject(code: str, reason: str, short: Sequence[Line] = ()) -> Change:
    return Change(Status.BACKORDERED, Status.REJECTED, "wms.fulfilment.rejected",
                  dict(reason_code=code, reason=reason, shortages=quantities(short)))


def decide_allocation(f: Fulfilment, available: Mapping[str, int]) -> Change | None:
    """BACKORDERED -> ALLOCATED, all or nothing: only when every open quantity fits."""
    wanted = f.open_lines()
    if f.status is not Status.BACKORDERED or not wanted or domain.shortages(wanted, available):
        return None
    return Change(Status.BACKORDERED, Status.ALLOCATED, "wms.fulfilment.allocated", due=Due.PICK,
                  lines={x.line_no: {"wave_quantity": x.open} for x in f.lines if x.open > 0},
                  allocations=tuple(wanted), recheck=_skus(wanted))


# ---- picking and packing ----


def missing_from_wave(lines: Sequence[FulfilmentLine], found: Mapping[str, int] | None,
                      what: str) -> dict[int, int]:
    """line_no -> quantity missing from the wave, given what was found per SKU (None: all of it).

    A SKU not on the order, or a quantity outside 0..wave, is refused (InvalidArgument).
    """
    if found is None:
        return {}
    on_order = {x.sku for x in lines}
    problems = [(f"{what}[{sku}]", "not on the order") for sku in found if sku not in on_order]
    missing = {}
    for x in lines:
        got = found.get(x.sku, x.wave_quantity)
        if got < 0 or got > x.wave_quantity:
            problems.append((f"{what}[{x.sku}]", f"between 0 and the {x.wave_quantity} in this shipment"))
        elif got < x.wave_quantity:
            missing[x.line_no] = x.wave_quantity - got
    if problems:
        raise InvalidArgument(problems)
    return missing


def decide_pick(f: Fulfilment, picked: Mapping[str, int] | None = None) -> Change | None:
    """ALLOCATED -> PICKED; with less found than allocated, a SHORT_PICK exception instead
    (the missing units are written off and wait for order-to-ship's decision)."""
    if f.status is not Status.ALLOCATED:
        return None
    if missing := missing_from_wave(f.lines, picked, "picked_lines"):
        found = ", ".join(f"{x.sku} {x.wave_quantity - missing[x.line_no]} of {x.wave_quantity}"
                          for x in f.lines if x.line_no in missing)
        return _exception(f, ExceptionKind.SHORT_PICK, Status.PICKED, missing,
                          "found less than allocated: " + found, write_off="short-pick")
    return Change(Status.ALLOCATED, Status.PICKED, "wms.fulfilment.picked", due=Due.PACK)


def decide_pack(f: Fulfilment, declared_weight: int = 0, damaged: Mapping[str, int] | None = None,
                unit_weights: Mapping[str, int] | None = None) -> Change | None:
    """PICKED -> PACKED with the declared package weight, else the item master's; then it waits
    for a shipment. Units damaged at packing: a DAMAGED exception instead (written off)."""
    if f.status is not Status.PICKED:
        return None
    if damaged:
        found = {x.sku: x.wave_quantity - damaged.get(x.sku, 0) for x in f.lines}
        found.update({sku: -1 for sku in damaged if sku not in found})
        if missing := missing_from_wave(f.lines, found, "damaged_lines"):
            what = ", ".join(f"{x.sku} {missing[x.line_no]}" for x in f.lines if x.line_no in missing)
            return _exception(f, ExceptionKind.DAMAGED, Status.PACKED, missing,
                              "damaged at packing: " + what, write_off="damaged")
    weight = domain.package_weight(f.wave_lines(), unit_weights or {}, declared_weight)
    return Change(Status.PICKED, Status.PACKED, "wms.fulfilment.packed",
                  fields=dict(package_weight_grams=weight))


def _exception(f: Fulfilment, kind: ExceptionKind, resume: Status, missing: Mapping[int, int],
               detail: str, *, write_off: str = "", allocations: tuple[Line, ...] = ()) -> Change:
    """f.status -> EXCEPTION: the missing quantities leave the wave and wait for a decision.
    With ``write_off`` (the movement's reference prefix) they also leave the books."""
    taken = [x for x in f.lines if missing.get(x.line_no)]
    return Change(
        f.status, Status.EXCEPTION, "wms.fulfilment.exception",
        dict(kind=exception_kind_pb(kind), lines=quantities((x.sku, missing[x.line_no]) for x in taken),
             detail=detail),
        fields=dict(exception_kind=kind, exception_detail=detail, resume_status=resume),
        lines={x.line_no: {"wave_quantity": x.wave_quantity - missing[x.line_no],
                           "exception_quantity": x.exception_quantity + missing[x.line_no]} for x in taken},
        allocations=allocations,
        movements=tuple(Movement(x.sku, -missing[x.line_no], events.MOVEMENT_REASON_ADJUSTMENT,
                                 f"{write_off} {f.order_id}", allocated_delta=-missing[x.line_no])
                        for x in taken) if write_off else ())


# ---- a bin count ----


@dataclass(frozen=True)
class AllocatedWave:
    """What an allocated, not yet picked order holds of one SKU (a bin count can take it back)."""

    order_id: str
    line_no: int
    quantity: int


@dataclass(frozen=True)
class StockCount:
    takes: tuple[tuple[AllocatedWave, int], ...]  # each order's units that are not there
    adjustment: int  # counted - on hand: the movement that corrects the books (0: none)
    refused: bool  # the count is below what picked orders hold: nothing is booked


def decide_stock_count(on_hand: int, allocated: int, counted: int,
                       allocated_waves: Sequence[AllocatedWave]) -> StockCount:
    """A bin count corrects on hand. When it no longer covers the allocations, the orders not
    picked yet lose the difference, in the order given (most recently allocated first); what
    picked orders hold cannot be taken back, so a count below it is refused."""
    deficit = allocated - counted
    takes = []
    for wave in allocated_waves:
        if deficit <= 0:
            break
        take = min(deficit, wave.quantity)
        takes.append((wave, take))
        deficit -= take
    held = allocated - sum(take for _, take in takes)
    adjustment = counted - on_hand
    return StockCount(tuple(takes), adjustment, refused=adjustment != 0 and counted < held)


def decide_discrepancy(f: Fulfilment, sku: str, take: int, counted: int) -> Change | None:
    """ALLOCATED -> STOCK_DISCREPANCY exception: ``take`` allocated units of ``sku`` are not
    in the bin (the count books them out; their allocation is released here)."""
    if f.status is not Status.ALLOCATED:
        return None
    line = next(x for x in f.lines if x.sku == sku)
    return _exception(f, ExceptionKind.STOCK_DISCREPANCY, Status.ALLOCATED, {line.line_no: take},
                      f"bin count of {sku} is {counted}: {take} allocated unit(s) are not there",
                      allocations=((sku, -take),))


# ---- an exception resolved ----

_CLEAR_EXCEPTION = dict(exception_kind="", exception_detail="", exception_at=None, resume_status="")
_RESUME_DUE = {Status.ALLOCATED: Due.PICK, Status.PICKED: Due.PACK, Status.PACKED: None}


def decide_resolution(f: Fulfilment, action: int, wave: int = 0,
                      unit_weights: Mapping[str, int] | None = None) -> Change | None:
    """Order-to-ship's decision on an open exception (of this wave, or the current one when 0).

    SHIP_PARTIAL leaves the missing quantity open (a later shipment), CANCEL_LINES
    cancels it. With something left in the wave the order resumes where it stopped;
    with nothing it waits for stock again (BACKORDERED), or is CANCELLED when
    nothing is open at all.
    """
    if f.status is not Status.EXCEPTION or (wave and wave != f.wave):
        return None
    if action not in EXCEPTION_ACTIONS:
        raise UnknownAction(f"unknown exception action {action}")
    cancel = action == wms_pb2.EXCEPTION_ACTION_CANCEL_LINES
    lines = {x.line_no: {"exception_quantity": 0,
                         **({"cancelled": x.cancelled + x.exception_quantity} if cancel else {})}
             for x in f.lines if x.exception_quantity}
    resolved = replace(f, lines=tuple(replace(x, **lines.get(x.line_no, {})) for x in f.lines))
    if wave_left := resolved.wave_lines():
        resume = Status(f.resume_status)
        weight = {"package_weight_grams": domain.package_weight(wave_left, unit_weights or {})} \
            if resume is Status.PACKED else {}
        return Change(Status.EXCEPTION, resume, f"wms.fulfilment.{resume.lower()}", due=_RESUME_DUE[resume],
                      fields={**_CLEAR_EXCEPTION, **weight}, lines=lines)
    if open_lines := resolved.open_lines():
        return Change(Status.EXCEPTION, Status.BACKORDERED, "wms.fulfilment.backordered",
                      dict(shortages=quantities(open_lines)), fields=_CLEAR_EXCEPTION, lines=lines,
                      allocate_again=_skus(open_lines))
    return Change(Status.EXCEPTION, Status.CANCELLED, "wms.fulfilment.cancelled",
                  dict(reason="every missing line cancelled"), fields=_CLEAR_EXCEPTION, lines=lines)


# ---- shipment ----


def decide_assign_shipment(f: Fulfilment, shipment_id: str, carrier_id: str, tracking_number: str,
                           wave: int = 0) -> Change | Ignored | NotYet:
    """PACKED -> LABELLED with the booked carrier and tracking number (of the current wave).

    A repeat, a shipment of an earlier wave, a closed order or a stale booking
    changes nothing; before the order is packed the command waits.
    """
    if f.status in LEFT_OR_LEAVING and f.shipment_id == shipment_id:
        return Ignored()
    if wave and wave < f.wave:
        return Ignored("wms.assign_shipment.earlier_wave")
    if f.status in (Status.CANCELLED, Status.REJECTED):
        return Ignored("wms.assign_shipment.ignored", warn=True)
    if f.shipment_id and f.shipment_id != shipment_id and f.status is not Status.PACKED:
        return Ignored("wms.assign_shipment.stale", warn=True)
    if f.status is not Status.PACKED:
        return NotYet(f"fulfilment order {f.order_id!r} is {f.status}, not packed yet")
    return Change(Status.PACKED, Status.LABELLED, due=Due.SHIP, fields=dict(
        shipment_id=shipment_id, carrier_id=carrier_id, tracking_number=tracking_number))


def decide_ship(f: Fulfilment) -> Change | None:
    """LABELLED -> SHIPPED: the wave's stock leaves (on hand and allocation drop, one movement
    per line). What is still open (a short pick shipped partially) goes back to BACKORDERED
    as the next wave, allocated at once when the stock is there."""
    if f.status is not Status.LABELLED:
        return None
    in_wave = [x for x in f.lines if x.wave_quantity]
    remaining = [(x.sku, x.open - x.wave_quantity) for x in f.lines if x.open - x.wave_quantity > 0]
    next_wave = Change(
        Status.SHIPPED, Status.BACKORDERED, "wms.fulfilment.backordered",
        dict(shortages=quantities(remaining)),
        fields=dict(wave=f.wave + 1, shipment_id="", carrier_id="", tracking_number="",
                    package_weight_grams=0),
        allocate_again=_skus(remaining)) if remaining else None
    return Change(
        Status.LABELLED, Status.SHIPPED, "wms.fulfilment.shipped",
        dict(wave=f.wave, shipped_lines=quantities(f.wave_lines()), remaining_lines=quantities(remaining)),
        lines={x.line_no: {"shipped": x.shipped + x.wave_quantity, "wave_quantity": 0} for x in in_wave},
        movements=tuple(Movement(x.sku, -x.wave_quantity, events.MOVEMENT_REASON_SHIPMENT, f.order_id,
                                 allocated_delta=-x.wave_quantity) for x in in_wave),
        then=next_wave)


# ---- cancel ----


def decide_cancel(f: Fulfilment | None, reason: str) -> Change | Announce | Tombstone:
    """Cancel before labelling, releasing any allocation (which may serve backorders); refuse
    after. A repeat says again that it is cancelled. A cancel that overtakes its create
    leaves a tombstone, so the create finds the order cancelled and allocates nothing."""
    if f is None:
        return Tombstone(reason)
    if f.status in LEFT_OR_LEAVING:
        return Announce("wms.fulfilment.cancel_refused",
                        dict(reason=f"fulfilment is already {f.status}: too late to cancel"))
    if f.status in (Status.CANCELLED, Status.REJECTED):
        return Announce("wms.fulfilment.cancelled", dict(reason=reason))
    released = f.wave_lines()
    return Change(
        f.status, Status.CANCELLED, "wms.fulfilment.cancelled", dict(reason=reason),
        lines={x.line_no: {"wave_quantity": 0, "exception_quantity": 0, "cancelled": x.quantity - x.shipped}
               for x in f.lines},
        allocations=tuple((sku, -qty) for sku, qty in released),
        serve_backorders=bool(released), recheck_after=_skus(f.ordered()))
