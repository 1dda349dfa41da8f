"""The built-in ERP's return authorisations (RMAs) and credit memos: an RMA is priced as
invoiced and never holds more than was invoiced less what other RMAs hold; exactly one
credit memo per return, for the accepted quantities."""

from __future__ import annotations

from collections import Counter

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.bus import PermanentError
from services.mesh.errors import NotFound
from services.mesh.store import Store, Tx, utcnow

from .. import contract, domain
from ..store import (
    credit_memo_lines,
    credit_memos,
    customers,
    invoice_lines,
    invoices,
    return_authorization_lines,
    return_authorizations,
)
from .masterdata import page
from .sales_orders import order_row

log = structlog.get_logger()


class NotInvoicedYet(Exception):
    """The order is shipped but its invoice is not posted yet: retried with back-off."""


async def rma_row(conn: AsyncConnection, return_id: str, *, lock: bool = False):
    query = select(return_authorizations).where(return_authorizations.c.return_id == return_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def rma_lines(conn: AsyncConnection, return_id: str) -> list:
    return (await conn.execute(select(return_authorization_lines).where(
        return_authorization_lines.c.return_id == return_id)
        .order_by(return_authorization_lines.c.line_number))).all()


async def rma_pb(conn: AsyncConnection, row) -> erp_pb2.ReturnAuthorization:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    rma = erp_pb2.ReturnAuthorization(
        rma_number=row.rma_number or "", return_id=row.return_id, order_id=row.order_id,
        customer_id=row.customer_id,
        lines=[erp_pb2.ReturnAuthorizationLine(line_number=x.line_number, sku=x.sku,
                                               quantity=x.quantity, unit_price=money(x.unit_price_minor))
               for x in await rma_lines(conn, row.return_id)],
        expected_credit=money(row.expected_credit_minor), status=contract.RMA_STATUS[row.status],
        status_reason=row.status_reason, credit_memo_id=row.credit_memo_id)
    rma.create_time.FromDatetime(row.created_at)
    rma.update_time.FromDatetime(row.updated_at)
    return rma


async def emit_rma_outcome(tx: Tx, row) -> None:
    """Say (again) how an authorisation request ended."""
    if row.status == "REFUSED":
        await tx.emit("erp.return.refused", msgs.ReturnAuthorizationRefused(
            return_id=row.return_id, order_id=row.order_id, reason_code=row.reason_code,
            reason=row.status_reason), key=row.return_id)
    elif row.status == "CANCELLED":
        await tx.emit("erp.return.cancelled", msgs.ReturnAuthorizationCancelled(
            return_id=row.return_id, rma_number=row.rma_number or "", reason=row.status_reason),
            key=row.return_id)
    else:
        await tx.emit("erp.return.authorized", msgs.ReturnAuthorized(
            authorization=await rma_pb(tx.conn, row)), key=row.return_id)


async def invoiced_lines(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    rows = (await conn.execute(
        select(invoice_lines).join(invoices, invoices.c.invoice_id == invoice_lines.c.invoice_id)
        .where(invoices.c.order_id == order_id).order_by(invoice_lines.c.line_number))).all()
    return [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price_minor) for x in rows]


async def credited_lines(conn: AsyncConnection, order_id: str) -> Counter[int]:
    rows = (await conn.execute(
        select(credit_memo_lines.c.line_number, func.sum(credit_memo_lines.c.quantity).label("qty"))
        .join(credit_memos, credit_memos.c.credit_memo_id == credit_memo_lines.c.credit_memo_id)
        .where(credit_memos.c.order_id == order_id).group_by(credit_memo_lines.c.line_number))).all()
    return Counter({r.line_number: int(r.qty) for r in rows})


async def held_lines(conn: AsyncConnection, order_id: str) -> Counter[int]:
    """Per order line: authorised in open RMAs plus credited by credit memos."""
    rows = (await conn.execute(
        select(return_authorization_lines.c.line_number,
               func.sum(return_authorization_lines.c.quantity).label("qty"))
        .join(return_authorizations,
              return_authorizations.c.return_id == return_authorization_lines.c.return_id)
        .where(return_authorizations.c.order_id == order_id,
               return_authorizations.c.status == "AUTHORIZED")
        .group_by(return_authorization_lines.c.line_number))).all()
    held = Counter({r.line_number: int(r.qty) for r in rows})
    held.update(await credited_lines(conn, order_id))
    return held


async def authorize_return(tx: Tx, cmd: msgs.AuthorizeReturn) -> None:
    """Issue an RMA for lines of an invoiced order, priced as invoiced (idempotent on return_id).

    Refused when the order is not invoiced, a line was not invoiced, or a
    quantity exceeds what was invoiced less what other RMAs hold.
    """
    if not cmd.return_id or not cmd.order_id:
        raise PermanentError("AuthorizeReturn needs return_id and order_id")
    conn, now = tx.conn, utcnow()
    # The order's row lock serialises the RMAs and credit memos of one order.
    order = await order_row(conn, cmd.order_id, lock=True)
    if (existing := await rma_row(conn, cmd.return_id, lock=True)) is not None:
        await emit_rma_outcome(tx, existing)
        return
    gate = domain.return_gate(order.status if order is not None else None,
                              order.customer_id if order is not None else "", cmd.order_id, cmd.customer_id)
    if gate.wait:
        raise NotInvoicedYet(gate.reason)
    code, reason, lines = gate.code, gate.reason, []
    if not code:
        requested = [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.lines]
        try:
            lines = domain.authorize_return(await invoiced_lines(conn, cmd.order_id),
                                            await held_lines(conn, cmd.order_id), requested)
        except domain.ReturnRefused as exc:
            code, reason = exc.code, exc.reason
    rma_number = None
    if not code:
        count = (await conn.execute(select(func.count()).select_from(return_authorizations).where(
            return_authorizations.c.order_id == cmd.order_id,
            return_authorizations.c.rma_number.is_not(None)))).scalar_one()
        rma_number = domain.rma_number(cmd.order_id, count)
    await conn.execute(return_authorizations.insert().values(
        return_id=cmd.return_id, rma_number=rma_number, order_id=cmd.order_id,
        customer_id=order.customer_id if order is not None else cmd.customer_id,
        currency_code=order.currency_code if order is not None else "",
        expected_credit_minor=domain.order_total(lines),
        status="REFUSED" if code else "AUTHORIZED", reason_code=code,
        status_reason=reason or f"authorised as {rma_number}", credit_memo_id="",
        created_at=now, updated_at=now))
    if lines:
        await conn.execute(return_authorization_lines.insert(), [
            dict(return_id=cmd.return_id, line_number=x.line_number, sku=x.sku,
                 quantity=x.quantity, unit_price_minor=x.unit_price) for x in lines])
    await emit_rma_outcome(tx, await rma_row(conn, cmd.return_id))


async def cancel_return_authorization(tx: Tx, cmd: msgs.CancelReturnAuthorization) -> None:
    """Close an RMA without credit; a cancel that comes first leaves a tombstone (idempotent)."""
    if not cmd.return_id:
        raise PermanentError("CancelReturnAuthorization needs return_id")
    conn, now = tx.conn, utcnow()
    row = await rma_row(conn, cmd.return_id, lock=True)
    reason = cmd.reason or "cancelled"
    if row is None:
        await conn.execute(return_authorizations.insert().values(
            return_id=cmd.return_id, rma_number=None, status="CANCELLED",
            status_reason=reason, credit_memo_id="", created_at=now, updated_at=now))
    elif row.status == "CREDITED":
        log.warning("rma.cancel_ignored", return_id=cmd.return_id, status=row.status)
        return
    elif row.status == "AUTHORIZED":
        await conn.execute(update(return_authorizations)
                           .where(return_authorizations.c.return_id == cmd.return_id)
                           .values(status="CANCELLED", status_reason=reason, updated_at=now))
    row = await rma_row(conn, cmd.return_id)
    await tx.emit("erp.return.cancelled", msgs.ReturnAuthorizationCancelled(
        return_id=row.return_id, rma_number=row.rma_number or "", reason=row.status_reason),
        key=row.return_id)


def credit_memo_pb(row, lines) -> erp_pb2.CreditMemo:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    memo = erp_pb2.CreditMemo(
        credit_memo_id=row.credit_memo_id, rma_number=row.rma_number, return_id=row.return_id,
        order_id=row.order_id, customer_id=row.customer_id,
        lines=[erp_pb2.CreditMemoLine(line_number=x.line_number, sku=x.sku, quantity=x.quantity,
                                      unit_price=money(x.unit_price_minor),
                                      amount=money(x.amount_minor)) for x in lines],
        total=money(row.total_minor))
    memo.post_time.FromDatetime(row.posted_at)
    return memo


async def emit_credit_memo(tx: Tx, credit_memo_id: str) -> None:
    row = (await tx.conn.execute(select(credit_memos).where(
        credit_memos.c.credit_memo_id == credit_memo_id))).one()
    lines = (await tx.conn.execute(select(credit_memo_lines).where(
        credit_memo_lines.c.credit_memo_id == credit_memo_id)
        .order_by(credit_memo_lines.c.line_number))).all()
    await tx.emit("erp.creditmemo.posted", msgs.CreditMemoPosted(credit_memo=credit_memo_pb(row, lines)),
                  key=row.return_id)


async def post_credit_memo(tx: Tx, cmd: msgs.PostCreditMemo) -> None:
    """Credit the accepted quantities at the invoiced prices: exactly one memo per return,
    never more than invoiced; the customer's open balance drops by its total."""
    if not cmd.return_id:
        raise PermanentError("PostCreditMemo needs return_id")
    conn = tx.conn
    rma = await rma_row(conn, cmd.return_id)
    if rma is not None and rma.order_id:
        await order_row(conn, rma.order_id, lock=True)  # serialise with the order's other credits
    rma = await rma_row(conn, cmd.return_id, lock=True)
    existing = (await conn.execute(select(credit_memos.c.credit_memo_id).where(
        credit_memos.c.return_id == cmd.return_id))).first()
    if existing is not None:
        await emit_credit_memo(tx, existing.credit_memo_id)
        return

    async def refuse(code: str, reason: str) -> None:
        log.warning("creditmemo.refused", return_id=cmd.return_id, code=code, reason=reason)
        await tx.emit("erp.creditmemo.refused", msgs.CreditMemoRefused(
            return_id=cmd.return_id, rma_number=cmd.rma_number, reason_code=code, reason=reason),
            key=cmd.return_id)

    if rma is None or rma.status != "AUTHORIZED":
        await refuse("RMA_NOT_AUTHORIZED", f"return {cmd.return_id} has no open RMA"
                     + (f" ({rma.status})" if rma is not None else ""))
        return
    authorized = [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price_minor)
                  for x in await rma_lines(conn, cmd.return_id)]
    try:
        lines = domain.credit_memo_lines(
            authorized, [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.accepted_lines],
            await invoiced_lines(conn, rma.order_id), await credited_lines(conn, rma.order_id))
    except domain.ReturnRefused as exc:
        await refuse(exc.code, exc.reason)
        return
    memo_id, total, now = domain.credit_memo_number(rma.rma_number), domain.order_total(lines), utcnow()
    await conn.execute(credit_memos.insert().values(
        credit_memo_id=memo_id, return_id=rma.return_id, rma_number=rma.rma_number,
        order_id=rma.order_id, customer_id=rma.customer_id, currency_code=rma.currency_code,
        total_minor=total, posted_at=now))
    await conn.execute(credit_memo_lines.insert(), [
        dict(credit_memo_id=memo_id, line_number=x.line_number, sku=x.sku, quantity=x.quantity,
             unit_price_minor=x.unit_price, amount_minor=x.amount) for x in lines])
    await conn.execute(update(customers).where(customers.c.customer_id == rma.customer_id).values(
        open_balance_minor=customers.c.open_balance_minor - total))
    await conn.execute(update(return_authorizations)
                       .where(return_authorizations.c.return_id == rma.return_id)
                       .values(status="CREDITED", credit_memo_id=memo_id, updated_at=now,
                               status_reason=f"credited by {memo_id}"))
    await emit_credit_memo(tx, memo_id)


