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
    PACKED --tms booking failed--> CANCELLING (cancel fulfilment) --wms cancelled--> CANCELLED
    CancelOrder: RECEIVED -> CANCELLED; RELEASED..PICKED -> CANCELLING -> CANCELLED
Compensation on every cancel: WMS releases the allocation, ERP cancels the
sales order and releases the credit it held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2

TERMINAL = {"INVOICED", "REJECTED", "CANCELLED"}
CANCELLABLE_AT_ONCE = {"RECEIVED"}
CANCELLABLE_IN_WAREHOUSE = {"RELEASED", "BACKORDERED", "ALLOCATED", "PICKED"}
SHORTAGE_POLICIES = {"BACKORDER", "CANCEL"}


class NotCancellable(Exception):
    pass


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
    status: str
    warehouse_id: str
    lines: list[Line]
    ship_to: Address
    shortage_policy: str
    service_level: str
    currency_code: str
    total_minor: int = 0


@dataclass(frozen=True)
class Entry:
    source: str
    step: str
    detail: str = ""


@dataclass
class Decision:
    status: str | None = None  # None: unchanged
    reason: str | None = None
    entries: list[Entry] = field(default_factory=list)
    updates: dict[str, str] = field(default_factory=dict)
    commands: list[tuple[str, Message]] = field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return bool(self.status or self.entries or self.updates or self.commands)


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
    policy = {"BACKORDER": wms_pb2.SHORTAGE_POLICY_BACKORDER, "CANCEL": wms_pb2.SHORTAGE_POLICY_CANCEL}
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


# ---- reactions to facts from the systems ----

def react(o: Order, subject: str, body: Message) -> Decision:
    """What the order does when ``subject`` happens; an empty Decision when it does not apply."""
    s = o.status
    d = Decision()
    match subject:
        case "erp.salesorder.accepted" if s == "RECEIVED":
            d.status = "RELEASED"
            d.entries += [Entry("erp", "credit.approved", "sales order accepted, credit approved"),
                          Entry("ordertoship", "released", f"fulfilment sent to warehouse {o.warehouse_id}")]
            d.commands.append(_create_fulfilment(o))
        case "erp.salesorder.rejected" if s == "RECEIVED":
            d.status, d.reason = "REJECTED", f"{body.reason_code}: {body.reason}"
            d.entries.append(Entry("erp", "credit.refused", d.reason))
        case "erp.salesorder.cancelled":
            d.entries.append(Entry("erp", "salesorder.cancelled", "sales order cancelled, credit released"))
        case "erp.invoice.posted" if s == "SHIPPED":
            inv = body.invoice
            d.status = "INVOICED"
            d.updates["invoice_id"] = inv.invoice_id
            d.entries.append(Entry("erp", "invoice.posted",
                                   f"invoice {inv.invoice_id}: {inv.total.amount_minor / 100:.2f} "
                                   f"{inv.total.currency_code}"))
        case "wms.fulfilment.allocated" | "wms.fulfilment.picked" | "wms.fulfilment.packed":
            _milestone(o, subject, body, d)
        case "wms.fulfilment.backordered" if s == "RELEASED":
            d.status, d.reason = "BACKORDERED", _shortages(body.shortages)
            d.entries.append(Entry("wms", "backordered", f"waiting for stock: {d.reason}"))
        case "wms.fulfilment.rejected" if s == "RELEASED":
            reason = f"{body.reason_code}: {_shortages(body.shortages) or body.reason}"
            d.status, d.reason = "CANCELLED", reason
            d.entries += [Entry("wms", "fulfilment.rejected", reason),
                          Entry("ordertoship", "compensate", "cancel sales order, release credit")]
            d.commands.append(_cancel_sales_order(o, reason))
        case "tms.shipment.booked" if s == "PACKED":
            sh = body.shipment
            d.status = "SHIPMENT_BOOKED"
            d.updates.update(shipment_id=sh.shipment_id, carrier_id=sh.carrier_id,
                             tracking_number=sh.tracking_number)
            d.entries.append(Entry("tms", "shipment.booked",
                                   f"{sh.carrier_id} {sh.service_level}, tracking {sh.tracking_number}"))
            d.commands.append(("cmd.wms.fulfilment.assign_shipment", wms.AssignShipment(
                order_id=o.order_id, shipment_id=sh.shipment_id, carrier_id=sh.carrier_id,
                tracking_number=sh.tracking_number)))
        case "tms.shipment.booking_failed" if s == "PACKED":
            reason = f"{body.reason_code}: {body.reason}"
            d.status, d.reason = "CANCELLING", reason
            d.entries += [Entry("tms", "shipment.booking_failed", reason),
                          Entry("ordertoship", "compensate", "release allocation, cancel sales order")]
            d.commands.append(_cancel_fulfilment(o, reason))
        case "wms.fulfilment.shipped" if s not in TERMINAL and s != "SHIPPED":
            f = body.fulfilment_order
            d.status = "SHIPPED"
            d.entries += [Entry("wms", "shipped", f"ship confirmed, tracking {f.tracking_number}"),
                          Entry("ordertoship", "invoice.requested", "shipment confirmation posted to ERP")]
            shipped = {q.sku: q.quantity for q in f.lines}
            d.commands.append(("cmd.erp.invoice.post", erp.PostInvoice(
                order_id=o.order_id, shipment_id=f.shipment_id or f"SHP-{o.order_id}",
                shipped_lines=[erp_pb2.SalesOrderLine(line_number=ln.line_number, sku=ln.sku,
                                                      quantity=shipped.get(ln.sku, ln.quantity))
                               for ln in o.lines],
            )))
        case "wms.fulfilment.cancelled" if s == "CANCELLING":
            d.status = "CANCELLED"
            d.entries.append(Entry("wms", "fulfilment.cancelled", "allocation released"))
            d.commands.append(_cancel_sales_order(o, "order cancelled"))
        case "wms.fulfilment.cancel_refused":
            d.entries.append(Entry("wms", "cancel.refused", body.reason))
    return d


