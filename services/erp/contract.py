"""What the ERP contract (proto/crossdock/erp/v1) requires of a request, and the
canonical messages every backend answers with: shared by the built-in ERP and the
adapters, so that a consumer sees the same errors and the same shapes whichever ERP
is behind the seam."""

from __future__ import annotations

import re
from datetime import datetime

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import replenishment_pb2 as repl_pb
from services.mesh.errors import InvalidArgument

from . import domain

CURRENCY = re.compile(r"[A-Z]{3}")
SALES_ORDER_STATUS = {
    "ACCEPTED": erp_pb2.SALES_ORDER_STATUS_ACCEPTED,
    "REJECTED": erp_pb2.SALES_ORDER_STATUS_REJECTED,
    "CANCELLED": erp_pb2.SALES_ORDER_STATUS_CANCELLED,
    "INVOICED": erp_pb2.SALES_ORDER_STATUS_INVOICED,
}
RMA_STATUS = {
    "AUTHORIZED": erp_pb2.RETURN_AUTHORIZATION_STATUS_AUTHORIZED,
    "REFUSED": erp_pb2.RETURN_AUTHORIZATION_STATUS_REFUSED,
    "CANCELLED": erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED,
    "CREDITED": erp_pb2.RETURN_AUTHORIZATION_STATUS_CREDITED,
}


def require(**fields: str) -> None:
    if problems := [(name, "required") for name, value in fields.items() if not value]:
        raise InvalidArgument(problems)


def validate_customer(c: erp_pb2.Customer) -> None:
    problems = []
    if not c.customer_id:
        problems.append(("customer.customer_id", "required"))
    if not CURRENCY.fullmatch(c.currency_code):
        problems.append(("customer.currency_code", "must be a 3-letter ISO 4217 code"))
    if c.credit_limit.amount_minor < 0:
        problems.append(("customer.credit_limit", "must not be negative"))
    if c.credit_limit.currency_code not in ("", c.currency_code):
        problems.append(("customer.credit_limit.currency_code", "must be the customer's currency"))
    if c.ship_to.country_code and not re.fullmatch(r"[A-Za-z]{2}", c.ship_to.country_code):
        problems.append(("customer.ship_to.country_code", "must be an ISO 3166-1 alpha-2 code"))
    if problems:
        raise InvalidArgument(problems)


def validate_item(i: erp_pb2.Item) -> None:
    problems = []
    if not i.sku:
        problems.append(("item.sku", "required"))
    if not i.uom:
        problems.append(("item.uom", "required"))
    if not CURRENCY.fullmatch(i.unit_price.currency_code):
        problems.append(("item.unit_price.currency_code", "must be a 3-letter ISO 4217 code"))
    if i.unit_price.amount_minor < 0:
        problems.append(("item.unit_price", "must not be negative"))
    if i.weight_grams < 0:
        problems.append(("item.weight_grams", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)


def validate_credit_request(customer_id: str, amount: Money) -> None:
    require(customer_id=customer_id)
    if amount.amount_minor < 0:
        raise InvalidArgument([("amount.amount_minor", "must not be negative")])


def validate_corrections(reference: str, corrections: list[erp_pb2.LedgerCorrection]) -> None:
    problems = [] if reference else [("reference", "required")]
    for i, c in enumerate(corrections):
        if not c.sku or not c.warehouse_id:
            problems.append((f"corrections[{i}]", "sku and warehouse_id are required"))
        if c.sequence < 0 or c.expected_last_sequence < 0:
            problems.append((f"corrections[{i}]", "sequences must not be negative"))
    if problems:
        raise InvalidArgument(problems)


def validate_reorder_point(p: repl_pb.ReorderPoint) -> None:
    problems = [(f"reorder_point.{f}", "required") for f in ("sku", "warehouse_id") if not getattr(p, f)]
    if p.reorder_point < 0:
        problems.append(("reorder_point.reorder_point", "must not be negative"))
    if p.reorder_quantity < 1:
        problems.append(("reorder_point.reorder_quantity", "must be positive"))
    if problems:
        raise InvalidArgument(problems)


def period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """A settlement period, half-open: ``start <= posted_at < end``."""
    problems = []
    if start is None:
        problems.append(("start_time", "required"))
    if end is None:
        problems.append(("end_time", "required"))
    if start is not None and end is not None and end <= start:
        problems.append(("end_time", "must be after start_time"))
    if problems:
        raise InvalidArgument(problems)
    return start, end  # type: ignore[return-value]


# ---- canonical fields a master-data change compares (balances are the ERP's own) ----

def customer_fields(c: erp_pb2.Customer) -> dict:
    return {"name": c.name, "currency_code": c.currency_code,
            "credit_limit": c.credit_limit.amount_minor,
            "ship_to": c.ship_to.SerializeToString(deterministic=True), "blocked": c.blocked}


def item_fields(i: erp_pb2.Item) -> dict:
    return {"description": i.description, "uom": i.uom,
            "unit_price": (i.unit_price.currency_code, i.unit_price.amount_minor),
            "weight_grams": i.weight_grams, "active": i.active}


def credit_response(credit: domain.Credit, amount_minor: int) -> erp_pb2.CheckCreditResponse:
    decision = domain.check_credit(credit, amount_minor)
    return erp_pb2.CheckCreditResponse(
        approved=decision.approved, reason=decision.reason,
        available_credit=Money(currency_code=credit.currency_code, amount_minor=decision.available))


def sales_order_lines(so: erp_pb2.SalesOrder) -> list[domain.Line]:
    return [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price.amount_minor) for x in so.lines]
