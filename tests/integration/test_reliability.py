"""The shared runtime under failure, against a real nats-server and real
stores: retries and dead letters, replay, dedupe inside and outside the
broker's window, an ack after the ack wait, a broker restart, and the outbox
relay on PostgreSQL with rows committed out of id order."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import nats
import pytest
from sqlalchemy import insert, select

from crossdock.tms.v1 import messages_pb2 as tms_msgs
from services.mesh.bus import Bus, Consumer, OutboxRelay
from services.mesh.deadletters import DeadLetters
from services.mesh.store import Store
from services.tms.__main__ import MIGRATIONS
from services.tms.store import metadata
from tests.helpers import PG_URL, eventually, pg_database, pg_drop, publish

SUBJECT = "tms.shipment.booking_failed"


def failed(order_id: str) -> tms_msgs.ShipmentBookingFailed:
    return tms_msgs.ShipmentBookingFailed(order_id=order_id, reason_code="TEST")


@pytest.fixture
async def store(tmp_path):
    s = Store("tms", f"sqlite:///{tmp_path}/tms.db", metadata)
    await s.migrate(MIGRATIONS)
    yield s
    await s.close()


@pytest.fixture
async def bus(nats_server):
    b = Bus("test", nats_server.url)
    await b.connect()
    await b.ensure_streams()
    yield b
    await b.close()


class Recorder:
    """A handler that applies each order id once (effects counted) and fails on demand."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.effects: Counter = Counter()
        self.poison: set[str] = set()
        self.slow: dict[str, float] = {}

    async def __call__(self, env, tx) -> None:
        oid = env.body.order_id
        self.calls[oid] += 1
        if oid in self.slow:
            await asyncio.sleep(self.slow.pop(oid))
        if oid in self.poison:
            raise RuntimeError(f"cannot handle {oid} yet")
        self.effects[oid] += 1


def consumer(store, bus, handler, *, max_deliver=3, ack_wait=5.0, durable=None,
             subjects=(SUBJECT,)) -> Consumer:
    return Consumer(store=store, bus=bus, durable=durable or f"test-{uuid.uuid4().hex[:8]}", stream="TMS",
                    subjects=list(subjects), handlers={SUBJECT: handler}, max_deliver=max_deliver,
                    ack_wait=ack_wait, backoff=(0.05, 0.2))


async def running(c: Consumer):
    task = asyncio.create_task(c.run())
    return task


async def stop(c: Consumer, task) -> None:
    c.stop()
    await asyncio.wait_for(task, 10)


async def test_poison_message_is_tried_max_deliver_times_then_dead_lettered_while_others_flow(store, bus, nc):
    rec = Recorder()
    rec.poison.add("POISON")
    c = consumer(store, bus, rec, max_deliver=4)
    task = await running(c)
    await publish(nc, SUBJECT, failed("POISON"))
    for i in range(20):
        await publish(nc, SUBJECT, failed(f"OK{i}"))
    await eventually(lambda: all(rec.effects[f"OK{i}"] == 1 for i in range(20)), what="good messages")
    dlq = DeadLetters(bus)
    letters = await eventually(lambda: _letters(dlq, c.durable), what="poison dead-lettered")
    await stop(c, task)
    assert rec.calls["POISON"] == 4 and rec.effects["POISON"] == 0
    (raw,) = letters
    h = raw.headers
    assert h["crossdock-dlq-consumer"] == c.durable and h["crossdock-dlq-subject"] == SUBJECT
    assert h["crossdock-dlq-attempts"] == "4" and h["crossdock-dlq-permanent"] == "false"
    assert "cannot handle POISON" in h["crossdock-dlq-reason"]
    assert h["ce-type"] == "crossdock.tms.v1.ShipmentBookingFailed"
    body = tms_msgs.ShipmentBookingFailed()
    body.ParseFromString(raw.data)
    assert body.order_id == "POISON"


