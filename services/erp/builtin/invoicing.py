"""The built-in ERP's invoices: exactly one per shipment, at the order's prices, never
more than is still open on the order."""

from __future__ import annotations

from sqlalchemy import func, select, update

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.bus import PermanentError
from services.mesh.store import Store, Tx, utcnow

from .. import domain
from ..store import customers, invoice_lines, invoices, sales_order_lines, sales_orders
from .masterdata import page
from .sales_orders import close_if_complete, line_rows, order_lines, order_row


def invoice_pb(row, lines) -> erp_pb2.Invoice:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    inv = erp_pb2.Invoice(
        invoice_id=row.invoice_id,
        order_id=row.order_id,
        shipment_id=row.shipment_id,
        customer_id=row.customer_id,
        lines=[erp_pb2.InvoiceLine(line_number=x.line_number, sku=x.sku, quantity=x.quantity,
                                   unit_price=money(x.unit_price_minor),
                                   amount=money(x.amount_minor)) for x in lines],
        total=money(row.total_minor),
    )
    inv.post_time.FromDatetime(row.posted_at)
    return inv


async def emit_invoice(tx: Tx, invoice_id: str) -> None:
    row = (await tx.conn.execute(select(invoices).where(invoices.c.invoice_id == invoice_id))).one()
    lines = (await tx.conn.execute(select(invoice_lines).where(
        invoice_lines.c.invoice_id == invoice_id).order_by(invoice_lines.c.line_number))).all()
    await tx.emit("erp.invoice.posted", msgs.InvoicePosted(invoice=invoice_pb(row, lines)),
                  key=row.order_id)


async def post_invoice(tx: Tx, cmd: msgs.PostInvoice) -> None:
    """Invoice a shipment at the order's prices: exactly one invoice per shipment."""
    if not cmd.order_id or not cmd.shipment_id:
        raise PermanentError("PostInvoice needs order_id and shipment_id")
    conn = tx.conn
    # Lock the order first: a concurrent duplicate waits here, then finds the invoice.
    order = await order_row(conn, cmd.order_id, lock=True)
    existing = (await conn.execute(
        select(invoices.c.invoice_id).where(invoices.c.shipment_id == cmd.shipment_id))).first()
    if existing is not None:
        await emit_invoice(tx, existing.invoice_id)
        return
    if problem := domain.invoiceable(order.status if order is not None else None, cmd.order_id):
        raise PermanentError(problem)
    try:
        lines = domain.invoice_lines(
            domain.open_lines(order_lines(await line_rows(conn, cmd.order_id))),
            [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.shipped_lines])
    except domain.InvoiceRefused as exc:
        raise PermanentError(f"shipment {cmd.shipment_id} of order {cmd.order_id}: {exc}") from None
    count = (await conn.execute(select(func.count()).select_from(invoices).where(
        invoices.c.order_id == cmd.order_id))).scalar_one()
    invoice_id, total = domain.invoice_number(cmd.order_id, count), domain.order_total(lines)
    await conn.execute(invoices.insert().values(
        invoice_id=invoice_id, order_id=cmd.order_id, shipment_id=cmd.shipment_id,
        customer_id=order.customer_id, currency_code=order.currency_code, total_minor=total,
        posted_at=utcnow()))
    await conn.execute(invoice_lines.insert(), [
        dict(invoice_id=invoice_id, line_number=x.line_number, sku=x.sku, quantity=x.quantity,
             unit_price_minor=x.unit_price, amount_minor=x.amount) for x in lines])
    for x in lines:
        await conn.execute(update(sales_order_lines).where(
            sales_order_lines.c.order_id == cmd.order_id, sales_order_lines.c.line_number == x.line_number)
            .values(invoiced_quantity=sales_order_lines.c.invoiced_quantity + x.quantity))
    # The invoiced amount moves from open orders to the open balance (at the order's prices).
    await conn.execute(
        update(customers).where(customers.c.customer_id == order.customer_id).values(
            open_balance_minor=customers.c.open_balance_minor + total,
            open_orders_minor=customers.c.open_orders_minor - total))
    await conn.execute(update(sales_orders).where(sales_orders.c.order_id == cmd.order_id)
                       .values(status_reason=f"invoiced as {invoice_id} (partly)"))
    await close_if_complete(tx, cmd.order_id, f"invoiced as {invoice_id}")
    await emit_invoice(tx, invoice_id)


class BuiltinInvoicing:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def post(self, tx: Tx, cmd: msgs.PostInvoice) -> None:
        await post_invoice(tx, cmd)

    async def list(self, page_size: int, page_token: str, order_id: str):
        where = [invoices.c.order_id == order_id] if order_id else []
        async with self.store.read() as conn:
            rows, token = await page(conn, invoices, ["invoice_id"], page_size, page_token, *where)
            lines = (await conn.execute(
                select(invoice_lines).where(invoice_lines.c.invoice_id.in_([r.invoice_id for r in rows]))
                .order_by(invoice_lines.c.line_number))).all()
        return [invoice_pb(r, [x for x in lines if x.invoice_id == r.invoice_id]) for r in rows], token
