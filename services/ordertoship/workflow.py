"""The order-to-ship workflow as a pure state machine (no I/O).

Each fact that reaches an order (an ERP, WMS or TMS event, or a cancel
request) goes through ``react``/``cancel``, which return a ``Decision``: the
new status, timeline entries, field updates and the commands to send. The
caller applies it in one transaction (state + timeline + outbox), so a crash
anywhere leaves either all of it or none.

    RECEIVED --erp accepted--> RELEASED --wms allocated--> ALLOCATED --picked--> PICKED
       |                          |  \\--backordered--> BACKORDERED --allocated--^
       |erp rejected              |wms rejected (short, CANCEL policy): compensate -> CANCELLED
       v                          v
    REJECTED                   CANCELLED
    PICKED --packed--> PACKED (book shipment) --tms booked--> SHIPMENT_BOOKED (assign to WMS)
       --wms shipped--> SHIPPED (post invoice) --erp invoice posted--> INVOICED
    PACKED --tms booking failed (every carrier)--> ON_HOLD (exception CARRIER_FAILED)
       --resolved: retry / reassign carrier--> PACKED; --cancel order--> CANCELLING
    CancelOrder: RECEIVED -> CANCELLED;
                 RELEASED..PICKED, ON_HOLD, PARTIALLY_SHIPPED -> CANCELLING -> CANCELLED
Compensation on every cancel: WMS releases the allocation, ERP cancels the
sales order and releases the credit it held.

Warehouse exceptions (wms.fulfilment.exception: short pick, damage, stock
discrepancy) follow the order's exception policy, fixed at submission from
its customer's, else its channel's, else the default policy:
    SHIP_PARTIAL  ship what is there; the rest stays open and ships later
    CANCEL_LINES  ship what is there; cancel the rest (ERP lines too)
    HOLD          ON_HOLD until a person resolves it (ResolveException)
A shipment that leaves quantities open makes the order PARTIALLY_SHIPPED; the
warehouse starts the next shipment (wave) when the stock is there. Each
shipment is invoiced on its own (ERP: exactly one invoice per shipment); the
order is INVOICED when its last shipment left and every shipment is invoiced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf.message import Message

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.mesh import process
from services.mesh.process import Entry, NotCancellable

# The vocabulary of the workflow. A value is what the store holds and, prefixed
# (ORDER_STATUS_…), the name in the contract; service.py checks each against
# the contract at import.


class OrderStatus(StrEnum):
    RECEIVED = "RECEIVED"
    RELEASED = "RELEASED"
    BACKORDERED = "BACKORDERED"
    ALLOCATED = "ALLOCATED"
    PICKED = "PICKED"
    PACKED = "PACKED"
    SHIPMENT_BOOKED = "SHIPMENT_BOOKED"
    SHIPPED = "SHIPPED"
    PARTIALLY_SHIPPED = "PARTIALLY_SHIPPED"
    INVOICED = "INVOICED"
    REJECTED = "REJECTED"
    ON_HOLD = "ON_HOLD"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class ShortagePolicy(StrEnum):
    """What WMS does when it cannot allocate an order in full."""

    BACKORDER = "BACKORDER"
    CANCEL = "CANCEL"


class ExceptionPolicy(StrEnum):
    """What the workflow does with a warehouse exception (fixed per order at submission)."""

    SHIP_PARTIAL = "SHIP_PARTIAL"
    HOLD = "HOLD"
    CANCEL_LINES = "CANCEL_LINES"


class ExceptionKind(StrEnum):
    SHORT_PICK = "SHORT_PICK"
    DAMAGED = "DAMAGED"
    STOCK_DISCREPANCY = "STOCK_DISCREPANCY"
    CARRIER_FAILED = "CARRIER_FAILED"


class ExceptionStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class Action(StrEnum):
    """What a person (or a policy) decides about an exception."""

    SHIP_PARTIAL = "SHIP_PARTIAL"
    CANCEL_LINES = "CANCEL_LINES"
    CANCEL_ORDER = "CANCEL_ORDER"
    RETRY = "RETRY"
    REASSIGN_CARRIER = "REASSIGN_CARRIER"


TERMINAL = {OrderStatus.INVOICED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
CANCELLABLE_AT_ONCE = {OrderStatus.RECEIVED}
CANCELLABLE_IN_WAREHOUSE = {OrderStatus.RELEASED, OrderStatus.BACKORDERED, OrderStatus.ALLOCATED,
                            OrderStatus.PICKED, OrderStatus.ON_HOLD, OrderStatus.PARTIALLY_SHIPPED}
SHORTAGE_POLICIES = set(ShortagePolicy)
EXCEPTION_POLICIES = tuple(ExceptionPolicy)
WAREHOUSE_EXCEPTIONS = {ExceptionKind.SHORT_PICK, ExceptionKind.DAMAGED, ExceptionKind.STOCK_DISCREPANCY}
# What a person may decide, by kind of exception.
ACTIONS = {**dict.fromkeys(WAREHOUSE_EXCEPTIONS,
                           (Action.SHIP_PARTIAL, Action.CANCEL_LINES, Action.CANCEL_ORDER)),
           ExceptionKind.CARRIER_FAILED: (Action.RETRY, Action.REASSIGN_CARRIER, Action.CANCEL_ORDER)}


class InvalidAction(Exception):
    """A resolution that does not fit the exception."""


@dataclass(frozen=True)
class Line:
    line_number: int
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass
class Order:
    order_id: str
    customer_id: str
    status: OrderStatus
    warehouse_id: str
    lines: list[Line]
    ship_to: Address
    shortage_policy: ShortagePolicy
    service_level: str
    currency_code: str
    total_minor: int = 0
    # The shipment (wave) the warehouse is working on.
    wave: int = 1
    exception_policy: ExceptionPolicy = ExceptionPolicy.SHIP_PARTIAL
    # The status an ON_HOLD order returns to when its exception is resolved ("" when not held).
    held_from: OrderStatus | str = ""
    package_weight_grams: int = 0
    # shipment_id -> invoice_id ("" until ERP posted it), of every shipment that left.
    shipments: dict[str, str] = field(default_factory=dict)


@dataclass
class Raised:
    """An exception the decision records (resolved at once when a policy decided it)."""

    kind: str  # an ExceptionKind, as WMS reported it
    lines: list[tuple[str, int]]
    detail: str
    wave: int
    policy: ExceptionPolicy
    status: ExceptionStatus = ExceptionStatus.OPEN
    action: Action | str = ""
    resolved_by: str = ""


@dataclass(frozen=True)
class OpenException:
    exception_id: str
    kind: str
    lines: list[tuple[str, int]]
    wave: int


@dataclass(frozen=True)
class Resolution:
    exception_id: str
    action: str
    resolved_by: str
    note: str


@dataclass(frozen=True)
class ShipmentRecord:
    shipment_id: str
    wave: int
    lines: list[tuple[str, int]]
    carrier_id: str
    tracking_number: str


@dataclass
class Decision(process.Decision):
    """The shared part (status, reason, timeline entries, updates, commands), and what
    only an order records: exceptions, resolutions, shipments, invoices, cancelled lines."""

    raised: list[Raised] = field(default_factory=list)
    resolution: Resolution | None = None
    shipments: list[ShipmentRecord] = field(default_factory=list)
    # shipment_id -> invoice_id
    invoices: dict[str, str] = field(default_factory=dict)
    # line_number -> quantity cancelled now
    cancelled_lines: dict[int, int] = field(default_factory=dict)

    @property
    def changes_anything(self) -> bool:
        return super().changes_anything or bool(self.raised or self.resolution or self.shipments
                                                or self.invoices or self.cancelled_lines)


# ---- the commands the workflow sends ----

def create_sales_order(o: Order) -> tuple[str, Message]:
    return "cmd.erp.salesorder.create", erp.CreateSalesOrder(sales_order=erp_pb2.SalesOrder(
        order_id=o.order_id,
        customer_id=o.customer_id,
        lines=[erp_pb2.SalesOrderLine(line_number=ln.line_number, sku=ln.sku, quantity=ln.quantity,
                                      unit_price=_money(o, ln.unit_price_minor)) for ln in o.lines],
        total=_money(o, o.total_minor),
    ))


def _money(o: Order, minor: int) -> Money:
    return Money(currency_code=o.currency_code, amount_minor=minor)


def _create_fulfilment(o: Order) -> tuple[str, Message]:
    policy = {ShortagePolicy.BACKORDER: wms_pb2.SHORTAGE_POLICY_BACKORDER,
              ShortagePolicy.CANCEL: wms_pb2.SHORTAGE_POLICY_CANCEL}
    return "cmd.wms.fulfilment.create", wms.CreateFulfilment(
        order_id=o.order_id, warehouse_id=o.warehouse_id, ship_to=o.ship_to,
        lines=[SkuQuantity(sku=ln.sku, quantity=ln.quantity) for ln in o.lines],
        shortage_policy=policy[o.shortage_policy],
    )


def _cancel_fulfilment(o: Order, reason: str) -> tuple[str, Message]:
    return "cmd.wms.fulfilment.cancel", wms.CancelFulfilment(order_id=o.order_id, reason=reason)


def _cancel_sales_order(o: Order, reason: str) -> tuple[str, Message]:
    return "cmd.erp.salesorder.cancel", erp.CancelSalesOrder(order_id=o.order_id, reason=reason)


def _shortages(items) -> str:
    return ", ".join(f"{s.sku} short by {s.quantity}" for s in items)


def shipment_id(o: Order, wave: int) -> str:
    """SHP-<order> for the first shipment, SHP-<order>-<n> for the n-th."""
    return f"SHP-{o.order_id}" if wave <= 1 else f"SHP-{o.order_id}-{wave}"


def _book(o: Order, wave: int, weight_grams: int, carrier_id: str = "") -> tuple[str, Message]:
    return "cmd.tms.shipment.book", tms.BookShipment(
        order_id=o.order_id, warehouse_id=o.warehouse_id, destination=o.ship_to,
        weight_grams=weight_grams, service_level=o.service_level, currency_code=o.currency_code,
        shipment_id=shipment_id(o, wave), carrier_id=carrier_id)


def _quantities(items) -> str:
    return ", ".join(f"{sku} x{qty}" for sku, qty in items)


def _wave_of(body: Message) -> int:
    return (body.fulfilment_order.wave if hasattr(body, "fulfilment_order") else 0) or 1


_WMS_ACTION = {Action.SHIP_PARTIAL: wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL,
               Action.CANCEL_LINES: wms_pb2.EXCEPTION_ACTION_CANCEL_LINES}


def _decide_missing(o: Order, d: Decision, action: str, lines: list[tuple[str, int]], wave: int,
                    who: str) -> None:
    """SHIP_PARTIAL or CANCEL_LINES on missing quantities: tell WMS (and ERP for cancelled lines)."""
    d.commands.append(("cmd.wms.fulfilment.resolve", wms.ResolveFulfilmentException(
        order_id=o.order_id, wave=wave, action=_WMS_ACTION[action])))
    if action == Action.SHIP_PARTIAL:
        d.entries.append(Entry("ordertoship", "exception.ship_partial",
                               f"{who}: ship what is there, backorder {_quantities(lines)}"))
        return
    by_sku = {ln.sku: ln for ln in o.lines}
    cancelled = [(by_sku[sku], qty) for sku, qty in lines if sku in by_sku and qty > 0]
    for ln, qty in cancelled:
        d.cancelled_lines[ln.line_number] = d.cancelled_lines.get(ln.line_number, 0) + qty
    d.entries.append(Entry("ordertoship", "exception.cancel_lines",
                           f"{who}: ship what is there, cancel {_quantities(lines)}"))
    d.commands.append(("cmd.erp.salesorder.cancel_lines", erp.CancelSalesOrderLines(
        order_id=o.order_id, reason=f"warehouse exception ({who})",
        lines=[erp_pb2.SalesOrderLine(line_number=ln.line_number, sku=ln.sku, quantity=qty)
               for ln, qty in cancelled])))


# ---- reactions to facts from the systems ----

def react(o: Order, subject: str, body: Message) -> Decision:
    """What the order does when ``subject`` happens; an empty Decision when it does not apply."""
    s = o.status
    d = Decision()
    match subject:
        case "erp.salesorder.accepted" if s == OrderStatus.RECEIVED:
            d.status = OrderStatus.RELEASED
            d.entries += [Entry("erp", "credit.approved", "sales order accepted, credit approved"),
                          Entry("ordertoship", "released", f"fulfilment sent to warehouse {o.warehouse_id}")]
            d.commands.append(_create_fulfilment(o))
        case "erp.salesorder.rejected" if s == OrderStatus.RECEIVED:
            d.status, d.reason = OrderStatus.REJECTED, f"{body.reason_code}: {body.reason}"
            d.entries.append(Entry("erp", "credit.refused", d.reason))
        case "erp.salesorder.cancelled":
            d.entries.append(Entry("erp", "salesorder.cancelled", "sales order cancelled, credit released"))
        case "erp.salesorder.lines_cancelled":
            d.entries.append(Entry("erp", "salesorder.lines_cancelled",
                                   f"sales order lines cancelled, credit released ({body.reason})"))
        case "erp.invoice.posted" if o.shipments.get(body.invoice.shipment_id) != body.invoice.invoice_id:
            inv = body.invoice
            d.invoices[inv.shipment_id] = inv.invoice_id
            d.updates["invoice_id"] = inv.invoice_id
            d.entries.append(Entry("erp", "invoice.posted",
                                   f"invoice {inv.invoice_id} for {inv.shipment_id or 'the shipment'}: "
                                   f"{inv.total.amount_minor / 100:.2f} {inv.total.currency_code}"))
            invoiced = {**o.shipments, inv.shipment_id: inv.invoice_id}
            if s == OrderStatus.SHIPPED and all(invoiced.values()):
                d.status = OrderStatus.INVOICED
        case "wms.fulfilment.allocated" | "wms.fulfilment.picked" | "wms.fulfilment.packed":
            _milestone(o, subject, body, d)
        case "wms.fulfilment.backordered" if s not in TERMINAL and s not in (OrderStatus.CANCELLING,
                                                                             OrderStatus.ON_HOLD):
            wave = _wave_of(body)
            if wave < o.wave or (wave == o.wave and s not in (
                    OrderStatus.RELEASED, OrderStatus.ALLOCATED, OrderStatus.PICKED, OrderStatus.PACKED)):
                d.entries.append(Entry("wms", "backordered", "reported late"))
                return d
            if wave > o.wave:
                d.updates["wave"] = wave
            d.status, d.reason = OrderStatus.BACKORDERED, _shortages(body.shortages)
            d.entries.append(Entry("wms", "backordered", f"waiting for stock: {d.reason}"
                                   + (f" (shipment {wave})" if wave > 1 else "")))
        case "wms.fulfilment.exception" if s not in TERMINAL and s != OrderStatus.CANCELLING:
            _exception(o, body, d)
        case "wms.fulfilment.rejected" if s == OrderStatus.RELEASED:
            reason = f"{body.reason_code}: {_shortages(body.shortages) or body.reason}"
            d.status, d.reason = OrderStatus.CANCELLED, reason
            d.entries += [Entry("wms", "fulfilment.rejected", reason),
                          Entry("ordertoship", "compensate", "cancel sales order, release credit")]
            d.commands.append(_cancel_sales_order(o, reason))
        case "tms.shipment.booked" if s == OrderStatus.PACKED and body.shipment.shipment_id in {
                shipment_id(o, w) for w in range(1, o.wave)}:
            d.entries.append(Entry("tms", "shipment.booked", f"{body.shipment.shipment_id} (reported late)"))
        case "tms.shipment.booked" if s == OrderStatus.PACKED:
            sh = body.shipment
            d.status = OrderStatus.SHIPMENT_BOOKED
            d.updates.update(shipment_id=sh.shipment_id, carrier_id=sh.carrier_id,
                             tracking_number=sh.tracking_number)
            for a in body.refused_attempts:
                d.entries.append(Entry("tms", "carrier.refused",
                                       f"{a.carrier_id} {a.service_level}: {a.reason}"))
            d.entries.append(Entry("tms", "shipment.booked",
                                   f"{sh.carrier_id} {sh.service_level}, tracking {sh.tracking_number}"
                                   + (" (next carrier after a refusal)" if body.refused_attempts else "")))
            d.commands.append(("cmd.wms.fulfilment.assign_shipment", wms.AssignShipment(
                order_id=o.order_id, shipment_id=sh.shipment_id, carrier_id=sh.carrier_id,
                tracking_number=sh.tracking_number, wave=o.wave)))
        case "tms.shipment.booking_failed" if s == OrderStatus.PACKED:
            reason = f"{body.reason_code}: {body.reason}"
            refused = "; ".join(f"{a.carrier_id} {a.service_level}: {a.reason}"
                                for a in body.refused_attempts)
            detail = reason + (f" ({refused})" if refused else "")
            d.status, d.reason = OrderStatus.ON_HOLD, f"carrier failure: {reason}"
            d.updates["held_from"] = OrderStatus.PACKED
            d.entries += [Entry("tms", "shipment.booking_failed", detail),
                          Entry("ordertoship", "exception.held",
                                "held for a decision: retry, reassign the carrier or cancel")]
            d.raised.append(Raised(ExceptionKind.CARRIER_FAILED, [], detail, o.wave, ExceptionPolicy.HOLD))
        case "wms.fulfilment.shipped" if s not in TERMINAL:
            _shipped(o, body, d)
        case "wms.fulfilment.cancelled" if s == OrderStatus.CANCELLING:
            d.status = OrderStatus.CANCELLED
            d.entries.append(Entry("wms", "fulfilment.cancelled", "allocation released"))
            d.commands.append(_cancel_sales_order(o, "order cancelled"))
        case "wms.fulfilment.cancelled" if s not in TERMINAL and _nothing_open(body.fulfilment_order):
            # Every missing quantity was cancelled and nothing else is open.
            d.entries.append(Entry("wms", "fulfilment.closed", body.reason))
            if o.shipments:
                d.status = OrderStatus.INVOICED if all(o.shipments.values()) else OrderStatus.SHIPPED
            else:
                d.status, d.reason = OrderStatus.CANCELLED, "every line cancelled"
        case "wms.fulfilment.cancel_refused":
            d.entries.append(Entry("wms", "cancel.refused", body.reason))
    return d


# The warehouse's milestones in the order they happen. After a consumer
# restart JetStream may deliver a newer milestone before an unacked older one
# is redelivered: a newer one moves the order forward past the missed steps, a
# late one is only recorded.
MILESTONES = {"wms.fulfilment.allocated": OrderStatus.ALLOCATED, "wms.fulfilment.picked": OrderStatus.PICKED,
              "wms.fulfilment.packed": OrderStatus.PACKED}
IN_WAREHOUSE = [OrderStatus.RELEASED, OrderStatus.BACKORDERED, OrderStatus.ALLOCATED, OrderStatus.PICKED,
                OrderStatus.PACKED, OrderStatus.SHIPMENT_BOOKED, OrderStatus.SHIPPED]


def _milestone(o: Order, subject: str, body: Message, d: Decision) -> None:
    target = MILESTONES[subject]
    step = target.lower()
    detail = {OrderStatus.ALLOCATED: f"stock allocated in {o.warehouse_id}",
              OrderStatus.PICKED: "",
              OrderStatus.PACKED: f"{body.fulfilment_order.package_weight_grams} g"}[target]
    wave = _wave_of(body)
    current = o.status
    if wave > o.wave and o.status in IN_WAREHOUSE + [OrderStatus.PARTIALLY_SHIPPED]:
        d.updates["wave"] = wave  # the next shipment has started
        current = OrderStatus.RELEASED
    if (o.status not in IN_WAREHOUSE + [OrderStatus.PARTIALLY_SHIPPED] or wave < o.wave
            or current == OrderStatus.PARTIALLY_SHIPPED):
        if o.status not in TERMINAL and o.status != OrderStatus.CANCELLING:
            d.entries.append(Entry("wms", step, (detail + " (reported late)").strip()))
        return  # cancelling, on hold, finished, or about an earlier shipment: nothing moves
    if IN_WAREHOUSE.index(current) >= IN_WAREHOUSE.index(target):
        d.entries.append(Entry("wms", step, (detail + " (reported late)").strip()))
        return
    d.status = target
    d.entries.append(Entry("wms", step, detail))
    if target == OrderStatus.PACKED:
        weight = body.fulfilment_order.package_weight_grams
        d.updates["package_weight_grams"] = weight
        d.entries.append(Entry("ordertoship", "shipment.requested",
                               f"booking of {shipment_id(o, wave)} requested from TMS"))
        d.commands.append(_book(o, wave, weight))


def _nothing_open(f) -> bool:
    return bool(f.progress) and all(p.shipped_quantity + p.cancelled_quantity >= p.ordered_quantity
                                    for p in f.progress)


def _exception(o: Order, body: Message, d: Decision) -> None:
    """A warehouse exception: decided by the order's policy, or held for a person."""
    kind = wms_pb2.ExceptionKind.Name(body.kind).removeprefix("EXCEPTION_KIND_")
    lines = [(q.sku, q.quantity) for q in body.lines]
    wave = _wave_of(body)
    step = f"exception.{kind.lower()}"
    d.entries.append(Entry("wms", step, body.detail or _quantities(lines)))
    policy = o.exception_policy
    if policy == ExceptionPolicy.HOLD:
        d.status, d.reason = OrderStatus.ON_HOLD, f"{kind}: {body.detail}"
        d.updates["held_from"] = o.status if o.status != OrderStatus.ON_HOLD else o.held_from
        d.entries.append(Entry("ordertoship", "exception.held",
                               "held for a decision: ship partial, cancel the lines or cancel the order"))
        d.raised.append(Raised(kind, lines, body.detail, wave, policy))
        return
    d.raised.append(Raised(kind, lines, body.detail, wave, policy, status=ExceptionStatus.RESOLVED,
                           action=policy, resolved_by="policy"))
    _decide_missing(o, d, policy, lines, wave, f"policy {policy}")


