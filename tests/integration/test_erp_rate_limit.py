"""A cloud ERP's API limit: a burst of 5,000 WMS inventory events is absorbed
by the stream and posted into ERP no faster than CROSSDOCK_ERP_POSTING_RATE,
and every posting lands."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime

from crossdock.wms.v1 import messages_pb2 as wms_msgs
from tests.helpers import eventually

RATE = 1000
SKUS, PER_SKU = 10, 500


async def test_a_burst_of_inventory_events_is_posted_within_the_rate_limit(start_service, nc, data_dir):
    start_service("erp", CROSSDOCK_ERP_POSTING_RATE=str(RATE))
    js = nc.jetstream()
    acks = []
    for seq in range(1, PER_SKU + 1):
        for i in range(SKUS):
            body = wms_msgs.InventoryAdjusted(sku=f"SKU-{i}", warehouse_id="WH-1", delta=1,
                                              on_hand_after=seq, sequence=seq, reason=1)
            eid = f"burst-{i}-{seq}"
            acks.append(await js.publish_async("wms.inventory.adjusted", body.SerializeToString(), headers={
                "ce-id": eid, "Nats-Msg-Id": eid, "ce-type": "crossdock.wms.v1.InventoryAdjusted"}))
    await asyncio.gather(*acks)

    def applied():
        with sqlite3.connect(data_dir / "erp.db") as db:
            return db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == SKUS * PER_SKU
    await eventually(applied, timeout=120, interval=0.5, what="every posting applied")

    with sqlite3.connect(data_dir / "erp.db") as db:
        times = sorted(datetime.fromisoformat(t).timestamp()
                       for (t,) in db.execute("SELECT applied_at FROM ledger_entries"))
        on_hand = dict(db.execute("SELECT sku, on_hand FROM ledger_positions").fetchall())
    assert on_hand == {f"SKU-{i}": PER_SKU for i in range(SKUS)}
    # No one-second window holds more postings than the limit (plus the
    # limiter's initial burst allowance of one second's worth).
    busiest, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    assert busiest <= 2 * RATE, busiest
    # Sustained: the whole burst took at least (N − burst) / rate seconds.
    assert times[-1] - times[0] >= (len(times) - RATE) / RATE * 0.95