async def test_a_subject_with_no_handler_is_dead_lettered_with_the_reason_not_acked_unhandled(
        store, bus, nc):
    """A message on a subject the consumer's dispatch table does not name is a
    permanent error: parked with the reason at once, its inbox claim rolled back
    (so a replay after the fix is handled), and the messages around it flow."""
    rec = Recorder()
    other = "tms.shipment.dispatched"
    c = consumer(store, bus, rec, subjects=(SUBJECT, other))
    task = await running(c)
    await publish(nc, SUBJECT, failed("BEFORE"))
    orphan_id = await publish(nc, other, tms_msgs.ShipmentDispatched())
    await publish(nc, SUBJECT, failed("AFTER"))
    await eventually(lambda: rec.effects["BEFORE"] == 1 and rec.effects["AFTER"] == 1, what="neighbours")
    dlq = DeadLetters(bus)
    (raw,) = await eventually(lambda: _letters(dlq, c.durable), what="orphan dead-lettered")
    await stop(c, task)
    h = raw.headers
    assert h["crossdock-dlq-subject"] == other and h["crossdock-dlq-permanent"] == "true"
    assert h["ce-id"] == orphan_id
    assert f"no handler for {other}" in h["crossdock-dlq-reason"]
    async with store.read() as conn:
        claimed = (await conn.execute(select(store.inbox.c.message_id).where(
            store.inbox.c.consumer == c.durable))).scalars().all()
    assert orphan_id not in claimed and len(claimed) == 2


async def test_a_max_deliveries_advisory_sent_while_no_consumer_of_ours_listens_is_still_dead_lettered(
        store, bus, nc):
    """JetStream gives up on a message only when the next pull arrives, and says so
    with a core NATS advisory: one sent while no process of ours listens (here the
    pulls of a replica that hung on the message until it was killed) must not be lost."""
    rec = Recorder()
    c = consumer(store, bus, rec, max_deliver=2, ack_wait=1.0)
    await c.subscribe()  # the durable exists; nothing of ours consumes yet
    event_id = await publish(nc, SUBJECT, failed("STUCK"))
    sub = await nc.jetstream().pull_subscribe_bind(c.durable, "TMS")
    for attempt in (1, 2):  # every attempt taken, none acked
        (msg,) = await sub.fetch(1, timeout=10)
        assert msg.metadata.num_delivered == attempt
    # The next pull, once the last ack wait is over: JetStream gives up now.
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=3)
    await sub.unsubscribe()
    task = await running(c)
    (raw,) = await eventually(lambda: _letters(DeadLetters(bus), c.durable), timeout=15,
                              what="the given-up message dead-lettered")
    await stop(c, task)
    h = raw.headers
    assert h["ce-id"] == event_id and h["crossdock-dlq-attempts"] == "2"
    assert "no ack within" in h["crossdock-dlq-reason"] and rec.calls["STUCK"] == 0


async def _letters(dlq: DeadLetters, durable: str):
    raws, _, _ = await dlq.list(consumer=durable)
    return raws


async def test_undecodable_body_is_dead_lettered_at_once_as_permanent(store, bus, nc):
    rec = Recorder()
    c = consumer(store, bus, rec)
    task = await running(c)
    js = nc.jetstream()
    await js.publish(SUBJECT, b"\xff\xfe not protobuf", headers={
        "ce-id": "bad-1", "ce-type": "crossdock.tms.v1.ShipmentBookingFailed", "Nats-Msg-Id": "bad-1"})
    await js.publish(SUBJECT, failed("X").SerializeToString(), headers={
        "ce-id": "bad-2", "ce-type": "crossdock.wms.v1.Nonsense", "Nats-Msg-Id": "bad-2"})
    letters = await eventually(lambda: _n_letters(DeadLetters(bus), c.durable, 2), what="2 dead letters")
    await stop(c, task)
    assert {raw.headers["crossdock-dlq-permanent"] for raw in letters} == {"true"}
    reasons = " ".join(raw.headers["crossdock-dlq-reason"] for raw in letters)
    assert "undecodable" in reasons and "does not match" in reasons
    assert sum(rec.calls.values()) == 0


async def _n_letters(dlq, durable, n):
    raws = await _letters(dlq, durable)
    return raws if len(raws) >= n else None


