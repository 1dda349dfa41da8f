"""ERP use cases: each takes a store transaction (or connection) and does one thing."""

from __future__ import annotations

import re
from collections import Counter

import structlog
from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.mesh.bus import PermanentError
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain
from .store import (
    credit_memo_lines,
    credit_memos,
    customers,
    invoice_lines,
    invoices,
    items,
    ledger_entries,
    ledger_positions,
    return_authorization_lines,
    return_authorizations,
    sales_order_lines,
    sales_orders,
)

log = structlog.get_logger()

CURRENCY = re.compile(r"[A-Z]{3}")
STATUS = {
    "ACCEPTED": erp_pb2.SALES_ORDER_STATUS_ACCEPTED,
    "REJECTED": erp_pb2.SALES_ORDER_STATUS_REJECTED,
    "CANCELLED": erp_pb2.SALES_ORDER_STATUS_CANCELLED,
    "INVOICED": erp_pb2.SALES_ORDER_STATUS_INVOICED,
}


def _require(**fields: str) -> None:
    if problems := [(name, "required") for name, value in fields.items() if not value]:
        raise InvalidArgument(problems)


# ---- customers ----

def customer_pb(row) -> erp_pb2.Customer:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    return erp_pb2.Customer(
        customer_id=row.customer_id,
        name=row.name,
        currency_code=row.currency_code,
        credit_limit=money(row.credit_limit_minor),
        open_balance=money(row.open_balance_minor),
        open_orders=money(row.open_orders_minor),
        ship_to=Address(name=row.ship_to_name, line1=row.ship_to_line1, city=row.ship_to_city,
                        postal_code=row.ship_to_postal_code,
                        country_code=row.ship_to_country_code),
        blocked=row.blocked,
    )


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


async def upsert_customer(tx: Tx, c: erp_pb2.Customer) -> erp_pb2.Customer:
    """Create or replace a customer, keeping its ERP-computed balances."""
    validate_customer(c)
    conn, key = tx.conn, customers.c.customer_id == c.customer_id
    values = dict(
        name=c.name,
        currency_code=c.currency_code,
        credit_limit_minor=c.credit_limit.amount_minor,
        ship_to_name=c.ship_to.name,
        ship_to_line1=c.ship_to.line1,
        ship_to_city=c.ship_to.city,
        ship_to_postal_code=c.ship_to.postal_code,
        ship_to_country_code=c.ship_to.country_code.upper(),
        blocked=c.blocked,
    )
    old = await _customer_row(conn, c.customer_id, lock=True)
    if old is None:
        await conn.execute(customers.insert().values(
            customer_id=c.customer_id, open_balance_minor=0, open_orders_minor=0, revision=1,
            **values))
    elif old.currency_code != c.currency_code and (old.open_balance_minor or old.open_orders_minor):
        raise FailedPrecondition(
            f"customer {c.customer_id!r} has open amounts in {old.currency_code}",
            reason="OPEN_AMOUNTS_IN_OTHER_CURRENCY", subject=f"customers/{c.customer_id}")
    else:
        await conn.execute(update(customers).where(key).values(
            revision=customers.c.revision + 1, **values))
    row = (await conn.execute(select(customers).where(key))).one()
    customer = customer_pb(row)
    changed = domain.changed_fields(_customer_fields(customer_pb(old)) if old else None,
                                    _customer_fields(customer))
    await tx.emit("erp.customer.upserted", msgs.CustomerUpserted(
        customer=customer, revision=row.revision, changed_fields=changed), key=c.customer_id)
    return customer


def _customer_fields(c: erp_pb2.Customer) -> dict:
    """The master-data fields of a customer a change can alter (balances are ERP's own)."""
    return {"name": c.name, "currency_code": c.currency_code,
            "credit_limit": c.credit_limit.amount_minor,
            "ship_to": c.ship_to.SerializeToString(deterministic=True), "blocked": c.blocked}


async def get_customer(conn: AsyncConnection, customer_id: str) -> erp_pb2.Customer:
    _require(customer_id=customer_id)
    if (row := await _customer_row(conn, customer_id)) is None:
        raise NotFound("customer", customer_id)
    return customer_pb(row)


