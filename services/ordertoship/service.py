"""Order-to-ship use cases: submit, read, list, cancel, and apply a system event.

Submission validates against ERP and WMS over gRPC (with deadlines), then
records the order, its first timeline entry and the ERP sales-order command
in one transaction. Everything after that is driven by events (``advance``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import messages_pb2 as events
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from services.mesh import metrics, telemetry
from services.mesh.app import TRANSIENT, Clients
from services.mesh.errors import (
    DownstreamUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.mesh.paging import keyset_page
from services.mesh.process import (
    ConcurrentUpdate,
    Entry,
    Instances,
    note_entry,
    note_violations,
    proto_numbers,
    request_fingerprint,
)
from services.mesh.store import Store, Tx, utcnow

from . import workflow
from .placement import Placement
from .store import (
    customers,
    exception_policies,
    exceptions,
    items,
    order_lines,
    order_shipments,
    orders,
    timeline,
)
from .workflow import (
    Action,
    ExceptionKind,
    ExceptionPolicy,
    ExceptionStatus,
    OrderStatus,
    ShortagePolicy,
)

MAX_LINES = 200
MAX_QUANTITY = 1_000_000

# The contract's number of each name of the workflow (a name it lacks fails at import).
STATUS = proto_numbers(OrderStatus, pb.OrderStatus, "ORDER_STATUS_")
SHORTAGE_POLICY = proto_numbers(ShortagePolicy, pb.ShortagePolicy, "SHORTAGE_POLICY_")
EXCEPTION_POLICY = proto_numbers(ExceptionPolicy, pb.ExceptionPolicy, "EXCEPTION_POLICY_")
EXCEPTION_KIND = proto_numbers(ExceptionKind, pb.ExceptionKind, "EXCEPTION_KIND_")
EXCEPTION_STATUS = proto_numbers(ExceptionStatus, pb.ExceptionStatus, "EXCEPTION_STATUS_")
ACTION = proto_numbers(Action, pb.ResolutionAction, "RESOLUTION_ACTION_")


def _status_changed(order_id: str, from_status: str, to_status: str, reason: str) -> tuple[str, Message]:
    return "ordertoship.order.status_changed", events.OrderStatusChanged(
        order_id=order_id, from_status=STATUS[from_status], to_status=STATUS[to_status], reason=reason)


# Orders, their request ids, their timeline and their versioned changes of state.
ORDERS = Instances("order", orders, timeline, "order_id", _status_changed)


class ItemsNotFound(NotFound):
    """SKUs ERP does not know: NOT_FOUND with a ResourceInfo naming each."""

    def __init__(self, skus: list[str]) -> None:
        super().__init__("item", skus[0], f"unknown SKU(s): {', '.join(skus)}")
        self.skus = skus

    def details(self) -> list:
        error_info, _first_sku = super().details()
        return [error_info, *(error_details_pb2.ResourceInfo(resource_type="item", resource_name=s)
                              for s in self.skus)]


# ---- validation of a submission (shape only; existence is checked by lookups) ----

def validate_submission(req: pb.SubmitOrderRequest) -> None:
    v: list[tuple[str, str]] = []
    if len(req.request_id) > 128:
        v.append(("request_id", "at most 128 characters"))
    if not req.customer_id:
        v.append(("customer_id", "required"))
    if not req.lines:
        v.append(("lines", "at least one line is required"))
    if len(req.lines) > MAX_LINES:
        v.append(("lines", f"at most {MAX_LINES} lines"))
    seen: dict[str, int] = {}
    for i, line in enumerate(req.lines):
        if not line.sku:
            v.append((f"lines[{i}].sku", "required"))
        elif line.sku in seen:
            v.append((f"lines[{i}].sku", f"duplicate of lines[{seen[line.sku]}]; merge the quantities"))
        else:
            seen[line.sku] = i
        if line.quantity <= 0:
            v.append((f"lines[{i}].quantity", "must be positive"))
        elif line.quantity > MAX_QUANTITY:
            v.append((f"lines[{i}].quantity", f"at most {MAX_QUANTITY}"))
        if line.HasField("unit_price"):
            v.append((f"lines[{i}].unit_price", "set by the service from the ERP price list"))
    if req.HasField("ship_to") and len(req.ship_to.country_code) != 2:
        v.append(("ship_to.country_code", "a 2-letter ISO 3166 code is required"))
    if v:
        raise InvalidArgument(v)


def policy_name(value: int, default: str) -> ShortagePolicy:
    name = pb.ShortagePolicy.Name(value).removeprefix("SHORTAGE_POLICY_")
    return ShortagePolicy(default if name == "UNSPECIFIED" else name)


# ---- conversions ----

def _pairs(text: str) -> list[tuple[str, int]]:
    out = []
    for part in filter(None, text.split(",")):
        sku, _, qty = part.rpartition("=")
        out.append((sku, int(qty)))
    return out


def _text(pairs) -> str:
    return ",".join(f"{sku}={qty}" for sku, qty in pairs)


def _policy_pb(name: str) -> int:
    return EXCEPTION_POLICY[name] if name else 0


def exception_pb(r) -> pb.OrderException:
    e = pb.OrderException(
        exception_id=r.exception_id, order_id=r.order_id, customer_id=r.customer_id,
        kind=EXCEPTION_KIND.get(r.kind, pb.EXCEPTION_KIND_UNSPECIFIED),  # as WMS reported it
        status=EXCEPTION_STATUS[r.status],
        lines=[SkuQuantity(sku=sku, quantity=qty) for sku, qty in _pairs(r.lines)],
        detail=r.detail, wave=r.wave, policy=_policy_pb(r.policy),
        action=ACTION[r.action] if r.action else 0,
        resolved_by=r.resolved_by, note=r.note)
    e.raise_time.FromDatetime(r.raised_at)
    if r.resolved_at is not None:
        e.resolve_time.FromDatetime(r.resolved_at)
    return e


def _line_pb(row, currency: str) -> pb.OrderLine:
    return pb.OrderLine(line_number=row.line_number, sku=row.sku, quantity=row.quantity,
                        unit_price=Money(currency_code=currency, amount_minor=row.unit_price_minor))


def order_pb(row, lines=(), entries=(), shipments=()) -> pb.Order:
    o = pb.Order(
        order_id=row.order_id, request_id=row.request_id, customer_id=row.customer_id,
        warehouse_id=row.warehouse_id,
        ship_to=Address(name=row.ship_to_name, line1=row.ship_to_line1, city=row.ship_to_city,
                        postal_code=row.ship_to_postal_code, country_code=row.ship_to_country_code),
        shortage_policy=SHORTAGE_POLICY[row.shortage_policy],
        service_level=row.service_level,
        status=STATUS[row.status],
        status_reason=row.status_reason,
        total=Money(currency_code=row.currency_code, amount_minor=row.total_minor),
        shipment_id=row.shipment_id, carrier_id=row.carrier_id,
        tracking_number=row.tracking_number, invoice_id=row.invoice_id, trace_id=row.trace_id,
        lines=[_line_pb(ln, row.currency_code) for ln in lines],
        channel=row.channel, exception_policy=_policy_pb(row.exception_policy),
        cancelled_lines=[SkuQuantity(sku=ln.sku, quantity=ln.cancelled_quantity)
                         for ln in lines if ln.cancelled_quantity],
    )
    for sh in shipments:
        out = o.shipments.add(shipment_id=sh.shipment_id, wave=sh.wave, carrier_id=sh.carrier_id,
                              tracking_number=sh.tracking_number, invoice_id=sh.invoice_id,
                              lines=[SkuQuantity(sku=sku, quantity=qty) for sku, qty in _pairs(sh.lines)])
        out.ship_time.FromDatetime(sh.shipped_at)
    o.create_time.FromDatetime(row.created_at)
    o.update_time.FromDatetime(row.updated_at)
    for e in entries:
        t = o.timeline.add(source=e.source, step=e.step, detail=e.detail, trace_id=e.trace_id,
                           status=STATUS[e.status], actor=e.actor)
        t.time.FromDatetime(e.at)
    return o


def workflow_order(row, lines, shipments=()) -> workflow.Order:
    return workflow.Order(
        order_id=row.order_id, customer_id=row.customer_id, status=OrderStatus(row.status),
        warehouse_id=row.warehouse_id,
        lines=[workflow.Line(ln.line_number, ln.sku, ln.quantity, ln.unit_price_minor) for ln in lines],
        ship_to=Address(name=row.ship_to_name, line1=row.ship_to_line1, city=row.ship_to_city,
                        postal_code=row.ship_to_postal_code, country_code=row.ship_to_country_code),
        shortage_policy=ShortagePolicy(row.shortage_policy), service_level=row.service_level,
        currency_code=row.currency_code, total_minor=row.total_minor, wave=row.wave,
        exception_policy=ExceptionPolicy(row.exception_policy), held_from=row.held_from,
        package_weight_grams=row.package_weight_grams,
        shipments={sh.shipment_id: sh.invoice_id for sh in shipments},
    )


# ---- reads ----

async def _shipments(conn: AsyncConnection, order_id: str) -> list:
    return (await conn.execute(select(order_shipments).where(order_shipments.c.order_id == order_id)
                               .order_by(order_shipments.c.wave))).all()

async def _load(conn: AsyncConnection, order_id: str, *, lock: bool = False):
    q = select(orders).where(orders.c.order_id == order_id)
    row = (await conn.execute(q.with_for_update() if lock else q)).first()
    if row is None:
        return None, []
    lines = (await conn.execute(
        select(order_lines).where(order_lines.c.order_id == order_id).order_by(order_lines.c.line_number)
    )).all()
    return row, lines


async def get_order(store: Store, order_id: str) -> pb.Order:
    async with store.read() as conn:
        row, lines = await _load(conn, order_id)
        if row is None:
            raise NotFound("order", order_id)
        entries = await ORDERS.timeline_of(conn, order_id)
        shipments = await _shipments(conn, order_id)
    return order_pb(row, lines, entries, shipments)


async def list_orders(store: Store, req: pb.ListOrdersRequest) -> pb.ListOrdersResponse:
    q = select(orders)
    if req.customer_id:
        q = q.where(orders.c.customer_id == req.customer_id)
    if req.status:
        q = q.where(orders.c.status == pb.OrderStatus.Name(req.status).removeprefix("ORDER_STATUS_"))
    if req.channel:
        q = q.where(orders.c.channel == req.channel)
    if req.sku:
        q = q.where(orders.c.order_id.in_(select(order_lines.c.order_id).where(order_lines.c.sku == req.sku)))
    if req.HasField("created_after"):
        q = q.where(orders.c.created_at >= req.created_after.ToDatetime(tzinfo=UTC))
    if req.HasField("created_before"):
        q = q.where(orders.c.created_at < req.created_before.ToDatetime(tzinfo=UTC))
    async with store.read() as conn:
        rows, token = await keyset_page(conn, q, [orders.c.seq], req.page_size, req.page_token,
                                        descending=req.newest_first)
    return pb.ListOrdersResponse(orders=[order_pb(r) for r in rows], next_page_token=token)


# ---- submission ----

@dataclass
class Priced:
    currency_code: str
    lines: list[workflow.Line]
    ship_to: Address
    warehouse_id: str
    # Timeline entries about the submission itself (what is waiting, and why).
    notes: list[Entry]


def _transient(exc: Exception) -> bool:
    return isinstance(exc, DownstreamUnavailable) or (
        isinstance(exc, grpc.aio.AioRpcError) and exc.code() in TRANSIENT)


async def _customer(store: Store, clients: Clients, customer_id: str) -> erp_pb2.Customer:
    """From the master-data replica; from ERP when the replica has not seen it yet."""
    async with store.read() as conn:
        row = (await conn.execute(select(customers).where(customers.c.customer_id == customer_id))).first()
    if row is not None:
        return erp_pb2.Customer(
            customer_id=row.customer_id, currency_code=row.currency_code, blocked=row.blocked,
            ship_to=Address(name=row.ship_to_name, line1=row.ship_to_line1, city=row.ship_to_city,
                            postal_code=row.ship_to_postal_code, country_code=row.ship_to_country_code))
    try:
        return (await clients.erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id=customer_id))).customer
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound("customer", customer_id) from None
        raise


async def _items(store: Store, clients: Clients, skus: list[str]) -> dict[str, erp_pb2.Item]:
    async with store.read() as conn:
        rows = (await conn.execute(select(items).where(items.c.sku.in_(skus)))).all()
    found = {r.sku: erp_pb2.Item(sku=r.sku, active=r.active, unit_price=Money(
        currency_code=r.currency_code, amount_minor=r.unit_price_minor)) for r in rows}
    if missing := [s for s in skus if s not in found]:
        for item in (await clients.erp.BatchGetItems(erp_pb2.BatchGetItemsRequest(skus=missing))).items:
            found[item.sku] = item
    return found


async def _price_and_place(store: Store, clients: Clients, placement: Placement,
                           req: pb.SubmitOrderRequest) -> Priced:
    """Validate customer and items (replica, else ERP), pre-check credit, choose the warehouse."""
    customer = await _customer(store, clients, req.customer_id)
    skus = [ln.sku for ln in req.lines]
    items_by_sku = await _items(store, clients, skus)
    missing = [s for s in skus if s not in items_by_sku]
    if missing:
        raise ItemsNotFound(missing)
    for i, ln in enumerate(req.lines):
        item = items_by_sku[ln.sku]
        if not item.active:
            raise FailedPrecondition(f"item {ln.sku} is not active", reason="ITEM_INACTIVE",
                                     subject=f"lines[{i}].sku")
        if item.unit_price.currency_code != customer.currency_code:
            raise FailedPrecondition(
                f"item {ln.sku} is priced in {item.unit_price.currency_code}, the customer buys in "
                f"{customer.currency_code}", reason="CURRENCY_MISMATCH", subject=f"lines[{i}].sku")
    lines = [workflow.Line(i + 1, ln.sku, ln.quantity, items_by_sku[ln.sku].unit_price.amount_minor)
             for i, ln in enumerate(req.lines)]
    ship_to = req.ship_to if req.HasField("ship_to") else customer.ship_to
    if not ship_to.country_code:
        raise FailedPrecondition(f"customer {req.customer_id} has no ship-to address; give ship_to",
                                 reason="NO_SHIP_TO", subject="ship_to")
    notes = []
    total = sum(ln.quantity * ln.unit_price_minor for ln in lines)

    async def precheck_credit() -> None:
        try:
            # Advisory: ERP decides atomically when it accepts the sales order.
            credit = await clients.erp.CheckCredit(erp_pb2.CheckCreditRequest(
                customer_id=req.customer_id, amount=Money(currency_code=customer.currency_code,
                                                          amount_minor=total)))
            if not credit.approved:
                notes.append(Entry("erp", "credit.precheck", f"likely refused: {credit.reason}"))
        except Exception as exc:  # noqa: BLE001
            if not _transient(exc):
                raise
            notes.append(Entry("ordertoship", "waiting.erp",
                               "ERP is unavailable: the sales order is queued durably and is "
                               "created, credit-checked and released when ERP is back"))

    async def place() -> str:
        try:
            warehouse, note = await placement.choose(req)
            if note:
                notes.append(Entry("ordertoship", "waiting.wms", note))
            return warehouse
        except Exception as exc:  # noqa: BLE001
            if not _transient(exc):
                raise
            warehouse = req.warehouse_id or await _last_warehouse(store)
            if not warehouse:
                raise DownstreamUnavailable("wms") from None
            notes.append(Entry("ordertoship", "waiting.wms",
                               f"WMS is unavailable: warehouse {warehouse} chosen without an "
                               "availability check"))
            return warehouse

    # The two lookups at once: intake waits for the slower, not for both in a row.
    _, warehouse = await asyncio.gather(precheck_credit(), place())
    return Priced(customer.currency_code, lines, ship_to, warehouse, notes)


async def _last_warehouse(store: Store) -> str:
    async with store.read() as conn:
        return (await conn.execute(
            select(orders.c.warehouse_id).order_by(orders.c.seq.desc()).limit(1))).scalar() or ""


async def replicate_customer(tx: Tx, c: erp_pb2.Customer) -> None:
    await tx.conn.execute(delete(customers).where(customers.c.customer_id == c.customer_id))
    await tx.conn.execute(insert(customers).values(
        customer_id=c.customer_id, currency_code=c.currency_code, blocked=c.blocked,
        ship_to_name=c.ship_to.name, ship_to_line1=c.ship_to.line1, ship_to_city=c.ship_to.city,
        ship_to_postal_code=c.ship_to.postal_code, ship_to_country_code=c.ship_to.country_code,
        updated_at=utcnow()))


async def replicate_item(tx: Tx, item: erp_pb2.Item) -> None:
    await tx.conn.execute(delete(items).where(items.c.sku == item.sku))
    await tx.conn.execute(insert(items).values(
        sku=item.sku, currency_code=item.unit_price.currency_code,
        unit_price_minor=item.unit_price.amount_minor, active=item.active, updated_at=utcnow()))


async def exception_policy_for(conn: AsyncConnection, customer_id: str, channel: str, default: str) -> str:
    """The customer's own policy, else the channel's, else the stored default, else ``default``."""
    wanted = [("customer", customer_id), ("channel", channel), ("default", "")]
    rows = {(r.scope, r.key): r.policy for r in (await conn.execute(select(exception_policies).where(
        tuple_(exception_policies.c.scope, exception_policies.c.key).in_(wanted)))).all()}
    return (rows.get(("customer", customer_id)) or (channel and rows.get(("channel", channel)))
            or rows.get(("default", "")) or default)


async def submit_order(store: Store, clients: Clients, placement: Placement,
                       req: pb.SubmitOrderRequest, *, default_policy: str,
                       default_exception_policy: str = ExceptionPolicy.SHIP_PARTIAL) -> pb.Order:
    validate_submission(req)
    request_id = req.request_id or str(uuid.uuid4())
    fingerprint = request_fingerprint(req)
    if existing := await _by_request_id(store, request_id, fingerprint):
        return existing
    priced = await _price_and_place(store, clients, placement, req)
    now = utcnow()
    order = workflow.Order(
        order_id=f"ORD-{uuid.uuid4().hex[:12].upper()}", customer_id=req.customer_id,
        status=OrderStatus.RECEIVED, warehouse_id=priced.warehouse_id, lines=priced.lines,
        ship_to=priced.ship_to, shortage_policy=policy_name(req.shortage_policy, default_policy),
        service_level=req.service_level, currency_code=priced.currency_code,
        total_minor=sum(ln.quantity * ln.unit_price_minor for ln in priced.lines),
    )
    trace_id = telemetry.current_trace_id()
    async with store.read() as conn:
        exception_policy = await exception_policy_for(conn, req.customer_id, req.channel,
                                                      default_exception_policy)
    try:
        async with store.transaction() as tx:
            await tx.conn.execute(insert(orders).values(
                order_id=order.order_id, request_id=request_id, request_hash=fingerprint,
                customer_id=order.customer_id, warehouse_id=order.warehouse_id,
                ship_to_name=order.ship_to.name, ship_to_line1=order.ship_to.line1,
                ship_to_city=order.ship_to.city, ship_to_postal_code=order.ship_to.postal_code,
                ship_to_country_code=order.ship_to.country_code,
                shortage_policy=order.shortage_policy, service_level=order.service_level,
                currency_code=order.currency_code, total_minor=order.total_minor,
                status=order.status, status_reason="", trace_id=trace_id, version=1,
                created_at=now, updated_at=now, channel=req.channel[:64],
                exception_policy=exception_policy,
            ))
            await tx.conn.execute(insert(order_lines), [
                dict(order_id=order.order_id, line_number=ln.line_number, sku=ln.sku,
                     quantity=ln.quantity, unit_price_minor=ln.unit_price_minor) for ln in order.lines])
            await ORDERS.append(tx, order.order_id, order.status, Entry(
                "ordertoship", "received",
                f"{len(order.lines)} line(s), {order.total_minor / 100:.2f} {order.currency_code}, "
                f"warehouse {order.warehouse_id}, shortage policy {order.shortage_policy}, "
                f"exception policy {exception_policy}"))
            for note in priced.notes:
                await ORDERS.append(tx, order.order_id, order.status, note)
            row, lines = await _load(tx.conn, order.order_id)
            created = order_pb(row, lines)
            await tx.emit("ordertoship.order.created", events.OrderCreated(order=created),
                          key=order.order_id)
            subject, command = workflow.create_sales_order(order)
            await tx.emit(subject, command, key=order.order_id)
    except IntegrityError:
        # The same request_id was submitted concurrently and won the race.
        if existing := await _by_request_id(store, request_id, fingerprint):
            return existing
        raise
    return await get_order(store, order.order_id)


async def _by_request_id(store: Store, request_id: str, fingerprint: str) -> pb.Order | None:
    async with store.read() as conn:
        order_id = await ORDERS.by_request_id(conn, request_id, fingerprint)
    return await get_order(store, order_id) if order_id else None


# ---- changes of state ----

async def _apply(tx: Tx, row, decision: workflow.Decision, *,
                 subject: str = "", event_time: datetime | None = None) -> None:
    """The decision about the order ``row`` was read from: its state, timeline and commands
    (the toolkit's versioned apply), then what only an order records."""
    await ORDERS.apply(tx, row, decision)
    await _record(tx, row, decision)
    if decision.status and decision.status != row.status:
        _observe(row, decision.status, subject, event_time)


async def _record(tx: Tx, row, decision: workflow.Decision) -> None:
    """The exceptions, resolutions, shipments, invoices and cancelled lines a decision records."""
    now = utcnow()
    for r in decision.raised:
        await tx.conn.execute(insert(exceptions).values(
            exception_id=f"EXC-{uuid.uuid4().hex[:10].upper()}", order_id=row.order_id,
            customer_id=row.customer_id, kind=r.kind, status=r.status, lines=_text(r.lines),
            detail=r.detail, wave=r.wave, policy=r.policy, action=r.action, resolved_by=r.resolved_by,
            raised_at=now, resolved_at=now if r.status == ExceptionStatus.RESOLVED else None))
        metrics.business_exception(r.kind.lower())
    if (res := decision.resolution) is not None:
        result = await tx.conn.execute(update(exceptions).where(
            exceptions.c.exception_id == res.exception_id, exceptions.c.status == ExceptionStatus.OPEN)
            .values(status=ExceptionStatus.RESOLVED, action=res.action, resolved_by=res.resolved_by,
                    note=res.note, resolved_at=now))
        if result.rowcount != 1:
            raise ConcurrentUpdate(row.order_id)
    for sh in decision.shipments:
        await tx.conn.execute(insert(order_shipments).values(
            shipment_id=sh.shipment_id, order_id=row.order_id, wave=sh.wave, lines=_text(sh.lines),
            carrier_id=sh.carrier_id, tracking_number=sh.tracking_number, invoice_id="", shipped_at=now))
    for shipment_id, invoice_id in decision.invoices.items():
        await tx.conn.execute(update(order_shipments).where(
            order_shipments.c.order_id == row.order_id, order_shipments.c.shipment_id == shipment_id)
            .values(invoice_id=invoice_id))
    for line_number, qty in decision.cancelled_lines.items():
        await tx.conn.execute(update(order_lines).where(
            order_lines.c.order_id == row.order_id, order_lines.c.line_number == line_number)
            .values(cancelled_quantity=order_lines.c.cancelled_quantity + qty))


# Business exceptions, by the fact that causes them (warehouse exceptions and
# carrier failures are counted where they are recorded, by kind: _record).
EXCEPTIONS = {"erp.salesorder.rejected": "credit_rejected",
              "wms.fulfilment.backordered": "shortage_backordered",
              "wms.fulfilment.rejected": "shortage_cancelled"}


def _observe(row, status: str, subject: str, event_time: datetime | None) -> None:
    """The business timings and exceptions of one change of status (Prometheus)."""
    if kind := EXCEPTIONS.get(subject):
        metrics.business_exception(kind)
    if status in workflow.TERMINAL:
        metrics.order_finished(status)
    if status == OrderStatus.RELEASED:
        metrics.observe_business("order_release_delay", metrics.seconds_since(row.created_at))
    elif status == OrderStatus.SHIPPED and event_time is not None:
        # The shipment confirmed in WMS (its event time) -> posted to ERP (now).
        metrics.observe_business("shipment_posting_lag", metrics.seconds_since(event_time))
    elif status == OrderStatus.INVOICED:
        metrics.observe_business("order_completion", metrics.seconds_since(row.created_at))
        if row.status == OrderStatus.SHIPPED and event_time is not None:
            # Posted to ERP (the SHIPPED change, last update) -> invoiced by ERP (its event time).
            metrics.observe_business("invoice_timing", metrics.seconds_since(row.updated_at, event_time))


async def advance(tx: Tx, subject: str, body: Message, *, event_time: datetime | None = None) -> bool:
    """Apply one system event to its order; False when it names no order of ours."""
    order_id = workflow.order_id_of(subject, body)
    row, lines = await _load(tx.conn, order_id, lock=True)
    if row is None:
        return False
    order = workflow_order(row, lines, await _shipments(tx.conn, order_id))
    decision = workflow.react(order, subject, body)
    if decision.changes_anything:
        await _apply(tx, row, decision, subject=subject, event_time=event_time)
    return True


async def cancel_order(store: Store, order_id: str, reason: str) -> pb.Order:
    async with store.transaction() as tx:
        row, lines = await _load(tx.conn, order_id, lock=True)
        if row is None:
            raise NotFound("order", order_id)
        order = workflow_order(row, lines, await _shipments(tx.conn, order_id))
        try:
            decision = workflow.cancel(order, reason)
        except workflow.NotCancellable as exc:
            raise FailedPrecondition(str(exc), reason="ORDER_NOT_CANCELLABLE", subject=order_id) from None
        if decision.changes_anything:
            await _apply(tx, row, decision)
            # An open exception is settled by the cancellation.
            await tx.conn.execute(update(exceptions).where(
                exceptions.c.order_id == order_id, exceptions.c.status == ExceptionStatus.OPEN).values(
                status=ExceptionStatus.RESOLVED, action=Action.CANCEL_ORDER, resolved_by="cancel request",
                note=reason or "", resolved_at=utcnow()))
    return await get_order(store, order_id)


# ---- the exception work list ----

ACTIONS = {number: action for action, number in ACTION.items()}


async def _exception_row(conn: AsyncConnection, exception_id: str):
    row = (await conn.execute(select(exceptions).where(exceptions.c.exception_id == exception_id))).first()
    if row is None:
        raise NotFound("exception", exception_id)
    return row


async def list_exceptions(store: Store, req: pb.ListExceptionsRequest) -> pb.ListExceptionsResponse:
    q = select(exceptions)
    if req.status:
        q = q.where(exceptions.c.status
                    == pb.ExceptionStatus.Name(req.status).removeprefix("EXCEPTION_STATUS_"))
    if req.order_id:
        q = q.where(exceptions.c.order_id == req.order_id)
    if req.customer_id:
        q = q.where(exceptions.c.customer_id == req.customer_id)
    if req.kind:
        q = q.where(exceptions.c.kind == pb.ExceptionKind.Name(req.kind).removeprefix("EXCEPTION_KIND_"))
    if req.warehouse_id:
        q = q.where(exceptions.c.order_id.in_(select(orders.c.order_id).where(
            orders.c.warehouse_id == req.warehouse_id)))
    if req.HasField("raised_before"):
        q = q.where(exceptions.c.raised_at < req.raised_before.ToDatetime(tzinfo=UTC))
    async with store.read() as conn:
        rows, token = await keyset_page(conn, q, [exceptions.c.seq], req.page_size, req.page_token)
    return pb.ListExceptionsResponse(exceptions=[exception_pb(r) for r in rows], next_page_token=token)


async def get_exception(store: Store, exception_id: str) -> tuple[pb.OrderException, pb.Order]:
    if not exception_id:
        raise InvalidArgument([("exception_id", "required")])
    async with store.read() as conn:
        row = await _exception_row(conn, exception_id)
    return exception_pb(row), await get_order(store, row.order_id)


async def resolve_exception(store: Store, req: pb.ResolveExceptionRequest
                            ) -> tuple[pb.OrderException, pb.Order]:
    """A person's decision: recorded on the exception and in the order's timeline, then the order resumes."""
    problems = [(f, "required") for f in ("exception_id", "resolved_by") if not getattr(req, f)]
    if req.action not in ACTIONS:
        problems.append(("action", "required: " + ", ".join(ACTIONS.values())))
    if problems:
        raise InvalidArgument(problems)
    action = ACTIONS[req.action]
    async with store.transaction() as tx:
        exc = await _exception_row(tx.conn, req.exception_id)
        if exc.status != ExceptionStatus.OPEN:
            raise FailedPrecondition(f"exception {exc.exception_id} is already resolved "
                                     f"({exc.action} by {exc.resolved_by})", reason="EXCEPTION_RESOLVED",
                                     subject=exc.exception_id)
        row, lines = await _load(tx.conn, exc.order_id, lock=True)
        if row.status in workflow.TERMINAL or row.status == OrderStatus.CANCELLING:
            raise FailedPrecondition(f"order {row.order_id} is {row.status}", reason="ORDER_FINISHED",
                                     subject=row.order_id)
        order = workflow_order(row, lines, await _shipments(tx.conn, exc.order_id))
        try:
            decision = workflow.resolve(
                order, workflow.OpenException(exc.exception_id, exc.kind, _pairs(exc.lines), exc.wave),
                action, req.resolved_by, carrier_id=req.carrier_id, note=req.note)
        except workflow.InvalidAction as err:
            raise InvalidArgument([("action", str(err))]) from None
        await _apply(tx, row, decision)
    return await get_exception(store, req.exception_id)


POLICIES = {number: policy for policy, number in EXCEPTION_POLICY.items()}


async def set_exception_policy(store: Store, req: pb.SetExceptionPolicyRequest) -> pb.ExceptionPolicyRule:
    if req.customer_id and req.channel:
        raise InvalidArgument([("channel", "give a customer_id or a channel, not both")])
    scope, key = ("customer", req.customer_id) if req.customer_id else \
        ("channel", req.channel) if req.channel else ("default", "")
    if req.policy and req.policy not in POLICIES:
        raise InvalidArgument([("policy", "SHIP_PARTIAL, HOLD or CANCEL_LINES")])
    if not req.policy and scope == "default":
        raise InvalidArgument([("policy", "the default needs a policy")])
    async with store.transaction() as tx:
        await tx.conn.execute(delete(exception_policies).where(
            exception_policies.c.scope == scope, exception_policies.c.key == key))
        if req.policy:
            await tx.conn.execute(insert(exception_policies).values(
                scope=scope, key=key, policy=POLICIES[req.policy], updated_at=utcnow()))
    return pb.ExceptionPolicyRule(scope=scope, key=key, policy=req.policy)


async def list_exception_policies(store: Store, default: str) -> list[pb.ExceptionPolicyRule]:
    async with store.read() as conn:
        rows = (await conn.execute(select(exception_policies).order_by(
            exception_policies.c.scope, exception_policies.c.key))).all()
    rules = [pb.ExceptionPolicyRule(scope=r.scope, key=r.key, policy=_policy_pb(r.policy)) for r in rows]
    if not any(r.scope == "default" for r in rules):
        rules.insert(0, pb.ExceptionPolicyRule(scope="default", policy=_policy_pb(default)))
    return rules



# ---- a person's note on the timeline ----

async def add_timeline_note(store: Store, req: pb.AddTimelineNoteRequest) -> pb.TimelineEntry:
    """A note by a person on the order's timeline (e.g. a message of the order replayed by an
    operator), with the order's current status; nothing else changes."""
    if problems := note_violations("order_id", req.order_id, req.actor, req.step, req.note):
        raise InvalidArgument(problems)
    async with store.transaction() as tx:
        row = await ORDERS.add_note(tx, req.order_id, note_entry(req.actor, req.step, req.note))
    if row is None:
        raise NotFound("order", req.order_id)
    t = pb.TimelineEntry(source=row.source, step=row.step, detail=row.detail, trace_id=row.trace_id,
                         status=STATUS[row.status], actor=row.actor)
    t.time.FromDatetime(row.at)
    return t