async def test_replay_after_the_fix_applies_once_and_a_second_replay_is_absorbed(store, bus, nc):
    rec = Recorder()
    rec.poison.add("LATE")
    c = consumer(store, bus, rec, max_deliver=2)
    task = await running(c)
    await publish(nc, SUBJECT, failed("LATE"))
    dlq = DeadLetters(bus)
    (raw,) = await eventually(lambda: _letters(dlq, c.durable), what="dead letter")
    rec.poison.clear()  # the cause is fixed
    # A second copy, as if the same message had been dead-lettered twice
    # (the dead-letter stream itself dedupes on the event id, so force it in).
    await nc.jetstream().publish(raw.subject, raw.data,
                                 headers={**raw.headers, "Nats-Msg-Id": "second-copy"})
    first, second = await eventually(lambda: _n_letters(dlq, c.durable, 2), what="two copies")
    await dlq.replay(str(first.seq))
    await eventually(lambda: rec.effects["LATE"] == 1, what="replayed message applied")
    await dlq.replay(str(second.seq))
    await eventually(lambda: c.stats.duplicates >= 1, what="second replay seen")
    await stop(c, task)
    assert rec.effects["LATE"] == 1
    assert await _letters(dlq, c.durable) == []


async def test_same_event_twice_inside_and_outside_the_dedupe_window_has_one_effect(store, bus, nc):
    rec = Recorder()
    c = consumer(store, bus, rec)
    task = await running(c)
    js = nc.jetstream()
    before = (await js.stream_info("TMS")).state.messages
    await publish(nc, SUBJECT, failed("DUP"), event_id="evt-dup")
    await publish(nc, SUBJECT, failed("DUP"), event_id="evt-dup")  # inside the window: dropped by the broker
    assert (await js.stream_info("TMS")).state.messages == before + 1
    # Outside the window (or a relay outage longer than it): a new Nats-Msg-Id,
    # the same ce-id. The broker keeps it; the consumer's inbox absorbs it.
    headers = {"ce-id": "evt-dup", "ce-type": "crossdock.tms.v1.ShipmentBookingFailed",
               "Nats-Msg-Id": "evt-dup-after-window"}
    await js.publish(SUBJECT, failed("DUP").SerializeToString(), headers=headers)
    await eventually(lambda: c.stats.duplicates == 1, what="duplicate absorbed")
    await stop(c, task)
    assert rec.effects["DUP"] == 1


async def test_an_ack_after_the_ack_wait_still_has_one_effect(store, bus, nc):
    rec = Recorder()
    rec.slow["SLOW"] = 2.5  # longer than the ack wait: redelivered to the other replica meanwhile
    durable = f"test-{uuid.uuid4().hex[:8]}"
    a = consumer(store, bus, rec, ack_wait=1.0, durable=durable)
    b = consumer(store, bus, rec, ack_wait=1.0, durable=durable)
    tasks = [await running(a), await running(b)]
    await publish(nc, SUBJECT, failed("SLOW"))
    await eventually(lambda: a.stats.duplicates + b.stats.duplicates >= 1, timeout=20,
                     what="the redelivery absorbed")
    for c, t in zip((a, b), tasks, strict=True):
        await stop(c, t)
    assert rec.effects["SLOW"] == 1


async def test_max_deliveries_advisory_dead_letters_a_message_whose_last_attempt_timed_out(store, bus, nc):
    c = consumer(store, bus, Recorder(), max_deliver=2, ack_wait=1.0)
    await c.subscribe()
    watcher = asyncio.create_task(c._dead_letter_given_up())  # listening all along this time
    await publish(nc, SUBJECT, failed("HUNG"))
    # A process that takes the message and dies, twice (raw subscription, never acks).
    js = nc.jetstream()
    raw_sub = await js.pull_subscribe_bind(c.durable, "TMS")
    for _ in range(2):
        await eventually(lambda: _fetch_one(raw_sub), timeout=10, what="a delivery")
    async def dead_lettered():
        await _fetch_one(raw_sub)  # the server decides "max deliveries" on its next delivery attempt
        return await _letters(DeadLetters(bus), c.durable)

    (raw,) = await eventually(dead_lettered, timeout=15, what="advisory")
    c.stop()
    await asyncio.wait_for(watcher, 10)
    assert raw.headers["crossdock-dlq-attempts"] == "2"
    assert "no ack" in raw.headers["crossdock-dlq-reason"]


async def _fetch_one(sub):
    try:
        return await sub.fetch(1, timeout=0.5)
    except nats.errors.TimeoutError:
        return None