async def _customer_row(conn: AsyncConnection, customer_id: str, *, lock: bool = False):
    query = select(customers).where(customers.c.customer_id == customer_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def check_credit(conn: AsyncConnection, customer_id: str,
                       amount: Money) -> erp_pb2.CheckCreditResponse:
    _require(customer_id=customer_id)
    if amount.amount_minor < 0:
        raise InvalidArgument([("amount.amount_minor", "must not be negative")])
    if (customer := await _customer_row(conn, customer_id)) is None:
        raise NotFound("customer", customer_id)
    if amount.currency_code != customer.currency_code:
        raise InvalidArgument([("amount.currency_code",
                                f"must be the customer's currency {customer.currency_code}")])
    decision = domain.check_credit(_credit(customer), amount.amount_minor)
    return erp_pb2.CheckCreditResponse(
        approved=decision.approved,
        reason=decision.reason,
        available_credit=Money(currency_code=customer.currency_code,
                               amount_minor=decision.available),
    )


def _credit(row) -> domain.Credit:
    return domain.Credit(row.currency_code, row.credit_limit_minor, row.open_balance_minor,
                         row.open_orders_minor, row.blocked)


# ---- items ----

def item_pb(row) -> erp_pb2.Item:
    return erp_pb2.Item(
        sku=row.sku,
        description=row.description,
        uom=row.uom,
        unit_price=Money(currency_code=row.currency_code, amount_minor=row.unit_price_minor),
        weight_grams=row.weight_grams,
        active=row.active,
    )


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


async def upsert_item(tx: Tx, i: erp_pb2.Item) -> erp_pb2.Item:
    validate_item(i)
    values = dict(description=i.description, uom=i.uom, currency_code=i.unit_price.currency_code,
                  unit_price_minor=i.unit_price.amount_minor, weight_grams=i.weight_grams,
                  active=i.active)
    old = (await tx.conn.execute(select(items).where(items.c.sku == i.sku))).first()
    if not await insert_ignore(tx.conn, items, {"sku": i.sku, "revision": 1, **values}):
        await tx.conn.execute(update(items).where(items.c.sku == i.sku).values(
            revision=items.c.revision + 1, **values))
    row = (await tx.conn.execute(select(items).where(items.c.sku == i.sku))).one()
    item = item_pb(row)
    changed = domain.changed_fields(_item_fields(item_pb(old)) if old else None, _item_fields(item))
    await tx.emit("erp.item.upserted", msgs.ItemUpserted(
        item=item, revision=row.revision, changed_fields=changed), key=i.sku)
    return item


def _item_fields(i: erp_pb2.Item) -> dict:
    return {"description": i.description, "uom": i.uom,
            "unit_price": (i.unit_price.currency_code, i.unit_price.amount_minor),
            "weight_grams": i.weight_grams, "active": i.active}


async def get_item(conn: AsyncConnection, sku: str) -> erp_pb2.Item:
    _require(sku=sku)
    row = (await conn.execute(select(items).where(items.c.sku == sku))).first()
    if row is None:
        raise NotFound("item", sku)
    return item_pb(row)


async def batch_get_items(conn: AsyncConnection, skus: list[str]) -> list[erp_pb2.Item]:
    """The items found, in request order; unknown SKUs are left out."""
    rows = (await conn.execute(select(items).where(items.c.sku.in_(set(skus))))).all()
    found = {row.sku: item_pb(row) for row in rows}
    return [found[sku] for sku in skus if sku in found]


# ---- listings ----

async def _page(conn: AsyncConnection, table: Table, keys: list[str], page_size: int,
                page_token: str, *where) -> tuple[list, str]:
    return await keyset_page(conn, select(table).where(*where), [table.c[k] for k in keys],
                             page_size, page_token)


async def list_customers(conn: AsyncConnection, page_size: int, page_token: str):
    rows, token = await _page(conn, customers, ["customer_id"], page_size, page_token)
    return [customer_pb(r) for r in rows], token


async def list_items(conn: AsyncConnection, page_size: int, page_token: str):
    rows, token = await _page(conn, items, ["sku"], page_size, page_token)
    return [item_pb(r) for r in rows], token


async def list_invoices(conn: AsyncConnection, page_size: int, page_token: str, order_id: str):
    where = [invoices.c.order_id == order_id] if order_id else []
    rows, token = await _page(conn, invoices, ["invoice_id"], page_size, page_token, *where)
    lines = (await conn.execute(
        select(invoice_lines).where(invoice_lines.c.invoice_id.in_([r.invoice_id for r in rows]))
        .order_by(invoice_lines.c.line_number))).all()
    return [invoice_pb(r, [x for x in lines if x.invoice_id == r.invoice_id]) for r in rows], token


def position_pb(row) -> erp_pb2.LedgerPosition:
    p = erp_pb2.LedgerPosition(sku=row.sku, warehouse_id=row.warehouse_id, on_hand=row.on_hand,
                               last_sequence=row.last_sequence)
    p.update_time.FromDatetime(row.updated_at)
    return p


async def list_ledger_positions(conn: AsyncConnection, page_size: int, page_token: str,
                                warehouse_id: str):
    where = [ledger_positions.c.warehouse_id == warehouse_id] if warehouse_id else []
    rows, token = await _page(conn, ledger_positions, ["sku", "warehouse_id"], page_size,
                              page_token, *where)
    return [position_pb(r) for r in rows], token


# ---- sales orders ----

async def _sales_order_pb(conn: AsyncConnection, row) -> erp_pb2.SalesOrder:
    lines = (await conn.execute(
        select(sales_order_lines).where(sales_order_lines.c.order_id == row.order_id)
        .order_by(sales_order_lines.c.line_number))).all()
    so = erp_pb2.SalesOrder(
        order_id=row.order_id,
        customer_id=row.customer_id,
        lines=[erp_pb2.SalesOrderLine(
            line_number=x.line_number, sku=x.sku, quantity=x.quantity,
            unit_price=Money(currency_code=row.currency_code, amount_minor=x.unit_price_minor),
            invoiced_quantity=x.invoiced_quantity, cancelled_quantity=x.cancelled_quantity)
            for x in lines],
        total=Money(currency_code=row.currency_code, amount_minor=row.total_minor),
        status=STATUS[row.status],
        status_reason=row.status_reason,
    )
    so.create_time.FromDatetime(row.created_at)
    return so


async def _order_row(conn: AsyncConnection, order_id: str, *, lock: bool = False):
    query = select(sales_orders).where(sales_orders.c.order_id == order_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def get_sales_order(conn: AsyncConnection, order_id: str) -> erp_pb2.SalesOrder:
    _require(order_id=order_id)
    row = await _order_row(conn, order_id)
    if row is None:
        raise NotFound("sales order", order_id)
    return await _sales_order_pb(conn, row)


async def _emit_outcome(tx: Tx, order) -> None:
    """Say how a create command ended: rejected, or accepted (with the order as it is now)."""
    if order.status == "REJECTED":
        await tx.emit("erp.salesorder.rejected", msgs.SalesOrderRejected(
            order_id=order.order_id, reason_code=order.reason_code, reason=order.status_reason),
            key=order.order_id)
    else:
        await tx.emit("erp.salesorder.accepted", msgs.SalesOrderAccepted(
            sales_order=await _sales_order_pb(tx.conn, order)), key=order.order_id)


async def create_sales_order(tx: Tx, so: erp_pb2.SalesOrder) -> None:
    """Record the order, accepted if it fits the customer's credit (idempotent on order_id)."""
    if not so.order_id:
        raise PermanentError("CreateSalesOrder without order_id")
    conn = tx.conn
    # The customer's row lock serialises credit decisions (a no-op on SQLite,
    # whose single connection already does).
    customer = await _customer_row(conn, so.customer_id, lock=True)
    if (existing := await _order_row(conn, so.order_id)) is not None:
        await _emit_outcome(tx, existing)
        return
    lines = [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price.amount_minor)
             for x in so.lines]
    total, problem = domain.order_total(lines), domain.order_line_problem(lines)
    currencies = {x.unit_price.currency_code for x in so.lines}
    if customer is None:
        code, reason = "UNKNOWN_CUSTOMER", f"no customer {so.customer_id!r}"
    elif problem:
        code, reason = "INVALID_ORDER", problem
    elif currencies != {customer.currency_code}:
        code, reason = "CURRENCY_MISMATCH", f"prices must be in {customer.currency_code}"
    else:
        decision = domain.check_credit(_credit(customer), total)
        code, reason = decision.reason_code, decision.reason
    await conn.execute(sales_orders.insert().values(
        order_id=so.order_id, customer_id=so.customer_id,
        currency_code=customer.currency_code if customer else min(currencies, default=""),
        total_minor=total, status="REJECTED" if code else "ACCEPTED", status_reason=reason,
        reason_code=code, created_at=utcnow()))
    if not problem:
        await conn.execute(sales_order_lines.insert(), [
            dict(order_id=so.order_id, line_number=x.line_number, sku=x.sku,
                 quantity=x.quantity, unit_price_minor=x.unit_price) for x in lines])
    if not code:
        await conn.execute(update(customers).where(customers.c.customer_id == so.customer_id)
                           .values(open_orders_minor=customers.c.open_orders_minor + total))
    await _emit_outcome(tx, await _order_row(conn, so.order_id))


async def _open_lines(conn: AsyncConnection, order_id: str) -> list:
    return (await conn.execute(select(sales_order_lines).where(sales_order_lines.c.order_id == order_id)
                               .order_by(sales_order_lines.c.line_number))).all()


def _open_amount(lines) -> int:
    """What is neither invoiced nor cancelled: the credit the order still holds."""
    return sum((x.quantity - x.invoiced_quantity - x.cancelled_quantity) * x.unit_price_minor for x in lines)


async def cancel_sales_order(tx: Tx, cmd: msgs.CancelSalesOrder) -> None:
    """Cancel an accepted order and release the credit it still holds; any repeat gets the same answer.

    What was already invoiced (an earlier partial shipment) stays invoiced.
    """
    if not cmd.order_id:
        raise PermanentError("CancelSalesOrder without order_id")
    order = await _order_row(tx.conn, cmd.order_id, lock=True)
    if order is not None and order.status == "INVOICED":
        log.warning("salesorder.cancel_ignored", order_id=cmd.order_id, status=order.status)
        return
    reason = order.status_reason if order is not None else "no such sales order"
    if order is not None and order.status == "ACCEPTED":
        reason = cmd.reason
        held = _open_amount(await _open_lines(tx.conn, cmd.order_id))
        await tx.conn.execute(update(sales_orders).where(sales_orders.c.order_id == cmd.order_id)
                              .values(status="CANCELLED", status_reason=reason))
        await tx.conn.execute(
            update(customers).where(customers.c.customer_id == order.customer_id)
            .values(open_orders_minor=customers.c.open_orders_minor - held))
    await tx.emit("erp.salesorder.cancelled",
                  msgs.SalesOrderCancelled(order_id=cmd.order_id, reason=reason),
                  key=cmd.order_id)


async def _close_if_complete(tx: Tx, order_id: str, reason: str) -> None:
    """INVOICED once every line is invoiced or cancelled (CANCELLED when nothing was invoiced)."""
    lines = await _open_lines(tx.conn, order_id)
    if any(x.quantity - x.invoiced_quantity - x.cancelled_quantity for x in lines):
        return
    status = "INVOICED" if any(x.invoiced_quantity for x in lines) else "CANCELLED"
    await tx.conn.execute(update(sales_orders).where(sales_orders.c.order_id == order_id)
                          .values(status=status, status_reason=reason))


async def cancel_sales_order_lines(tx: Tx, cmd: msgs.CancelSalesOrderLines) -> None:
    """Cancel quantities of open lines (a warehouse exception decision) and release their credit.

    Never more than is still open on a line; the order closes when nothing is open.
    """
    if not cmd.order_id:
        raise PermanentError("CancelSalesOrderLines without order_id")
    order = await _order_row(tx.conn, cmd.order_id, lock=True)
    if order is None or order.status != "ACCEPTED":
        raise PermanentError(f"cannot cancel lines of sales order {cmd.order_id!r}: "
                             + (order.status if order else "unknown"))
    by_number = {x.line_number: x for x in await _open_lines(tx.conn, cmd.order_id)}
    released = 0
    for c in cmd.lines:
        line = by_number.get(c.line_number)
        if line is None or (c.sku and c.sku != line.sku):
            raise PermanentError(f"line {c.line_number} ({c.sku}) is not on sales order {cmd.order_id}")
        qty = min(c.quantity, line.quantity - line.invoiced_quantity - line.cancelled_quantity)
        if qty <= 0:
            continue
        released += qty * line.unit_price_minor
        await tx.conn.execute(update(sales_order_lines).where(
            sales_order_lines.c.order_id == cmd.order_id, sales_order_lines.c.line_number == c.line_number)
            .values(cancelled_quantity=sales_order_lines.c.cancelled_quantity + qty))
    await tx.conn.execute(update(customers).where(customers.c.customer_id == order.customer_id)
                          .values(open_orders_minor=customers.c.open_orders_minor - released))
    await _close_if_complete(tx, cmd.order_id, f"closed: {cmd.reason}")
    await tx.emit("erp.salesorder.lines_cancelled", msgs.SalesOrderLinesCancelled(
        sales_order=await _sales_order_pb(tx.conn, await _order_row(tx.conn, cmd.order_id)),
        reason=cmd.reason), key=cmd.order_id)


# ---- invoices ----

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


async def _emit_invoice(tx: Tx, invoice_id: str) -> None:
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
    order = await _order_row(conn, cmd.order_id, lock=True)
    existing = (await conn.execute(
        select(invoices.c.invoice_id).where(invoices.c.shipment_id == cmd.shipment_id))).first()
    if existing is not None:
        await _emit_invoice(tx, existing.invoice_id)
        return
    if order is None or order.status != "ACCEPTED":
        raise PermanentError(f"cannot invoice sales order {cmd.order_id!r}: "
                             + (order.status if order else "unknown"))
    # What is still open on each line: earlier shipments were invoiced, exceptions cancelled some.
    ordered = [domain.Line(x.line_number, x.sku, x.quantity - x.invoiced_quantity - x.cancelled_quantity,
                           x.unit_price_minor)
               for x in await _open_lines(conn, cmd.order_id)]
    try:
        lines = domain.invoice_lines(
            ordered, [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.shipped_lines])
    except domain.InvoiceRefused as exc:
        raise PermanentError(f"shipment {cmd.shipment_id} of order {cmd.order_id}: {exc}") from None
    count = (await conn.execute(select(func.count()).select_from(invoices).where(
        invoices.c.order_id == cmd.order_id))).scalar_one()
    invoice_id, total = f"INV-{cmd.order_id}-{count + 1}", domain.order_total(lines)
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
    await _close_if_complete(tx, cmd.order_id, f"invoiced as {invoice_id}")
    await _emit_invoice(tx, invoice_id)


# ---- inventory ledger ----

async def apply_inventory_movements(tx: Tx, moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> None:
    """Follow WMS (the truth) for many movements at once (a burst): a handful of statements.

    Movements of one position are applied in sequence order; a stale one is
    ignored and a gap logged.
    """
    for ev, _ in moves:
        if not ev.sku or not ev.warehouse_id or ev.sequence < 1:
            raise PermanentError("InventoryAdjusted needs sku, warehouse_id and a sequence >= 1")
    if not moves:
        return
    conn, now = tx.conn, utcnow()
    lp = ledger_positions.c
    pairs = sorted({(ev.sku, ev.warehouse_id) for ev, _ in moves})
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(ledger_positions).on_conflict_do_nothing(), [
        dict(sku=sku, warehouse_id=wh, on_hand=0, last_sequence=0, updated_at=now) for sku, wh in pairs])
    state = {}
    for i in range(0, len(pairs), 400):
        rows = await conn.execute(select(lp.sku, lp.warehouse_id, lp.on_hand, lp.last_sequence)
                                  .where(tuple_(lp.sku, lp.warehouse_id).in_(pairs[i:i + 400]))
                                  .order_by(lp.sku, lp.warehouse_id).with_for_update())
        state.update({(r.sku, r.warehouse_id): (r.on_hand, r.last_sequence) for r in rows})
    entries = []
    for ev, event_id in sorted(moves, key=lambda m: (m[0].sku, m[0].warehouse_id, m[0].sequence)):
        key = (ev.sku, ev.warehouse_id)
        movement = dict(sku=ev.sku, warehouse_id=ev.warehouse_id, sequence=ev.sequence)
        check = domain.check_sequence(state[key][1], ev.sequence)
        if check.stale:
            log.info("ledger.stale_movement_ignored", last_sequence=state[key][1], **movement)
            continue
        if check.missing:
            log.warning("ledger.sequence_gap", missing_from=check.missing[0], missing_to=check.missing[1],
                        **movement)
        state[key] = (ev.on_hand_after, ev.sequence)
        reason = wms_msgs.MovementReason.DESCRIPTOR.values_by_number.get(ev.reason)
        entries.append(dict(delta=ev.delta, on_hand_after=ev.on_hand_after,
                            reason=reason.name.removeprefix("MOVEMENT_REASON_") if reason else str(ev.reason),
                            reference=ev.reference, event_id=event_id, applied_at=now, **movement))
    if not entries:
        return
    changed = {(e["sku"], e["warehouse_id"]) for e in entries}
    await conn.execute(
        update(ledger_positions).where(lp.sku == bindparam("k_sku"), lp.warehouse_id == bindparam("k_wh"))
        .values(on_hand=bindparam("v_on_hand"), last_sequence=bindparam("v_seq"), updated_at=now),
        [dict(k_sku=sku, k_wh=wh, v_on_hand=state[(sku, wh)][0], v_seq=state[(sku, wh)][1])
         for sku, wh in sorted(changed)])
    await conn.execute(ledger_entries.insert(), entries)


# ---- return authorisations (RMAs) and credit memos ----

RMA_STATUS = {
    "AUTHORIZED": erp_pb2.RETURN_AUTHORIZATION_STATUS_AUTHORIZED,
    "REFUSED": erp_pb2.RETURN_AUTHORIZATION_STATUS_REFUSED,
    "CANCELLED": erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED,
    "CREDITED": erp_pb2.RETURN_AUTHORIZATION_STATUS_CREDITED,
}


class NotInvoicedYet(Exception):
    """The order is shipped but its invoice is not posted yet: retried with back-off."""


async def _rma_row(conn: AsyncConnection, return_id: str, *, lock: bool = False):
    query = select(return_authorizations).where(return_authorizations.c.return_id == return_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def _rma_lines(conn: AsyncConnection, return_id: str) -> list:
    return (await conn.execute(select(return_authorization_lines).where(
        return_authorization_lines.c.return_id == return_id)
        .order_by(return_authorization_lines.c.line_number))).all()


async def _rma_pb(conn: AsyncConnection, row) -> erp_pb2.ReturnAuthorization:
    def money(minor: int) -> Money:
        return Money(currency_code=row.currency_code, amount_minor=minor)

    rma = erp_pb2.ReturnAuthorization(
        rma_number=row.rma_number or "", return_id=row.return_id, order_id=row.order_id,
        customer_id=row.customer_id,
        lines=[erp_pb2.ReturnAuthorizationLine(line_number=x.line_number, sku=x.sku,
                                               quantity=x.quantity, unit_price=money(x.unit_price_minor))
               for x in await _rma_lines(conn, row.return_id)],
        expected_credit=money(row.expected_credit_minor), status=RMA_STATUS[row.status],
        status_reason=row.status_reason, credit_memo_id=row.credit_memo_id)
    rma.create_time.FromDatetime(row.created_at)
    rma.update_time.FromDatetime(row.updated_at)
    return rma


async def get_return_authorization(conn: AsyncConnection, rma_number: str) -> erp_pb2.ReturnAuthorization:
    _require(rma_number=rma_number)
    row = (await conn.execute(select(return_authorizations).where(
        return_authorizations.c.rma_number == rma_number))).first()
    if row is None:
        raise NotFound("return authorization", rma_number)
    return await _rma_pb(conn, row)


async def _emit_rma_outcome(tx: Tx, row) -> None:
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
            authorization=await _rma_pb(tx.conn, row)), key=row.return_id)