class BuiltinReturns:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def authorize(self, tx: Tx, cmd: msgs.AuthorizeReturn) -> None:
        await authorize_return(tx, cmd)

    async def cancel(self, tx: Tx, cmd: msgs.CancelReturnAuthorization) -> None:
        await cancel_return_authorization(tx, cmd)

    async def post_credit_memo(self, tx: Tx, cmd: msgs.PostCreditMemo) -> None:
        await post_credit_memo(tx, cmd)

    async def get_authorization(self, rma_number: str) -> erp_pb2.ReturnAuthorization:
        contract.require(rma_number=rma_number)
        async with self.store.read() as conn:
            row = (await conn.execute(select(return_authorizations).where(
                return_authorizations.c.rma_number == rma_number))).first()
            if row is None:
                raise NotFound("return authorization", rma_number)
            return await rma_pb(conn, row)

    async def list_credit_memos(self, page_size: int, page_token: str, order_id: str, customer_id: str):
        where = [credit_memos.c.order_id == order_id] if order_id else []
        if customer_id:
            where.append(credit_memos.c.customer_id == customer_id)
        async with self.store.read() as conn:
            rows, token = await page(conn, credit_memos, ["credit_memo_id"], page_size, page_token, *where)
            lines = (await conn.execute(
                select(credit_memo_lines).where(credit_memo_lines.c.credit_memo_id.in_(
                    [r.credit_memo_id for r in rows])).order_by(credit_memo_lines.c.line_number))).all()
        return [credit_memo_pb(r, [x for x in lines if x.credit_memo_id == r.credit_memo_id])
                for r in rows], token
