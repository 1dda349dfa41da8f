"""ERP use cases: each takes a store transaction (or connection) and does one thing."""

from __future__ import annotations

import re

import structlog
from sqlalchemy import Table, func, select, update
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
    customers,
    invoice_lines,
    invoices,
    items,
    ledger_entries,
    ledger_positions,
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
            customer_id=c.customer_id, open_balance_minor=0, open_orders_minor=0, **values))
    elif old.currency_code != c.currency_code and (old.open_balance_minor or old.open_orders_minor):
        raise FailedPrecondition(
            f"customer {c.customer_id!r} has open amounts in {old.currency_code}",
            reason="OPEN_AMOUNTS_IN_OTHER_CURRENCY", subject=f"customers/{c.customer_id}")
    else:
        await conn.execute(update(customers).where(key).values(**values))
    customer = customer_pb((await conn.execute(select(customers).where(key))).one())
    await tx.emit("erp.customer.upserted", msgs.CustomerUpserted(customer=customer),
                  key=c.customer_id)
    return customer


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
    if not await insert_ignore(tx.conn, items, {"sku": i.sku, **values}):
        await tx.conn.execute(update(items).where(items.c.sku == i.sku).values(**values))
    item = item_pb((await tx.conn.execute(select(items).where(items.c.sku == i.sku))).one())
    await tx.emit("erp.item.upserted", msgs.ItemUpserted(item=item), key=i.sku)
    return item


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
            unit_price=Money(currency_code=row.currency_code, amount_minor=x.unit_price_minor))
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


async def cancel_sales_order(tx: Tx, cmd: msgs.CancelSalesOrder) -> None:
    """Cancel an accepted order and release its credit; any repeat gets the same answer."""
    if not cmd.order_id:
        raise PermanentError("CancelSalesOrder without order_id")
    order = await _order_row(tx.conn, cmd.order_id, lock=True)
    if order is not None and order.status == "INVOICED":
        log.warning("salesorder.cancel_ignored", order_id=cmd.order_id, status=order.status)
        return
    reason = order.status_reason if order is not None else "no such sales order"
    if order is not None and order.status == "ACCEPTED":
        reason = cmd.reason
        await tx.conn.execute(update(sales_orders).where(sales_orders.c.order_id == cmd.order_id)
                              .values(status="CANCELLED", status_reason=reason))
        await tx.conn.execute(
            update(customers).where(customers.c.customer_id == order.customer_id)
            .values(open_orders_minor=customers.c.open_orders_minor - order.total_minor))
    await tx.emit("erp.salesorder.cancelled",
                  msgs.SalesOrderCancelled(order_id=cmd.order_id, reason=reason),
                  key=cmd.order_id)


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
    ordered = [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price_minor)
               for x in (await conn.execute(select(sales_order_lines).where(
                   sales_order_lines.c.order_id == cmd.order_id)
                   .order_by(sales_order_lines.c.line_number))).all()]
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
    await conn.execute(
        update(customers).where(customers.c.customer_id == order.customer_id).values(
            open_balance_minor=customers.c.open_balance_minor + total,
            open_orders_minor=customers.c.open_orders_minor - order.total_minor))
    await conn.execute(update(sales_orders).where(sales_orders.c.order_id == cmd.order_id)
                       .values(status="INVOICED", status_reason=f"invoiced as {invoice_id}"))
    await _emit_invoice(tx, invoice_id)


# ---- inventory ledger ----

async def apply_inventory_movement(tx: Tx, ev: wms_msgs.InventoryAdjusted, event_id: str) -> None:
    """Follow WMS (the truth): take its on-hand unless the movement is stale."""
    if not ev.sku or not ev.warehouse_id or ev.sequence < 1:
        raise PermanentError("InventoryAdjusted needs sku, warehouse_id and a sequence >= 1")
    conn, now = tx.conn, utcnow()
    key = (ledger_positions.c.sku == ev.sku, ledger_positions.c.warehouse_id == ev.warehouse_id)
    await insert_ignore(conn, ledger_positions, dict(sku=ev.sku, warehouse_id=ev.warehouse_id,
                                                     on_hand=0, last_sequence=0, updated_at=now))
    position = (await conn.execute(select(ledger_positions).where(*key).with_for_update())).one()
    check = domain.check_sequence(position.last_sequence, ev.sequence)
    movement = dict(sku=ev.sku, warehouse_id=ev.warehouse_id, sequence=ev.sequence)
    if check.stale:
        log.info("ledger.stale_movement_ignored", last_sequence=position.last_sequence, **movement)
        return
    if check.missing:
        log.warning("ledger.sequence_gap", missing_from=check.missing[0],
                    missing_to=check.missing[1], **movement)
    await conn.execute(update(ledger_positions).where(*key).values(
        on_hand=ev.on_hand_after, last_sequence=ev.sequence, updated_at=now))
    reason = wms_msgs.MovementReason.DESCRIPTOR.values_by_number.get(ev.reason)
    await conn.execute(ledger_entries.insert().values(
        delta=ev.delta, on_hand_after=ev.on_hand_after,
        reason=reason.name.removeprefix("MOVEMENT_REASON_") if reason else str(ev.reason),
        reference=ev.reference, event_id=event_id, applied_at=now, **movement))
