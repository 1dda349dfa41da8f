"""ERP master data, use case by use case: customers and items, their change events
(revision and what changed), lookups and pages."""

from __future__ import annotations

import pytest

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.usecases.erp_support import builtin_erp, customer, sales_order, usd


@pytest.fixture
async def erp(usecase_store):
    return await builtin_erp(usecase_store)


async def test_upserts_publish_master_data_with_a_revision_and_what_changed(erp, outbox):
    md = erp.backend.master_data
    item = erp_pb2.Item(sku="SKU-1", description="Widget", uom="EA", unit_price=usd(250),
                        weight_grams=400, active=True)
    assert await md.upsert_item(item) == item
    item.unit_price.amount_minor = 300
    await md.upsert_item(item)
    await md.upsert_customer(customer("C-1", 5_000))
    await md.upsert_customer(customer("C-1", 9_000))
    items = [p.body for p in await outbox(erp.store, "erp.item.upserted")]
    assert [(e.revision, list(e.changed_fields), e.item.unit_price.amount_minor) for e in items] == [
        (1, [], 250), (2, ["unit_price"], 300)]
    assert all(p.key == "SKU-1" for p in await outbox(erp.store, "erp.item.upserted"))
    customers = [p.body for p in await outbox(erp.store, "erp.customer.upserted")]
    assert [(e.revision, list(e.changed_fields)) for e in customers] == [(1, []), (2, ["credit_limit"])]
    assert await md.get_item("SKU-1") == item
    got = await md.get_customer("C-1")
    assert (got.credit_limit, got.open_orders, got.ship_to.country_code) == (usd(9_000), usd(0), "US")


async def test_batch_lookups_keep_the_request_order_and_leave_unknown_skus_out(erp):
    for sku in ("SKU-2", "SKU-1"):
        await erp.backend.master_data.upsert_item(erp_pb2.Item(sku=sku, uom="EA", unit_price=usd(1)))
    found = await erp.backend.master_data.batch_get_items(["SKU-2", "NOPE", "SKU-1"])
    assert [i.sku for i in found] == ["SKU-2", "SKU-1"]


async def test_listings_page_with_opaque_tokens(erp):
    for sku in ("A", "B", "C"):
        await erp.backend.master_data.upsert_item(erp_pb2.Item(sku=sku, uom="EA", unit_price=usd(1)))
    first, token = await erp.backend.master_data.list_items(2, "")
    second, end = await erp.backend.master_data.list_items(2, token)
    assert ([i.sku for i in first], [i.sku for i in second], end) == (["A", "B"], ["C"], "")
    for size, token in ((0, "garbage"), (-1, "")):
        with pytest.raises(InvalidArgument):
            await erp.backend.master_data.list_items(size, token)


async def test_bad_master_data_is_refused_field_by_field(erp):
    bad = erp_pb2.Customer(currency_code="usd", ship_to=Address(country_code="USA"),
                           credit_limit=Money(currency_code="EUR", amount_minor=-1))
    with pytest.raises(InvalidArgument) as info:
        await erp.backend.master_data.upsert_customer(bad)
    assert {f for f, _ in info.value.violations} == {
        "customer.customer_id", "customer.currency_code", "customer.credit_limit",
        "customer.credit_limit.currency_code", "customer.ship_to.country_code"}
    with pytest.raises(InvalidArgument) as info:
        await erp.backend.master_data.upsert_item(erp_pb2.Item(
            sku="S", unit_price=Money(currency_code="EURO", amount_minor=-5), weight_grams=-1))
    assert {f for f, _ in info.value.violations} == {
        "item.uom", "item.unit_price.currency_code", "item.unit_price", "item.weight_grams"}
    with pytest.raises(NotFound):
        await erp.backend.master_data.get_customer("NOPE")
    with pytest.raises(NotFound):
        await erp.backend.master_data.check_credit("NOPE", usd(1))


async def test_credit_is_checked_in_the_customers_currency(erp):
    await erp.backend.master_data.upsert_customer(customer("C-1", 100))
    with pytest.raises(InvalidArgument, match="USD"):
        await erp.backend.master_data.check_credit("C-1", Money(currency_code="EUR", amount_minor=1))


async def test_a_customers_currency_cannot_change_while_it_has_open_amounts(erp):
    await erp.backend.master_data.upsert_customer(customer("C-1", 10_000))
    await erp.create(sales_order("O1", "C-1", ("A", 1, 100)))
    eur = customer("C-1", 10_000)
    eur.currency_code = eur.credit_limit.currency_code = "EUR"
    with pytest.raises(FailedPrecondition, match="open amounts in USD"):
        await erp.backend.master_data.upsert_customer(eur)
