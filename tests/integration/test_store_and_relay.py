"""The shared runtime against real stores (SQLite, and PostgreSQL when
CROSSDOCK_TEST_PG_URL is set) and a real nats-server: migrations, the
transactional outbox, the inbox, and the relay with broker-side dedupe."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from crossdock.tms.v1 import messages_pb2 as tms_msgs
from services.mesh.bus import Bus, OutboxRelay
from services.mesh.store import Store
from services.tms.__main__ import MIGRATIONS
from services.tms.store import metadata
from tests.helpers import PG_URL, pg_database, pg_drop

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)"))]


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path):
    if request.param == "sqlite":
        url, cleanup = f"sqlite:///{tmp_path}/tms.db", None
    else:
        name = f"crossdock_test_{uuid.uuid4().hex[:10]}"
        url, cleanup = pg_database(PG_URL, name), name
    s = Store("tms", url, metadata)
    await s.migrate(MIGRATIONS)
    await s.migrate(MIGRATIONS)  # a second start upgrades nothing and keeps the data
    yield s
    await s.close()
    if cleanup:
        pg_drop(PG_URL, cleanup)


async def count(store: Store, table) -> int:
    async with store.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_outbox_row_commits_with_the_state_change_or_not_at_all(store):
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.emit("tms.shipment.booking_failed", tms_msgs.ShipmentBookingFailed(order_id="O1"))
            raise RuntimeError("crash before commit")
    assert await count(store, store.outbox) == 0
    async with store.transaction() as tx:
        await tx.emit("tms.shipment.booking_failed", tms_msgs.ShipmentBookingFailed(order_id="O1"))
    assert await count(store, store.outbox) == 1


async def test_emit_refuses_a_body_that_does_not_match_the_subject(store):
    with pytest.raises(TypeError):
        async with store.transaction() as tx:
            await tx.emit("tms.shipment.booked", tms_msgs.ShipmentBookingFailed(order_id="O1"))


async def test_inbox_claims_a_message_once(store):
    async with store.transaction() as tx:
        assert await tx.claim("c1", "m1") is True
    async with store.transaction() as tx:
        assert await tx.claim("c1", "m1") is False
        assert await tx.claim("c2", "m1") is True


async def test_relay_publishes_with_dedupe_id_and_empties_the_outbox(store, nats_server, nc):
    bus = Bus("tms", nats_server.url)
    await bus.connect()
    await bus.ensure_streams()
    await bus.ensure_streams()  # idempotent
    try:
        async with store.transaction() as tx:
            for i in range(300):  # more than one relay batch
                await tx.emit("tms.shipment.booking_failed",
                              tms_msgs.ShipmentBookingFailed(order_id=f"O{i}"), key=f"O{i}",
                              event_id=f"evt-{i}")
        relay = OutboxRelay(store, bus, poll_interval=0.1)
        while await relay.relay_once():
            pass
        assert await count(store, store.outbox) == 0
        # Relaying the same event id again (a crash between publish and delete)
        # is dropped by the broker's dedupe window.
        async with store.transaction() as tx:
            await tx.emit("tms.shipment.booking_failed", tms_msgs.ShipmentBookingFailed(order_id="O0"),
                          event_id="evt-0")
        await relay.relay_once()
        js = nc.jetstream()
        info = await js.stream_info("TMS")
        assert info.state.messages == 300
        msg = await js.get_msg("TMS", 1)
        assert msg.headers["ce-id"] == "evt-0" and msg.headers["Nats-Msg-Id"] == "evt-0"
        assert msg.headers["ce-type"] == "crossdock.tms.v1.ShipmentBookingFailed"
        assert msg.headers["ce-source"] == "crossdock/tms" and msg.headers["ce-specversion"] == "1.0"
    finally:
        await bus.close()
