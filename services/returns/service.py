"""Returns use cases: create, read, list, cancel, apply a system event, expire.

Creation checks the order over gRPC (order-to-ship: it must be shipped or
invoiced) and what may still be returned of each line, then records the
return, its first timeline entry and the ERP authorisation command in one
transaction. Everything after that is driven by events (``advance``) and by
the durable receive-window timer (``expire_due``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
from google.protobuf.message import Message
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Money
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import messages_pb2 as events
from crossdock.returns.v1 import returns_pb2 as pb
from services.mesh import telemetry
from services.mesh.app import Clients
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.process import (
    Entry,
    Instances,
    note_entry,
    note_violations,
    proto_numbers,
    request_fingerprint,
)
from services.mesh.store import Store, Tx, insert_ignore, utcnow

from . import domain, workflow
from .store import order_locks, return_lines, returns, timeline
from .workflow import ReturnReason, ReturnStatus

MAX_LINES = 200
MAX_WINDOW_S = 366 * 24 * 3600.0
RETURNABLE_ORDER_STATUSES = {ots.ORDER_STATUS_SHIPPED, ots.ORDER_STATUS_INVOICED}

# The contract's number of each name of the workflow (a name it lacks fails at import).
STATUS = proto_numbers(ReturnStatus, pb.ReturnStatus, "RETURN_STATUS_")
REASON = proto_numbers(ReturnReason, pb.ReturnReason, "RETURN_REASON_")


def _status_changed(return_id: str, from_status: str, to_status: str, reason: str) -> tuple[str, Message]:
    return "returns.return.status_changed", events.ReturnStatusChanged(
        return_id=return_id, from_status=STATUS[from_status], to_status=STATUS[to_status], reason=reason)


# Returns, their request ids, their timeline and their versioned changes of state.
RETURNS = Instances("return", returns, timeline, "return_id", _status_changed)


def reason_name(value: int) -> ReturnReason:
    return ReturnReason(pb.ReturnReason.Name(value).removeprefix("RETURN_REASON_"))


# ---- validation of a request (shape only; the order is checked by a lookup) ----

def validate_request(req: pb.CreateReturnRequest) -> None:
    v: list[tuple[str, str]] = []
    if len(req.request_id) > 128:
        v.append(("request_id", "at most 128 characters"))
    if not req.order_id:
        v.append(("order_id", "required"))
    if not req.lines:
        v.append(("lines", "at least one line is required"))
    if len(req.lines) > MAX_LINES:
        v.append(("lines", f"at most {MAX_LINES} lines"))
    for i, line in enumerate(req.lines):
        if not line.line_number and not line.sku:
            v.append((f"lines[{i}]", "line_number or sku is required"))
        if line.quantity <= 0:
            v.append((f"lines[{i}].quantity", "must be positive"))
        if line.reason == pb.RETURN_REASON_UNSPECIFIED or line.reason not in pb.ReturnReason.values():
            v.append((f"lines[{i}].reason", "a return reason is required"))
        if len(line.note) > 500:
            v.append((f"lines[{i}].note", "at most 500 characters"))
        for f in ("unit_price", "credit"):
            if line.HasField(f):
                v.append((f"lines[{i}].{f}", "set by the service"))
        if (line.received_quantity or line.restocked_quantity or line.scrapped_quantity
                or line.refused_quantity):
            v.append((f"lines[{i}]", "received and disposition quantities are set by the warehouse"))
    if req.HasField("receive_within"):
        seconds = req.receive_within.ToTimedelta().total_seconds()
        if not 0 < seconds <= MAX_WINDOW_S:
            v.append(("receive_within", "must be positive and at most 366 days"))
    if v:
        raise InvalidArgument(v)


# ---- conversions ----

def return_pb(row, lines=(), entries=()) -> pb.CustomerReturn:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    r = pb.CustomerReturn(
        return_id=row.return_id, request_id=row.request_id, order_id=row.order_id,
        customer_id=row.customer_id, warehouse_id=row.warehouse_id, status=STATUS[row.status],
        status_reason=row.status_reason, rma_number=row.rma_number,
        expected_credit=money(row.expected_credit_minor), credited=money(row.credited_minor),
        credit_memo_id=row.credit_memo_id, trace_id=row.trace_id,
        lines=[pb.ReturnLine(
            line_number=x.line_number, sku=x.sku, quantity=x.quantity,
            reason=REASON[x.reason], note=x.note,
            unit_price=money(x.unit_price_minor), received_quantity=x.received_quantity,
            restocked_quantity=x.restocked_quantity, scrapped_quantity=x.scrapped_quantity,
            refused_quantity=x.refused_quantity, credit=money(x.credit_minor)) for x in lines],
    )
    if row.expires_at:
        r.expire_time.FromDatetime(row.expires_at)
    r.create_time.FromDatetime(row.created_at)
    r.update_time.FromDatetime(row.updated_at)
    for e in entries:
        t = r.timeline.add(source=e.source, step=e.step, detail=e.detail, trace_id=e.trace_id,
                           status=STATUS[e.status], actor=e.actor)
        t.time.FromDatetime(e.at)
    return r


def workflow_return(row, lines) -> workflow.Return:
    return workflow.Return(
        return_id=row.return_id, order_id=row.order_id, customer_id=row.customer_id,
        warehouse_id=row.warehouse_id, status=ReturnStatus(row.status), currency_code=row.currency_code,
        rma_number=row.rma_number, receive_within_s=row.receive_within_s,
        lines=[workflow.Line(x.line_number, x.sku, x.quantity, ReturnReason(x.reason), x.note,
                             x.unit_price_minor, x.received_quantity, x.restocked_quantity,
                             x.scrapped_quantity, x.refused_quantity) for x in lines])


# ---- reads ----

async def _load(conn: AsyncConnection, return_id: str, *, lock: bool = False):
    q = select(returns).where(returns.c.return_id == return_id)
    row = (await conn.execute(q.with_for_update() if lock else q)).first()
    if row is None:
        return None, []
    lines = (await conn.execute(select(return_lines).where(return_lines.c.return_id == return_id)
                                .order_by(return_lines.c.line_number))).all()
    return row, lines


async def get_return(store: Store, return_id: str) -> pb.CustomerReturn:
    async with store.read() as conn:
        row, lines = await _load(conn, return_id)
        if row is None:
            raise NotFound("return", return_id)
        entries = await RETURNS.timeline_of(conn, return_id)
    return return_pb(row, lines, entries)


async def list_returns(store: Store, req: pb.ListReturnsRequest) -> pb.ListReturnsResponse:
    q = select(returns)
    if req.order_id:
        q = q.where(returns.c.order_id == req.order_id)
    if req.customer_id:
        q = q.where(returns.c.customer_id == req.customer_id)
    if req.status:
        q = q.where(returns.c.status == pb.ReturnStatus.Name(req.status).removeprefix("RETURN_STATUS_"))
    async with store.read() as conn:
        rows, token = await keyset_page(conn, q, [returns.c.seq], req.page_size, req.page_token)
        lines = (await conn.execute(select(return_lines).where(
            return_lines.c.return_id.in_([r.return_id for r in rows]))
            .order_by(return_lines.c.line_number))).all()
    return pb.ListReturnsResponse(
        returns=[return_pb(r, [x for x in lines if x.return_id == r.return_id]) for r in rows],
        next_page_token=token)


# ---- creation ----

async def _shipped_order(clients: Clients, order_id: str) -> ots.Order:
    try:
        order = (await clients.stub("ordertoship").GetOrder(ots.GetOrderRequest(order_id=order_id))).order
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound("order", order_id) from None
        raise
    if order.status not in RETURNABLE_ORDER_STATUSES:
        raise FailedPrecondition(
            f"order {order_id} is {ots.OrderStatus.Name(order.status).removeprefix('ORDER_STATUS_')}: "
            "only shipped orders can be returned", reason="ORDER_NOT_SHIPPED", subject=f"orders/{order_id}")
    return order


async def _held_by_others(conn: AsyncConnection, order_id: str) -> list[domain.HeldLine]:
    rows = (await conn.execute(
        select(returns.c.status, return_lines.c.line_number, return_lines.c.quantity,
               return_lines.c.received_quantity)
        .join(return_lines, return_lines.c.return_id == returns.c.return_id)
        .where(returns.c.order_id == order_id))).all()
    return [domain.HeldLine(r.status, r.line_number, r.quantity, r.received_quantity) for r in rows]


def _resolve(order: ots.Order, req: pb.CreateReturnRequest,
             held: list[domain.HeldLine]) -> list[domain.OrderLine]:
    ordered = [domain.OrderLine(x.line_number, x.sku, x.quantity) for x in order.lines]
    left = domain.returnable(ordered, held)
    matched, problems = domain.match_lines(
        ordered, [domain.Requested(x.line_number, x.sku, x.quantity) for x in req.lines], left)
    if problems:
        raise FailedPrecondition(
            "cannot return these quantities: " + "; ".join(f"{f}: {p}" for f, p in problems),
            reason="QUANTITY_NOT_RETURNABLE", subject=f"orders/{order.order_id}")
    return matched


async def create_return(store: Store, clients: Clients, req: pb.CreateReturnRequest, *,
                        default_window_s: float) -> pb.CustomerReturn:
    validate_request(req)
    request_id = req.request_id or str(uuid.uuid4())
    fingerprint = request_fingerprint(req)
    if existing := await _by_request_id(store, request_id, fingerprint):
        return existing
    order = await _shipped_order(clients, req.order_id)
    window = (req.receive_within.ToTimedelta().total_seconds() if req.HasField("receive_within")
              else default_window_s)
    return_id = f"RET-{uuid.uuid4().hex[:12].upper()}"
    now = utcnow()
    try:
        async with store.transaction() as tx:
            # Serialise the returns of one order (a row lock on PostgreSQL; SQLite
            # has one writer anyway), then check the quantities against them.
            await insert_ignore(tx.conn, order_locks, {"order_id": req.order_id})
            await tx.conn.execute(select(order_locks).where(
                order_locks.c.order_id == req.order_id).with_for_update())
            if await RETURNS.by_request_id(tx.conn, request_id, fingerprint):
                # A concurrent duplicate of this request got here first.
                raise _Duplicate
            matched = _resolve(order, req, await _held_by_others(tx.conn, req.order_id))
            await tx.conn.execute(insert(returns).values(
                return_id=return_id, request_id=request_id, request_hash=fingerprint,
                order_id=order.order_id, customer_id=order.customer_id,
                warehouse_id=order.warehouse_id, currency_code=order.total.currency_code,
                status=ReturnStatus.REQUESTED, status_reason="", receive_within_s=window,
                # Also bounds how long authorisation may take.
                expires_at=now + timedelta(seconds=window),
                trace_id=telemetry.current_trace_id(), version=1, created_at=now, updated_at=now))
            await tx.conn.execute(insert(return_lines), [
                dict(return_id=return_id, line_number=m.line_number, sku=m.sku, quantity=m.quantity,
                     reason=reason_name(x.reason), note=x.note)
                for x, m in zip(req.lines, matched, strict=True)])
            row, lines = await _load(tx.conn, return_id)
            units = sum(x.quantity for x in lines)
            await RETURNS.append(tx, return_id, ReturnStatus.REQUESTED, Entry(
                "returns", "requested",
                f"{len(lines)} line(s), {units} unit(s) of order {order.order_id}; reasons "
                + ", ".join(sorted({x.reason for x in lines}))))
            await tx.emit("returns.return.created",
                          events.ReturnCreated(customer_return=return_pb(row, lines)), key=return_id)
            subject, command = workflow.authorize(workflow_return(row, lines))
            await tx.emit(subject, command, key=return_id)
            await RETURNS.append(tx, return_id, ReturnStatus.REQUESTED, Entry(
                "returns", "authorization.requested", "RMA requested from ERP"))
    except (IntegrityError, _Duplicate):
        # The same request_id was sent concurrently and won the race.
        if existing := await _by_request_id(store, request_id, fingerprint):
            return existing
        raise
    return await get_return(store, return_id)


class _Duplicate(Exception):
    """The request_id was recorded by a concurrent request meanwhile."""


async def _by_request_id(store: Store, request_id: str, fingerprint: str) -> pb.CustomerReturn | None:
    async with store.read() as conn:
        return_id = await RETURNS.by_request_id(conn, request_id, fingerprint)
    return await get_return(store, return_id) if return_id else None


# ---- changes of state ----

async def _apply(tx: Tx, row, decision: workflow.Decision) -> None:
    """The decision about the return ``row`` was read from: its state, timer, timeline and
    commands (the toolkit's versioned apply), then its lines."""
    timer = {}
    if decision.restart_timer:
        timer["expires_at"] = utcnow() + timedelta(seconds=row.receive_within_s)
    elif decision.clear_timer:
        timer["expires_at"] = None
    await RETURNS.apply(tx, row, decision, **timer)
    for line_number, line_values in decision.lines.items():
        await tx.conn.execute(update(return_lines).where(
            return_lines.c.return_id == row.return_id, return_lines.c.line_number == line_number)
            .values(**line_values))


async def advance(tx: Tx, subject: str, body: Message) -> bool:
    """Apply one system event to its return; False when it names no return of ours."""
    return_id = workflow.return_id_of(body)
    row, lines = await _load(tx.conn, return_id, lock=True)
    if row is None:
        return False
    decision = workflow.react(workflow_return(row, lines), subject, body)
    if decision.changes_anything:
        await _apply(tx, row, decision)
    return True


async def cancel_return(store: Store, return_id: str, reason: str) -> pb.CustomerReturn:
    async with store.transaction() as tx:
        row, lines = await _load(tx.conn, return_id, lock=True)
        if row is None:
            raise NotFound("return", return_id)
        try:
            decision = workflow.cancel(workflow_return(row, lines), reason)
        except workflow.NotCancellable as exc:
            raise FailedPrecondition(str(exc), reason="RETURN_NOT_CANCELLABLE",
                                     subject=f"returns/{return_id}") from None
        if decision.changes_anything:
            await _apply(tx, row, decision)
    return await get_return(store, return_id)


async def expire_due(store: Store, limit: int = 100) -> int:
    """Fire the receive-window timers that are due; returns how many fired."""
    due_query = select(returns.c.return_id).where(
        returns.c.status.in_(sorted(workflow.TIMED)), returns.c.expires_at <= utcnow())
    async with store.read() as conn:
        due = (await conn.execute(due_query.order_by(returns.c.expires_at).limit(limit))).scalars().all()
    fired = 0
    for return_id in due:
        async with store.transaction() as tx:
            # Still due? (an authorisation may have restarted the timer meanwhile)
            if (await tx.conn.execute(due_query.where(returns.c.return_id == return_id))).first() is None:
                continue
            row, lines = await _load(tx.conn, return_id, lock=True)
            decision = workflow.expire(workflow_return(row, lines))
            if decision.changes_anything:
                await _apply(tx, row, decision)
                fired += 1
    return fired


async def add_timeline_note(store: Store, req: pb.AddTimelineNoteRequest) -> pb.TimelineEntry:
    """A note by a person on the return's timeline (e.g. a message of the return replayed by an
    operator), with the return's current status; nothing else changes."""
    if problems := note_violations("return_id", req.return_id, req.actor, req.step, req.note):
        raise InvalidArgument(problems)
    async with store.transaction() as tx:
        row = await RETURNS.add_note(tx, req.return_id, note_entry(req.actor, req.step, req.note))
    if row is None:
        raise NotFound("return", req.return_id)
    t = pb.TimelineEntry(source=row.source, step=row.step, detail=row.detail, trace_id=row.trace_id,
                         status=STATUS[row.status], actor=row.actor)
    t.time.FromDatetime(row.at)
    return t