def _shipped(o: Order, body: Message, d: Decision) -> None:
    """One shipment left: invoice it (once); the order is SHIPPED, or PARTIALLY_SHIPPED while lines
    stay open."""
    f = body.fulfilment_order
    wave = body.wave or f.wave or 1
    sid = f.shipment_id or shipment_id(o, wave)
    if sid in o.shipments:
        return  # a repeat
    shipped = [(q.sku, q.quantity) for q in (body.shipped_lines or f.lines)]
    remaining = [(q.sku, q.quantity) for q in body.remaining_lines]
    d.shipments.append(ShipmentRecord(sid, wave, shipped, f.carrier_id, f.tracking_number))
    quantities = dict(shipped)
    d.entries += [Entry("wms", "shipped", f"{sid} ship confirmed ({_quantities(shipped)}), "
                                          f"tracking {f.tracking_number}"),
                  Entry("ordertoship", "invoice.requested", f"shipment {sid} posted to ERP")]
    d.commands.append(("cmd.erp.invoice.post", erp.PostInvoice(
        order_id=o.order_id, shipment_id=sid,
        shipped_lines=[erp_pb2.SalesOrderLine(line_number=ln.line_number, sku=ln.sku,
                                              quantity=quantities[ln.sku])
                       for ln in o.lines if quantities.get(ln.sku)],
    )))
    if wave < o.wave:
        return  # a later shipment is already under way
    if remaining:
        d.status, d.reason = OrderStatus.PARTIALLY_SHIPPED, f"still to ship: {_quantities(remaining)}"
    else:
        d.status = OrderStatus.SHIPPED