async def test_consumers_and_relay_survive_a_broker_restart(store, nats_server, nc):
    bus = Bus("test", nats_server.url)
    await bus.connect()
    await bus.ensure_streams()
    rec = Recorder()
    c = consumer(store, bus, rec)
    relay = OutboxRelay(store, bus, poll_interval=0.1)
    tasks = [await running(c), asyncio.create_task(relay.run())]
    async with store.transaction() as tx:
        await tx.emit(SUBJECT, failed("BEFORE"))
    await eventually(lambda: rec.effects["BEFORE"] == 1, what="before restart")
    nats_server.stop()
    async with store.transaction() as tx:  # committed while the broker is down
        await tx.emit(SUBJECT, failed("DURING"))
    nats_server.start()
    async with store.transaction() as tx:
        await tx.emit(SUBJECT, failed("AFTER"))
    await eventually(lambda: rec.effects["DURING"] == 1 and rec.effects["AFTER"] == 1, timeout=30,
                     what="messages after the restart")
    relay.stop()
    await stop(c, tasks[0])
    await asyncio.wait_for(tasks[1], 10)
    await bus.close()
    assert rec.effects == Counter({"BEFORE": 1, "DURING": 1, "AFTER": 1})


@pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")
async def test_relay_on_postgresql_publishes_rows_committed_out_of_id_order(bus, nc):
    name = f"crossdock_test_{uuid.uuid4().hex[:10]}"
    store = Store("tms", pg_database(PG_URL, name), metadata)
    try:
        await store.migrate(MIGRATIONS)
        relay = OutboxRelay(store, bus, poll_interval=0.1)
        before = (await nc.jetstream().stream_info("TMS")).state.messages
        slow = await store.engine.connect()
        slow_tx = await slow.begin()
        await slow.execute(insert(store.outbox).values(  # takes the lower id, commits last
            event_id="slow-1", subject=SUBJECT, headers='{"Nats-Msg-Id": "slow-1"}',
            payload=failed("SLOW").SerializeToString(), created_at=_now()))
        async with store.transaction() as tx:
            await tx.emit(SUBJECT, failed("FAST"), event_id="fast-1")
        assert await relay.relay_once() == 1
        await slow_tx.commit()
        await slow.close()
        assert await relay.relay_once() == 1
        assert (await nc.jetstream().stream_info("TMS")).state.messages == before + 2
    finally:
        await store.close()
        pg_drop(PG_URL, name)


def _now():
    from services.mesh.store import utcnow

    return utcnow()


async def test_a_relay_never_deletes_a_row_another_replica_committed_meanwhile(store, bus):
    """SQLite reuses the id of a deleted last row: replica B relays and deletes
    X while replica A is publishing it, then a new Y takes X's id; A must not
    delete Y when it finishes."""
    relay_a, relay_b = OutboxRelay(store, bus, poll_interval=0.1), OutboxRelay(store, bus, poll_interval=0.1)
    async with store.transaction() as tx:
        await tx.emit(SUBJECT, failed("X"), event_id="x-1")
    publish_a = relay_a._publish

    async def interleaved(rows):
        assert await relay_b.relay_once() == 1
        async with store.transaction() as tx:
            await tx.emit(SUBJECT, failed("Y"), event_id="y-1")
        await publish_a(rows)

    relay_a._publish = interleaved
    await relay_a.relay_once()
    async with store.read() as conn:
        left = (await conn.execute(store.outbox.select())).all()
    assert [r.event_id for r in left] == ["y-1"]


async def test_a_fetched_batch_commits_together_and_a_poison_message_in_it_is_retried_alone(store, bus, nc):
    """Messages already waiting are fetched together and handled in one
    transaction (fewer transactions than messages); a poison message in the
    middle rolls back only itself: every good one has exactly one effect and one
    handler call, the poison is called once per delivery and dead-lettered."""
    from services.mesh.store import STORE_TRANSACTIONS

    rec = Recorder()
    rec.poison.add("POISON")
    ids = [f"B{i}" for i in range(15)] + ["POISON"] + [f"A{i}" for i in range(15)]
    for oid in ids:
        await publish(nc, SUBJECT, failed(oid))
    # The same event id again: the inbox drops it inside the same batch.
    dup_id = await publish(nc, SUBJECT, failed("DUP"))
    await nc.jetstream().publish(SUBJECT, failed("DUP").SerializeToString(), headers={
        "ce-id": dup_id, "ce-type": "crossdock.tms.v1.ShipmentBookingFailed",
        "Nats-Msg-Id": dup_id + "-again"})
    before = STORE_TRANSACTIONS._value.get()
    c = consumer(store, bus, rec, max_deliver=3)
    task = await running(c)
    good = [oid for oid in ids if oid != "POISON"] + ["DUP"]
    await eventually(lambda: all(rec.effects[oid] == 1 for oid in good), what="good messages")
    letters = await eventually(lambda: _letters(DeadLetters(bus), c.durable), what="poison dead-lettered")
    await stop(c, task)
    assert all(rec.calls[oid] == 1 for oid in good), rec.calls
    assert rec.calls["POISON"] == 3 and rec.effects["POISON"] == 0
    assert c.stats.handled == len(good) and c.stats.duplicates == 1
    assert len(letters) == 1 and letters[0].headers["crossdock-dlq-attempts"] == "3"
    # 32 messages handled in fewer transactions than messages.
    assert STORE_TRANSACTIONS._value.get() - before < len(good)


