"""Request validation of the gRPC edge (the equivalent of protovalidate rules,
which cannot be used here: see the notes): a malformed request gets
INVALID_ARGUMENT with one field violation per problem."""

from __future__ import annotations

import re

from google.protobuf.message import Message

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as rpb

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_LINES = 100
MAX_QUANTITY = 1_000_000

# Control characters (C0 but TAB, LF and CR; DEL; C1) and lone surrogates: never
# in a text field (PostgreSQL text cannot hold NUL; the others are a log or
# label injection waiting to happen). The same rule on HTTP and gRPC.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
CONTROL_MESSAGE = "control characters (NUL, C0 but tab and line breaks, DEL, C1) are not allowed"


def has_control_characters(text: str) -> bool:
    return CONTROL.search(text) is not None


def text_violations(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """A violation per string field (at any depth, in lists and maps) holding a control character."""
    v: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                _text(v, f"{name}[{key!r}]", key)
                _text(v, f"{name}[{key!r}]", item)
        elif field.is_repeated:
            for i, item in enumerate(value):
                _text(v, f"{name}[{i}]", item)
        else:
            _text(v, name, value)
    return v


def _text(v: list, name: str, value: object) -> None:
    if isinstance(value, Message):
        v += text_violations(value, f"{name}.")
    elif isinstance(value, str) and has_control_characters(value):
        v.append((name, CONTROL_MESSAGE))




def _id(v: list, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.append((field, "required"))
    elif not ID.match(value):
        v.append((field, "1-64 letters, digits or . _ : -"))


def _page(v: list, size: int, token: str, cap: int) -> None:
    if size < 0 or size > cap:
        v.append(("page_size", f"must be between 0 and {cap}"))
    if len(token) > 500:
        v.append(("page_token", "too long"))


def submit_order(r: ots.SubmitOrderRequest) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    if not r.request_id or len(r.request_id) > 128:
        v.append(("request_id", "required, at most 128 characters"))
    _id(v, "customer_id", r.customer_id, required=False)
    _id(v, "warehouse_id", r.warehouse_id, required=False)
    _id(v, "service_level", r.service_level, required=False)
    if not r.lines:
        v.append(("lines", "at least one line"))
    if len(r.lines) > MAX_LINES:
        v.append(("lines", f"at most {MAX_LINES} lines"))
    for i, ln in enumerate(r.lines):
        _id(v, f"lines[{i}].sku", ln.sku)
        if not 1 <= ln.quantity <= MAX_QUANTITY:
            v.append((f"lines[{i}].quantity", f"between 1 and {MAX_QUANTITY}"))
        if ln.HasField("unit_price"):
            v.append((f"lines[{i}].unit_price", "set by the service; must be empty"))
        if ln.line_number:
            v.append((f"lines[{i}].line_number", "set by the service; must be empty"))
    if r.HasField("ship_to") and not re.fullmatch(r"[A-Z]{2}", r.ship_to.country_code):
        v.append(("ship_to.country_code", "ISO 3166-1 alpha-2"))
    if r.shortage_policy not in ots.ShortagePolicy.values():
        v.append(("shortage_policy", "unknown value"))
    return v


def order_id(r) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    _id(v, "order_id", r.order_id)
    if len(getattr(r, "reason", "")) > 500:
        v.append(("reason", "at most 500 characters"))
    return v


def list_orders(r: ots.ListOrdersRequest, cap: int) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    _page(v, r.page_size, r.page_token, cap)
    _id(v, "customer_id", r.customer_id, required=False)
    if r.status not in ots.OrderStatus.values():
        v.append(("status", "unknown value"))
    return v


def create_return(r: rpb.CreateReturnRequest) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    if not r.request_id or len(r.request_id) > 128:
        v.append(("request_id", "required, at most 128 characters"))
    _id(v, "order_id", r.order_id)
    if not r.lines or len(r.lines) > MAX_LINES:
        v.append(("lines", f"between 1 and {MAX_LINES} lines"))
    for i, ln in enumerate(r.lines):
        if not ln.sku and not ln.line_number:
            v.append((f"lines[{i}].sku", "sku or line_number required"))
        elif ln.sku:
            _id(v, f"lines[{i}].sku", ln.sku)
        if not 1 <= ln.quantity <= MAX_QUANTITY:
            v.append((f"lines[{i}].quantity", f"between 1 and {MAX_QUANTITY}"))
        if ln.reason not in rpb.ReturnReason.values() or ln.reason == 0:
            v.append((f"lines[{i}].reason", "required"))
        for f in ("unit_price", "credit"):
            if ln.HasField(f):
                v.append((f"lines[{i}].{f}", "set by the service; must be empty"))
        for f in ("received_quantity", "restocked_quantity", "scrapped_quantity", "refused_quantity"):
            if getattr(ln, f):
                v.append((f"lines[{i}].{f}", "set by the service; must be empty"))
    return v


def return_id(r) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    _id(v, "return_id", r.return_id)
    return v


def list_returns(r: rpb.ListReturnsRequest, cap: int) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    _page(v, r.page_size, r.page_token, cap)
    _id(v, "order_id", r.order_id, required=False)
    _id(v, "customer_id", r.customer_id, required=False)
    return v


def create_api_client(r, scopes: tuple[str, ...]) -> list[tuple[str, str]]:
    v: list[tuple[str, str]] = []
    _id(v, "channel", r.channel)
    _id(v, "customer_id", r.customer_id, required=False)
    if len(r.name) > 200:
        v.append(("name", "at most 200 characters"))
    for i, scope in enumerate(r.scopes):
        if scope not in scopes:
            v.append((f"scopes[{i}]", f"unknown scope; one of {', '.join(scopes)}"))
    if not 0 <= r.rate_limit <= 1_000_000:  # NaN fails both comparisons
        v.append(("rate_limit", "requests per second, 0 (the gateway default) to 1000000"))
    return v