def resolve(o: Order, exc: OpenException, action: str, resolved_by: str, *, carrier_id: str = "",
            note: str = "") -> Decision:
    """A person's decision on an open exception; the workflow resumes where it was held."""
    if action not in ACTIONS.get(exc.kind, ()):
        raise InvalidAction(f"{action} does not resolve a {exc.kind} exception; "
                            f"use one of {', '.join(ACTIONS.get(exc.kind, ()))}")
    if action == Action.REASSIGN_CARRIER and not carrier_id:
        raise InvalidAction("REASSIGN_CARRIER needs a carrier_id")
    d = Decision(resolution=Resolution(exc.exception_id, action, resolved_by, note))
    d.entries.append(Entry("ordertoship", "exception.resolved",
                           f"{exc.exception_id} ({exc.kind}) resolved by {resolved_by}: {action}"
                           + (f" {carrier_id}" if carrier_id else "") + (f" - {note}" if note else ""),
                           actor=resolved_by))
    if action == Action.CANCEL_ORDER:
        reason = f"cancelled by {resolved_by} ({exc.kind})"
        d.status, d.reason = OrderStatus.CANCELLING, reason
        d.commands.append(_cancel_fulfilment(o, reason))
        return d
    if o.status == OrderStatus.ON_HOLD:
        d.status, d.reason = o.held_from or OrderStatus.RELEASED, ""
    if exc.kind in WAREHOUSE_EXCEPTIONS:
        _decide_missing(o, d, action, exc.lines, exc.wave, resolved_by)
    else:
        d.commands.append(_book(o, o.wave, o.package_weight_grams,
                                carrier_id if action == Action.REASSIGN_CARRIER else ""))
        d.entries.append(Entry("ordertoship", "shipment.requested",
                               f"booking of {shipment_id(o, o.wave)} requested again"
                               + (f" with {carrier_id}" if action == Action.REASSIGN_CARRIER else "")))
    return d


