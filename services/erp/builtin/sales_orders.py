"""The built-in ERP's sales orders: created accepted or refused on credit (atomically:
the customer's row lock serialises credit decisions), cancelled, lines cancelled."""

from __future__ import annotations

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.bus import PermanentError
from services.mesh.errors import NotFound
from services.mesh.store import Store, Tx, utcnow

from .. import contract, domain
from ..store import customers, sales_order_lines, sales_orders
from .masterdata import credit_of, customer_row

log = structlog.get_logger()


async def order_row(conn: AsyncConnection, order_id: str, *, lock: bool = False):
    query = select(sales_orders).where(sales_orders.c.order_id == order_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def line_rows(conn: AsyncConnection, order_id: str) -> list:
    return (await conn.execute(select(sales_order_lines).where(sales_order_lines.c.order_id == order_id)
                               .order_by(sales_order_lines.c.line_number))).all()


def order_lines(rows) -> list[domain.OrderLine]:
    return [domain.OrderLine(x.line_number, x.sku, x.quantity, x.unit_price_minor, x.invoiced_quantity,
                             x.cancelled_quantity) for x in rows]


async def sales_order_pb(conn: AsyncConnection, row) -> erp_pb2.SalesOrder:
    so = erp_pb2.SalesOrder(
        order_id=row.order_id,
        customer_id=row.customer_id,
        lines=[erp_pb2.SalesOrderLine(
            line_number=x.line_number, sku=x.sku, quantity=x.quantity,
            unit_price=Money(currency_code=row.currency_code, amount_minor=x.unit_price_minor),
            invoiced_quantity=x.invoiced_quantity, cancelled_quantity=x.cancelled_quantity)
            for x in await line_rows(conn, row.order_id)],
        total=Money(currency_code=row.currency_code, amount_minor=row.total_minor),
        status=contract.SALES_ORDER_STATUS[row.status],
        status_reason=row.status_reason,
    )
    so.create_time.FromDatetime(row.created_at)
    return so


async def emit_outcome(tx: Tx, order) -> None:
    """Say how a create command ended: rejected, or accepted (with the order as it is now)."""
    if order.status == "REJECTED":
        await tx.emit("erp.salesorder.rejected", msgs.SalesOrderRejected(
            order_id=order.order_id, reason_code=order.reason_code, reason=order.status_reason),
            key=order.order_id)
    else:
        await tx.emit("erp.salesorder.accepted", msgs.SalesOrderAccepted(
            sales_order=await sales_order_pb(tx.conn, order)), key=order.order_id)


async def close_if_complete(tx: Tx, order_id: str, reason: str) -> None:
    """INVOICED once every line is invoiced or cancelled (CANCELLED when nothing was invoiced)."""
    if status := domain.closed_status(order_lines(await line_rows(tx.conn, order_id))):
        await tx.conn.execute(update(sales_orders).where(sales_orders.c.order_id == order_id)
                              .values(status=status, status_reason=reason))


async def create_sales_order(tx: Tx, so: erp_pb2.SalesOrder) -> None:
    """Record the order, accepted if it fits the customer's credit (idempotent on order_id)."""
    if not so.order_id:
        raise PermanentError("CreateSalesOrder without order_id")
    conn = tx.conn
    # The customer's row lock serialises credit decisions (a no-op on SQLite,
    # whose single connection already does).
    customer = await customer_row(conn, so.customer_id, lock=True)
    if (existing := await order_row(conn, so.order_id)) is not None:
        await emit_outcome(tx, existing)
        return
    lines = contract.sales_order_lines(so)
    currencies = {x.unit_price.currency_code for x in so.lines}
    decision = domain.decide_sales_order(credit_of(customer) if customer else None, lines, currencies,
                                         so.customer_id)
    await conn.execute(sales_orders.insert().values(
        order_id=so.order_id, customer_id=so.customer_id,
        currency_code=customer.currency_code if customer else min(currencies, default=""),
        total_minor=decision.total, status="ACCEPTED" if decision.accepted else "REJECTED",
        status_reason=decision.reason, reason_code=decision.reason_code, created_at=utcnow()))
    if not domain.order_line_problem(lines):
        await conn.execute(sales_order_lines.insert(), [
            dict(order_id=so.order_id, line_number=x.line_number, sku=x.sku,
                 quantity=x.quantity, unit_price_minor=x.unit_price) for x in lines])
    if decision.accepted:
        await conn.execute(update(customers).where(customers.c.customer_id == so.customer_id)
                           .values(open_orders_minor=customers.c.open_orders_minor + decision.total))
    await emit_outcome(tx, await order_row(conn, so.order_id))


async def cancel_sales_order(tx: Tx, cmd: msgs.CancelSalesOrder) -> None:
    """Cancel an accepted order and release the credit it still holds; any repeat gets the same answer.

    What was already invoiced (an earlier partial shipment) stays invoiced.
    """
    if not cmd.order_id:
        raise PermanentError("CancelSalesOrder without order_id")
    order = await order_row(tx.conn, cmd.order_id, lock=True)
    decision = domain.decide_cancel(order.status if order is not None else None)
    if decision.ignore:
        log.warning("salesorder.cancel_ignored", order_id=cmd.order_id, status=order.status)
        return
    reason = order.status_reason if order is not None else "no such sales order"
    if decision.cancel:
        reason = cmd.reason
        held = domain.open_amount(order_lines(await line_rows(tx.conn, cmd.order_id)))
        await tx.conn.execute(update(sales_orders).where(sales_orders.c.order_id == cmd.order_id)
                              .values(status="CANCELLED", status_reason=reason))
        await tx.conn.execute(
            update(customers).where(customers.c.customer_id == order.customer_id)
            .values(open_orders_minor=customers.c.open_orders_minor - held))
    await tx.emit("erp.salesorder.cancelled",
                  msgs.SalesOrderCancelled(order_id=cmd.order_id, reason=reason),
                  key=cmd.order_id)


async def cancel_sales_order_lines(tx: Tx, cmd: msgs.CancelSalesOrderLines) -> None:
    """Cancel quantities of open lines (a warehouse exception decision) and release their credit.

    Never more than is still open on a line; the order closes when nothing is open.
    """
    if not cmd.order_id:
        raise PermanentError("CancelSalesOrderLines without order_id")
    order = await order_row(tx.conn, cmd.order_id, lock=True)
    if order is None or order.status != "ACCEPTED":
        raise PermanentError(f"cannot cancel lines of sales order {cmd.order_id!r}: "
                             + (order.status if order else "unknown"))
    try:
        decision = domain.cancel_lines(
            order_lines(await line_rows(tx.conn, cmd.order_id)),
            [domain.Line(c.line_number, c.sku, c.quantity) for c in cmd.lines])
    except domain.LinesRefused as exc:
        raise PermanentError(f"{exc}: sales order {cmd.order_id}") from None
    for line_number, qty in decision.cancelled.items():
        await tx.conn.execute(update(sales_order_lines).where(
            sales_order_lines.c.order_id == cmd.order_id, sales_order_lines.c.line_number == line_number)
            .values(cancelled_quantity=sales_order_lines.c.cancelled_quantity + qty))
    await tx.conn.execute(update(customers).where(customers.c.customer_id == order.customer_id)
                          .values(open_orders_minor=customers.c.open_orders_minor - decision.released))
    await close_if_complete(tx, cmd.order_id, f"closed: {cmd.reason}")
    await tx.emit("erp.salesorder.lines_cancelled", msgs.SalesOrderLinesCancelled(
        sales_order=await sales_order_pb(tx.conn, await order_row(tx.conn, cmd.order_id)),
        reason=cmd.reason), key=cmd.order_id)


class BuiltinSalesOrders:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, tx: Tx, sales_order: erp_pb2.SalesOrder) -> None:
        await create_sales_order(tx, sales_order)

    async def cancel(self, tx: Tx, cmd: msgs.CancelSalesOrder) -> None:
        await cancel_sales_order(tx, cmd)

    async def cancel_lines(self, tx: Tx, cmd: msgs.CancelSalesOrderLines) -> None:
        await cancel_sales_order_lines(tx, cmd)

    async def get(self, order_id: str) -> erp_pb2.SalesOrder:
        contract.require(order_id=order_id)
        async with self.store.read() as conn:
            row = await order_row(conn, order_id)
            if row is None:
                raise NotFound("sales order", order_id)
            return await sales_order_pb(conn, row)