async def _invoiced_lines(conn: AsyncConnection, order_id: str) -> list[domain.Line]:
    rows = (await conn.execute(
        select(invoice_lines).join(invoices, invoices.c.invoice_id == invoice_lines.c.invoice_id)
        .where(invoices.c.order_id == order_id).order_by(invoice_lines.c.line_number))).all()
    return [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price_minor) for x in rows]


async def _credited_lines(conn: AsyncConnection, order_id: str) -> Counter[int]:
    rows = (await conn.execute(
        select(credit_memo_lines.c.line_number, func.sum(credit_memo_lines.c.quantity).label("qty"))
        .join(credit_memos, credit_memos.c.credit_memo_id == credit_memo_lines.c.credit_memo_id)
        .where(credit_memos.c.order_id == order_id).group_by(credit_memo_lines.c.line_number))).all()
    return Counter({r.line_number: int(r.qty) for r in rows})


async def _held_lines(conn: AsyncConnection, order_id: str) -> Counter[int]:
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
    held.update(await _credited_lines(conn, order_id))
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
    order = await _order_row(conn, cmd.order_id, lock=True)
    if (existing := await _rma_row(conn, cmd.return_id, lock=True)) is not None:
        await _emit_rma_outcome(tx, existing)
        return
    code, reason, lines = "", "", []
    if order is None:
        code, reason = "UNKNOWN_ORDER", f"no sales order {cmd.order_id!r}"
    elif cmd.customer_id and cmd.customer_id != order.customer_id:
        code, reason = "CUSTOMER_MISMATCH", f"order {cmd.order_id} is not {cmd.customer_id}'s"
    elif order.status == "ACCEPTED":
        # Shipped goods are invoiced by a command sent before this one: wait for it.
        raise NotInvoicedYet(f"sales order {cmd.order_id} is not invoiced yet")
    elif order.status != "INVOICED":
        code, reason = "NOT_INVOICED", f"sales order {cmd.order_id} is {order.status}"
    else:
        requested = [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.lines]
        try:
            lines = domain.authorize_return(await _invoiced_lines(conn, cmd.order_id),
                                            await _held_lines(conn, cmd.order_id), requested)
        except domain.ReturnRefused as exc:
            code, reason = exc.code, exc.reason
    rma_number = None
    if not code:
        count = (await conn.execute(select(func.count()).select_from(return_authorizations).where(
            return_authorizations.c.order_id == cmd.order_id,
            return_authorizations.c.rma_number.is_not(None)))).scalar_one()
        rma_number = f"RMA-{cmd.order_id}-{count + 1}"
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
    await _emit_rma_outcome(tx, await _rma_row(conn, cmd.return_id))


