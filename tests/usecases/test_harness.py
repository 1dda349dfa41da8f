"""The use-case harness itself: a migrated store, and the outbox read back as messages."""

from __future__ import annotations

from crossdock.wms.v1 import wms_pb2
from services.wms import stock


async def test_a_use_case_runs_on_a_migrated_store_and_leaves_its_events_in_the_outbox(
        usecase_store, outbox):
    store = await usecase_store("wms")
    async with store.transaction() as tx:
        await stock.upsert_warehouse(tx, wms_pb2.Warehouse(warehouse_id="WH-T", name="Test"))
    async with store.read() as conn:
        assert [w.warehouse_id for w in await stock.list_warehouses(conn)] == ["WH-T"]
    assert await outbox(store) == []
