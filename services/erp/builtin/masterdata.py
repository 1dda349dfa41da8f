"""The built-in ERP's master data: customers (credit limits, ERP-computed balances) and
the item master, each change published with a revision and what changed."""

from __future__ import annotations

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.paging import keyset_page
from services.mesh.store import Store, Tx, insert_ignore

from .. import contract, domain
from ..store import customers, items


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


def item_pb(row) -> erp_pb2.Item:
    return erp_pb2.Item(
        sku=row.sku,
        description=row.description,
        uom=row.uom,
        unit_price=Money(currency_code=row.currency_code, amount_minor=row.unit_price_minor),
        weight_grams=row.weight_grams,
        active=row.active,
    )


def credit_of(row) -> domain.Credit:
    return domain.Credit(row.currency_code, row.credit_limit_minor, row.open_balance_minor,
                         row.open_orders_minor, row.blocked)


async def customer_row(conn: AsyncConnection, customer_id: str, *, lock: bool = False):
    query = select(customers).where(customers.c.customer_id == customer_id)
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def page(conn: AsyncConnection, table: Table, keys: list[str], page_size: int,
               page_token: str, *where) -> tuple[list, str]:
    return await keyset_page(conn, select(table).where(*where), [table.c[k] for k in keys],
                             page_size, page_token)


async def upsert_customer(tx: Tx, c: erp_pb2.Customer) -> erp_pb2.Customer:
    """Create or replace a customer, keeping its ERP-computed balances."""
    contract.validate_customer(c)
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
    old = await customer_row(conn, c.customer_id, lock=True)
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
    changed = domain.changed_fields(contract.customer_fields(customer_pb(old)) if old else None,
                                    contract.customer_fields(customer))
    await tx.emit("erp.customer.upserted", msgs.CustomerUpserted(
        customer=customer, revision=row.revision, changed_fields=changed), key=c.customer_id)
    return customer


async def upsert_item(tx: Tx, i: erp_pb2.Item) -> erp_pb2.Item:
    contract.validate_item(i)
    values = dict(description=i.description, uom=i.uom, currency_code=i.unit_price.currency_code,
                  unit_price_minor=i.unit_price.amount_minor, weight_grams=i.weight_grams,
                  active=i.active)
    old = (await tx.conn.execute(select(items).where(items.c.sku == i.sku))).first()
    if not await insert_ignore(tx.conn, items, {"sku": i.sku, "revision": 1, **values}):
        await tx.conn.execute(update(items).where(items.c.sku == i.sku).values(
            revision=items.c.revision + 1, **values))
    row = (await tx.conn.execute(select(items).where(items.c.sku == i.sku))).one()
    item = item_pb(row)
    changed = domain.changed_fields(contract.item_fields(item_pb(old)) if old else None,
                                    contract.item_fields(item))
    await tx.emit("erp.item.upserted", msgs.ItemUpserted(
        item=item, revision=row.revision, changed_fields=changed), key=i.sku)
    return item


class BuiltinMasterData:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def upsert_customer(self, customer: erp_pb2.Customer) -> erp_pb2.Customer:
        async with self.store.transaction() as tx:
            return await upsert_customer(tx, customer)

    async def get_customer(self, customer_id: str) -> erp_pb2.Customer:
        contract.require(customer_id=customer_id)
        async with self.store.read() as conn:
            row = await customer_row(conn, customer_id)
        if row is None:
            raise NotFound("customer", customer_id)
        return customer_pb(row)

    async def list_customers(self, page_size: int, page_token: str):
        async with self.store.read() as conn:
            rows, token = await page(conn, customers, ["customer_id"], page_size, page_token)
        return [customer_pb(r) for r in rows], token

    async def check_credit(self, customer_id: str, amount: Money) -> erp_pb2.CheckCreditResponse:
        contract.validate_credit_request(customer_id, amount)
        async with self.store.read() as conn:
            row = await customer_row(conn, customer_id)
        if row is None:
            raise NotFound("customer", customer_id)
        if amount.currency_code != row.currency_code:
            raise InvalidArgument([("amount.currency_code",
                                    f"must be the customer's currency {row.currency_code}")])
        return contract.credit_response(credit_of(row), amount.amount_minor)

    async def upsert_item(self, item: erp_pb2.Item) -> erp_pb2.Item:
        async with self.store.transaction() as tx:
            return await upsert_item(tx, item)

    async def get_item(self, sku: str) -> erp_pb2.Item:
        contract.require(sku=sku)
        async with self.store.read() as conn:
            row = (await conn.execute(select(items).where(items.c.sku == sku))).first()
        if row is None:
            raise NotFound("item", sku)
        return item_pb(row)

    async def batch_get_items(self, skus: list[str]) -> list[erp_pb2.Item]:
        """The items found, in request order; unknown SKUs are left out."""
        async with self.store.read() as conn:
            rows = (await conn.execute(select(items).where(items.c.sku.in_(set(skus))))).all()
        found = {row.sku: item_pb(row) for row in rows}
        return [found[sku] for sku in skus if sku in found]

    async def list_items(self, page_size: int, page_token: str):
        async with self.store.read() as conn:
            rows, token = await page(conn, items, ["sku"], page_size, page_token)
        return [item_pb(r) for r in rows], token