async def cancel_return_authorization(tx: Tx, cmd: msgs.CancelReturnAuthorization) -> None:
    """Close an RMA without credit; a cancel that comes first leaves a tombstone (idempotent)."""
    if not cmd.return_id:
        raise PermanentError("CancelReturnAuthorization needs return_id")
    conn, now = tx.conn, utcnow()
    row = await _rma_row(conn, cmd.return_id, lock=True)
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
    row = await _rma_row(conn, cmd.return_id)
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


async def _emit_credit_memo(tx: Tx, credit_memo_id: str) -> None:
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
    rma = await _rma_row(conn, cmd.return_id)
    if rma is not None and rma.order_id:
        await _order_row(conn, rma.order_id, lock=True)  # serialise with the order's other credits
    rma = await _rma_row(conn, cmd.return_id, lock=True)
    existing = (await conn.execute(select(credit_memos.c.credit_memo_id).where(
        credit_memos.c.return_id == cmd.return_id))).first()
    if existing is not None:
        await _emit_credit_memo(tx, existing.credit_memo_id)
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
                  for x in await _rma_lines(conn, cmd.return_id)]
    try:
        lines = domain.credit_memo_lines(
            authorized, [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.accepted_lines],
            await _invoiced_lines(conn, rma.order_id), await _credited_lines(conn, rma.order_id))
    except domain.ReturnRefused as exc:
        await refuse(exc.code, exc.reason)
        return
    memo_id, total, now = "CM-" + rma.rma_number.removeprefix("RMA-"), domain.order_total(lines), utcnow()
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
    await _emit_credit_memo(tx, memo_id)