# The warehouse's milestones in the order they happen. After a consumer
# restart JetStream may deliver a newer milestone before an unacked older one
# is redelivered: a newer one moves the order forward past the missed steps, a
# late one is only recorded.
MILESTONES = {"wms.fulfilment.allocated": "ALLOCATED", "wms.fulfilment.picked": "PICKED",
              "wms.fulfilment.packed": "PACKED"}
IN_WAREHOUSE = ["RELEASED", "BACKORDERED", "ALLOCATED", "PICKED", "PACKED", "SHIPMENT_BOOKED", "SHIPPED"]


def _milestone(o: Order, subject: str, body: Message, d: Decision) -> None:
    target = MILESTONES[subject]
    step = target.lower()
    detail = {"ALLOCATED": f"stock allocated in {o.warehouse_id}",
              "PICKED": "",
              "PACKED": f"{body.fulfilment_order.package_weight_grams} g"}[target]
    if o.status not in IN_WAREHOUSE:
        return  # cancelling or finished: nothing moves
    if IN_WAREHOUSE.index(o.status) >= IN_WAREHOUSE.index(target):
        d.entries.append(Entry("wms", step, (detail + " (reported late)").strip()))
        return
    d.status = target
    d.entries.append(Entry("wms", step, detail))
    if target == "PACKED":
        d.entries.append(Entry("ordertoship", "shipment.requested", "booking requested from TMS"))
        d.commands.append(("cmd.tms.shipment.book", tms.BookShipment(
            order_id=o.order_id, warehouse_id=o.warehouse_id, destination=o.ship_to,
            weight_grams=body.fulfilment_order.package_weight_grams, service_level=o.service_level,
            currency_code=o.currency_code)))


def cancel(o: Order, reason: str) -> Decision:
    """A cancel request from a channel or an operator."""
    reason = reason or "cancelled on request"
    d = Decision()
    if o.status == "CANCELLED" or o.status == "CANCELLING":
        return d  # already under way: the same answer again
    if o.status in CANCELLABLE_AT_ONCE:
        d.status, d.reason = "CANCELLED", reason
        d.entries.append(Entry("ordertoship", "cancelled", reason))
        d.commands.append(_cancel_sales_order(o, reason))
    elif o.status in CANCELLABLE_IN_WAREHOUSE:
        d.status, d.reason = "CANCELLING", reason
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
