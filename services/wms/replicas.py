"""The WMS's replicas of ERP master data: items (their weights price packages) and
customers, from ``erp.item.upserted`` and ``erp.customer.upserted``. Each event
carries the record's ``revision``: a stale one never overwrites a newer one.
(The reorder-point replica is ``replenishment.py``'s: it moves the trigger.)
"""

from __future__ import annotations

import structlog
from sqlalchemy import Table, delete, select

from crossdock.erp.v1 import erp_pb2
from services.mesh.store import Tx, utcnow

from .store import customers, items

log = structlog.get_logger()


async def _replicate(tx: Tx, table: Table, key: str, key_value: str, revision: int, values: dict) -> bool:
    """Insert or replace a replica row unless it already holds this revision or a newer one.

    Revision 0 (an event from before revisions existed) always applies.
    """
    current = (await tx.conn.execute(select(table.c.revision).where(table.c[key] == key_value))).first()
    if current is not None and revision and current.revision >= revision:
        log.info("replica.stale_ignored", table=table.name, key=key_value, revision=revision,
                 held=current.revision)
        return False
    await tx.conn.execute(delete(table).where(table.c[key] == key_value))
    await tx.conn.execute(table.insert().values(
        **{key: key_value}, revision=revision, updated_at=utcnow(), **values))
    return True


async def replicate_item(tx: Tx, item: erp_pb2.Item, revision: int = 0) -> bool:
    return await _replicate(tx, items, "sku", item.sku, revision, dict(
        weight_grams=item.weight_grams, description=item.description, uom=item.uom,
        currency_code=item.unit_price.currency_code, unit_price_minor=item.unit_price.amount_minor,
        active=item.active))


async def replicate_customer(tx: Tx, customer: erp_pb2.Customer, revision: int = 0) -> bool:
    return await _replicate(tx, customers, "customer_id", customer.customer_id, revision, dict(
        name=customer.name, currency_code=customer.currency_code,
        credit_limit_minor=customer.credit_limit.amount_minor, blocked=customer.blocked))


async def unit_weights(conn, skus) -> dict[str, int]:
    """Weight in grams of each SKU the item replica holds."""
    rows = await conn.execute(select(items.c.sku, items.c.weight_grams).where(items.c.sku.in_(list(skus))))
    return {row.sku: row.weight_grams for row in rows}