def cancel(o: Order, reason: str) -> Decision:
    """A cancel request from a channel or an operator."""
    reason = reason or "cancelled on request"
    d = Decision()
    if o.status == OrderStatus.CANCELLED or o.status == OrderStatus.CANCELLING:
        return d  # already under way: the same answer again
    if o.status in CANCELLABLE_AT_ONCE:
        d.status, d.reason = OrderStatus.CANCELLED, reason
        d.entries.append(Entry("ordertoship", "cancelled", reason))
        d.commands.append(_cancel_sales_order(o, reason))
    elif o.status in CANCELLABLE_IN_WAREHOUSE:
        d.status, d.reason = OrderStatus.CANCELLING, reason
        d.entries.append(Entry("ordertoship", "cancel.requested", reason))
        d.commands.append(_cancel_fulfilment(o, reason))
    else:
        raise NotCancellable(f"order {o.order_id} is {o.status} and can no longer be cancelled")
    return d


def order_id_of(subject: str, body: Message) -> str:
    """Every message the workflow follows names its order in one of these places."""
    for path in ("order_id", "sales_order.order_id", "invoice.order_id", "fulfilment_order.order_id",
                 "shipment.order_id"):
        obj = body
        for part in path.split("."):
            if not hasattr(obj, part) or (part != path.split(".")[-1] and not obj.HasField(part)):
                obj = None
                break
            obj = getattr(obj, part)
        if obj:
            return obj
    return ""
