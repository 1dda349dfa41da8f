"""WMS master-data replicas in-process: a change applies unless the replica already holds
its revision or a newer one (revision 0, from before revisions existed, always applies)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from services.wms import replicas
from services.wms.store import customers, items

from .wms import Warehouse


@pytest.fixture
async def wms(usecase_store) -> Warehouse:
    return await Warehouse.open(usecase_store)


def item(price: int, weight: int = 300) -> erp_pb2.Item:
    return erp_pb2.Item(sku="SKU-P", uom="EA", weight_grams=weight, active=True,
                        unit_price=Money(currency_code="USD", amount_minor=price))


async def rows(wms: Warehouse, *columns) -> list[tuple]:
    async with wms.store.read() as conn:
        return [tuple(r) for r in await conn.execute(select(*columns))]


async def test_an_item_follows_its_revisions_and_ignores_a_stale_one(wms):
    assert await wms.run(replicas.replicate_item, item(1200), 2)
    assert not await wms.run(replicas.replicate_item, item(1000), 1)  # older, arrived later
    assert not await wms.run(replicas.replicate_item, item(1100), 2)  # the same revision again
    assert await rows(wms, items.c.unit_price_minor, items.c.revision, items.c.weight_grams) == [
        (1200, 2, 300)]
    assert await wms.run(replicas.replicate_item, item(900, weight=250), 0)
    assert await rows(wms, items.c.unit_price_minor, items.c.revision) == [(900, 0)]
    async with wms.store.read() as conn:
        assert await replicas.unit_weights(conn, ["SKU-P", "SKU-?"]) == {"SKU-P": 250}


async def test_a_customer_follows_its_revisions(wms):
    def customer(limit: int) -> erp_pb2.Customer:
        return erp_pb2.Customer(customer_id="C-P", name="P", currency_code="USD",
                                credit_limit=Money(currency_code="USD", amount_minor=limit))

    await wms.run(replicas.replicate_customer, customer(77_00), 3)
    await wms.run(replicas.replicate_customer, customer(10_00), 2)
    await wms.run(replicas.replicate_customer, customer(88_00), 4)
    assert await rows(wms, customers.c.credit_limit_minor, customers.c.revision) == [(8800, 4)]
    assert await wms.sent() == []  # replicas publish nothing