async def list_credit_memos(conn: AsyncConnection, page_size: int, page_token: str, order_id: str,
                            customer_id: str):
    where = [credit_memos.c.order_id == order_id] if order_id else []
    if customer_id:
        where.append(credit_memos.c.customer_id == customer_id)
    rows, token = await _page(conn, credit_memos, ["credit_memo_id"], page_size, page_token, *where)
    lines = (await conn.execute(
        select(credit_memo_lines).where(credit_memo_lines.c.credit_memo_id.in_(
            [r.credit_memo_id for r in rows])).order_by(credit_memo_lines.c.line_number))).all()
    return [credit_memo_pb(r, [x for x in lines if x.credit_memo_id == r.credit_memo_id])
            for r in rows], token


# ---- ledger corrections (inventory reconciliation) ----

async def correct_ledger(tx: Tx, reference: str,
                         corrections: list[erp_pb2.LedgerCorrection]) -> list[erp_pb2.LedgerCorrectionResult]:
    """Bring positions to WMS truth, each only while it is still as the caller read it.

    A correction is audited twice: a ledger entry with reason RECONCILIATION
    (the run as its reference) and an erp.inventory.corrected event. A
    position already at the target is reported applied without a second entry.
    """
    problems = [] if reference else [("reference", "required")]
    for i, c in enumerate(corrections):
        if not c.sku or not c.warehouse_id:
            problems.append((f"corrections[{i}]", "sku and warehouse_id are required"))
        if c.sequence < 0 or c.expected_last_sequence < 0:
            problems.append((f"corrections[{i}]", "sequences must not be negative"))
    if problems:
        raise InvalidArgument(problems)
    conn, now, results = tx.conn, utcnow(), []
    for c in corrections:
        key = (ledger_positions.c.sku == c.sku, ledger_positions.c.warehouse_id == c.warehouse_id)
        if c.expected_on_hand == 0 and c.expected_last_sequence == 0:
            await insert_ignore(conn, ledger_positions, dict(
                sku=c.sku, warehouse_id=c.warehouse_id, on_hand=0, last_sequence=0, updated_at=now))
        pos = (await conn.execute(select(ledger_positions).where(*key).with_for_update())).first()
        applied = False
        if pos is not None and (pos.on_hand, pos.last_sequence) == (c.on_hand, c.sequence):
            applied = True  # already there (a repeated correction)
        elif pos is not None and (pos.on_hand, pos.last_sequence) == (c.expected_on_hand,
                                                                      c.expected_last_sequence):
            await conn.execute(update(ledger_positions).where(*key).values(
                on_hand=c.on_hand, last_sequence=c.sequence, updated_at=now))
            event_id = await tx.emit("erp.inventory.corrected", msgs.InventoryCorrected(
                sku=c.sku, warehouse_id=c.warehouse_id, on_hand_before=pos.on_hand,
                on_hand_after=c.on_hand, delta=c.on_hand - pos.on_hand, sequence=c.sequence,
                reference=reference, detail=c.detail), key=f"{c.warehouse_id}/{c.sku}")
            await conn.execute(ledger_entries.insert().values(
                sku=c.sku, warehouse_id=c.warehouse_id, delta=c.on_hand - pos.on_hand,
                on_hand_after=c.on_hand, sequence=c.sequence, reason="RECONCILIATION",
                reference=reference[:100], event_id=event_id, applied_at=now))
            log.warning("ledger.corrected", sku=c.sku, warehouse_id=c.warehouse_id,
                        before=pos.on_hand, after=c.on_hand, sequence=c.sequence, reference=reference)
            applied = True
        result = erp_pb2.LedgerCorrectionResult(sku=c.sku, warehouse_id=c.warehouse_id, applied=applied)
        if (now_pos := (await conn.execute(select(ledger_positions).where(*key))).first()) is not None:
            result.position.CopyFrom(position_pb(now_pos))
        results.append(result)
    return results