async def test_the_relay_keeps_publishing_while_a_long_transaction_holds_the_write_lock(store, bus, nc):
    """SQLite: deleting a published batch waits for the store's write connection;
    publishing the next batches does not. Every row is published in order, once
    the lock is free the outbox empties, and nothing is published twice."""
    from sqlalchemy import func, select

    ids = [f"R{i}" for i in range(700)]  # several relay batches
    async with store.transaction() as tx:
        for oid in ids:
            await tx.emit(SUBJECT, failed(oid))
    js = nc.jetstream()
    first = (await js.stream_info("TMS")).state.last_seq
    relay = OutboxRelay(store, bus, poll_interval=0.1)
    task = asyncio.create_task(relay.run())

    async def published():
        return (await js.stream_info("TMS")).state.last_seq - first

    async with store.transaction() as tx:  # holds the write lock until everything is out
        await eventually(lambda: _at_least(published(), len(ids)), what="all rows published under the lock")
        await tx.conn.execute(insert(store.outbox).values(  # this transaction's own row, still works
            event_id=str(uuid.uuid4()), subject=SUBJECT, headers="{}", payload=b"", created_at=_now()))
        await tx.conn.execute(store.outbox.delete().where(store.outbox.c.headers == "{}"))

    async def outbox_rows():
        async with store.read() as conn:
            return (await conn.execute(select(func.count()).select_from(store.outbox))).scalar()

    await eventually(lambda: _equals(outbox_rows(), 0), what="outbox emptied after the lock")
    relay.stop()
    await asyncio.wait_for(task, 10)
    assert await published() == len(ids)
    sub = await js.pull_subscribe(SUBJECT, durable=f"check-{uuid.uuid4().hex[:6]}", stream="TMS")
    seen = []
    while len(seen) < len(ids):
        for m in await sub.fetch(256, timeout=5):
            body = tms_msgs.ShipmentBookingFailed()
            body.ParseFromString(m.data)
            seen.append(body.order_id)
            await m.ack()
    assert seen == ids  # oldest first, each once


async def _at_least(value, n):
    return await value >= n


async def _equals(value, n):
    return await value == n


def _now():
    from services.mesh.store import utcnow

    return utcnow()


async def test_a_batch_whose_transaction_ran_out_of_time_commits_and_goes_on_in_the_next(store, bus, nc):
    """With a tiny transaction time budget every message of a fetched batch ends
    up in a transaction of its own: each still handled once, acked, none lost."""
    from services.mesh.store import STORE_TRANSACTIONS

    rec = Recorder()
    ids = [f"T{i}" for i in range(12)]
    for oid in ids:
        await publish(nc, SUBJECT, failed(oid))
    c = Consumer(store=store, bus=bus, durable=f"test-{uuid.uuid4().hex[:8]}", stream="TMS",
                 subjects=[SUBJECT], handlers={SUBJECT: rec}, max_deliver=3, ack_wait=5.0,
                 backoff=(0.05, 0.2), tx_max_s=1e-9)
    before = STORE_TRANSACTIONS._value.get()
    task = await running(c)
    await eventually(lambda: all(rec.effects[oid] == 1 for oid in ids), what="every message")
    await stop(c, task)
    assert c.stats.handled == len(ids) and all(rec.calls[oid] == 1 for oid in ids)
    assert STORE_TRANSACTIONS._value.get() - before == len(ids)
    await bus.nc.flush()  # acks are fire-and-forget
    info = await nc.jetstream().consumer_info("TMS", c.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0
