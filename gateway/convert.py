"""Protobuf messages -> the gateway's JSON shapes (and the models that document them)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as rpb


class MoneyOut(BaseModel):
    currency_code: str
    amount_minor: int


class TimelineEntryOut(BaseModel):
    time: str
    source: str
    step: str
    status: str
    detail: str


class OrderLineOut(BaseModel):
    line_number: int
    sku: str
    quantity: int
    unit_price: MoneyOut


class AddressOut(BaseModel):
    name: str
    line1: str
    city: str
    postal_code: str
    country_code: str


class OrderSummaryOut(BaseModel):
    order_id: str
    customer_id: str
    status: str
    status_reason: str
    warehouse_id: str
    shortage_policy: str
    service_level: str
    ship_to: AddressOut
    total: MoneyOut
    shipment_id: str
    carrier_id: str
    tracking_number: str
    invoice_id: str
    create_time: str
    update_time: str
    trace_id: str


class OrderOut(OrderSummaryOut):
    lines: list[OrderLineOut]
    timeline: list[TimelineEntryOut]


class OrderListedOut(OrderSummaryOut):
    """An order in a listing: AIP-157 views. BASIC (the default) leaves out the lines
    and the timeline (absent, never an empty list standing for "not loaded"); FULL
    has them, as GET /v1/orders/{order_id} does."""

    lines: list[OrderLineOut] | None = Field(default=None, description="view=FULL only")
    timeline: list[TimelineEntryOut] | None = Field(default=None, description="view=FULL only")


class OrderPage(BaseModel):
    orders: list[OrderListedOut]
    next_page_token: str


class ReturnLineOut(BaseModel):
    line_number: int
    sku: str
    quantity: int
    reason: str
    note: str
    received_quantity: int
    restocked_quantity: int
    scrapped_quantity: int
    refused_quantity: int


class ReturnOut(BaseModel):
    return_id: str
    order_id: str
    customer_id: str
    warehouse_id: str
    status: str
    status_reason: str
    rma_number: str
    lines: list[ReturnLineOut]
    expected_credit: MoneyOut
    credited: MoneyOut
    credit_memo_id: str
    create_time: str
    update_time: str
    trace_id: str
    timeline: list[TimelineEntryOut] = Field(description="empty in listings")


class ReturnPage(BaseModel):
    returns: list[ReturnOut]
    next_page_token: str


def _ts(ts) -> str:
    return ts.ToJsonString() if ts.seconds or ts.nanos else ""


def _money(m) -> dict:
    return {"currency_code": m.currency_code, "amount_minor": m.amount_minor}


def _address(a) -> dict:
    return {"name": a.name, "line1": a.line1, "city": a.city, "postal_code": a.postal_code,
            "country_code": a.country_code}


def _timeline(entries, status_name) -> list[dict]:
    return [{"time": _ts(e.time), "source": e.source, "step": e.step, "status": status_name(e.status),
             "detail": e.detail} for e in entries]


def order_status(value: int) -> str:
    known = value in ots.OrderStatus.values()
    return ots.OrderStatus.Name(value).removeprefix("ORDER_STATUS_") if known else ""


def return_status(value: int) -> str:
    known = value in rpb.ReturnStatus.values()
    return rpb.ReturnStatus.Name(value).removeprefix("RETURN_STATUS_") if known else ""


def order_summary(o: ots.Order) -> dict:
    """An order's BASIC view (listings): everything but its lines and timeline."""
    full = order(o)
    del full["lines"], full["timeline"]
    return full


def order(o: ots.Order) -> dict:
    return {
        "order_id": o.order_id, "customer_id": o.customer_id, "status": order_status(o.status),
        "status_reason": o.status_reason, "warehouse_id": o.warehouse_id,
        "shortage_policy": ots.ShortagePolicy.Name(o.shortage_policy).removeprefix("SHORTAGE_POLICY_"),
        "service_level": o.service_level, "ship_to": _address(o.ship_to),
        "lines": [{"line_number": ln.line_number, "sku": ln.sku, "quantity": ln.quantity,
                   "unit_price": _money(ln.unit_price)} for ln in o.lines],
        "total": _money(o.total), "shipment_id": o.shipment_id, "carrier_id": o.carrier_id,
        "tracking_number": o.tracking_number, "invoice_id": o.invoice_id,
        "create_time": _ts(o.create_time), "update_time": _ts(o.update_time), "trace_id": o.trace_id,
        "timeline": _timeline(o.timeline, order_status),
    }


def customer_return(r: rpb.CustomerReturn) -> dict:
    return {
        "return_id": r.return_id, "order_id": r.order_id, "customer_id": r.customer_id,
        "warehouse_id": r.warehouse_id, "status": return_status(r.status), "status_reason": r.status_reason,
        "rma_number": r.rma_number,
        "lines": [{"line_number": ln.line_number, "sku": ln.sku, "quantity": ln.quantity,
                   "reason": rpb.ReturnReason.Name(ln.reason).removeprefix("RETURN_REASON_")
                   if ln.reason in rpb.ReturnReason.values() else "",
                   "note": ln.note, "received_quantity": ln.received_quantity,
                   "restocked_quantity": ln.restocked_quantity, "scrapped_quantity": ln.scrapped_quantity,
                   "refused_quantity": ln.refused_quantity} for ln in r.lines],
        "expected_credit": _money(r.expected_credit), "credited": _money(r.credited),
        "credit_memo_id": r.credit_memo_id, "create_time": _ts(r.create_time),
        "update_time": _ts(r.update_time), "trace_id": r.trace_id,
        "timeline": _timeline(r.timeline, return_status),
    }
