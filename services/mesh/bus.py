"""NATS JetStream: streams, the outbox relay and durable pull consumers.

- Streams are provisioned idempotently at start (file storage).
- ``OutboxRelay`` publishes committed outbox rows with ``Nats-Msg-Id`` = event
  id (JetStream drops a duplicate inside the dedupe window; the consumer's
  inbox drops one outside it) and deletes them once the broker acked.
- ``Consumer`` fetches from a durable pull consumer and runs each message's
  handler inside a store transaction that also records the message id.
  Success -> ack; a retryable error -> nak with jittered exponential
  back-off; a permanent one (undecodable body, invalid command), or a
  retryable one on the last attempt -> the dead-letter stream, then term.
- Batching: the messages of one fetch (up to ``consumer_tx_batch``) are
  handled in ONE store transaction (committed early once it has been open for
  ``consumer_tx_max_ms``, the rest going into the next), each claimed in the
  inbox as before, and acked together once it committed. Each message runs in its own SAVEPOINT:
  a handler that fails rolls back only its message, which is retried or
  dead-lettered exactly as without batching while the others commit. If the
  transaction itself fails, the messages are handled again one at a time.
- A message whose last attempt timed out (the process died or hung past the
  ack wait) is reported by JetStream's MAX_DELIVERIES advisory: it goes to
  the dead-letter stream too.
- After a reconnect every consumer re-binds its pull subscription (a pull
  subscription can stop receiving after a server restart: nats.py issue 504).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from aiolimiter import AsyncLimiter
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from sqlalchemy import delete, select

from . import contracts, faults, metrics, telemetry
from .store import Store, Tx, utcnow

log = structlog.get_logger()

DUPLICATE_WINDOW_S = 30 * 60
STREAM_MAX_AGE_S = 14 * 24 * 3600


class NotBatchable(Exception):
    """Raised by a batch handler for a batch it does not take: handled one by one instead."""


class PermanentError(Exception):
    """The message can never succeed (bad body, impossible command): do not retry."""


@dataclass(frozen=True)
class Envelope:
    """A decoded message: CloudEvents attributes plus the Protobuf body."""

    id: str
    type: str
    source: str
    subject: str
    key: str
    time: datetime | None
    body: Message
    attempt: int
    trace_id: str


Handler = Callable[[Envelope, Tx], Awaitable[None]]
# A consumer's dispatch table: subject -> its handler. A subject with no
# entry is refused (dead-lettered with the reason), never acked unhandled.
Handlers = Mapping[str, Handler]


def body_to(use_case: Callable[[Tx, Any], Awaitable[object]]) -> Handler:
    """A handler that hands the message body to a use case, ``use_case(tx, body)``."""
    async def handle(env: Envelope, tx: Tx) -> None:
        await use_case(tx, env.body)
    handle.__name__ = handle.__qualname__ = getattr(use_case, "__name__", "handle")
    return handle


# Many messages of a batch at once (each already claimed): a set-based handler.
BatchHandler = Callable[[list[Envelope], Tx], Awaitable[None]]


def decode(msg: Msg) -> Envelope:
    headers = msg.headers or {}
    try:
        expected = contracts.message_type(msg.subject)
    except KeyError as exc:
        raise PermanentError(str(exc)) from None
    ce_id = headers.get("ce-id") or headers.get("Nats-Msg-Id")
    ce_type = headers.get("ce-type")
    if not ce_id:
        raise PermanentError("missing ce-id header")
    if ce_type != contracts.type_name(expected):
        raise PermanentError(
            f"ce-type {ce_type!r} does not match {msg.subject} ({contracts.type_name(expected)})"
        )
    body = expected()
    try:
        body.ParseFromString(msg.data)
    except DecodeError as exc:
        raise PermanentError(f"undecodable {ce_type} body: {exc}") from None
    time = None
    if ce_time := headers.get("ce-time"):
        try:
            time = datetime.fromisoformat(ce_time)
        except ValueError:
            time = None
    attempt = msg.metadata.num_delivered if msg.reply else 1
    return Envelope(
        id=ce_id,
        type=ce_type,
        source=headers.get("ce-source", ""),
        subject=msg.subject,
        key=headers.get("ce-subject", ""),
        time=time,
        body=body,
        attempt=attempt,
        trace_id="",
    )


class Bus:
    def __init__(self, service: str, url: str, *, replicas: int = 1) -> None:
        self.service = service
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.replicas = replicas
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        # Bumped on every reconnect: consumers re-bind their subscriptions.
        self.generation = 0

    async def connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", error=str(exc))

        async def on_disconnect() -> None:
            metrics.nats_connected(False)
            log.warning("nats.disconnected")

        async def on_reconnect() -> None:
            self.generation += 1
            metrics.nats_connected(True)
            log.info("nats.reconnected", url=str(self.nc.connected_url.netloc if self.nc else ""))

        self.nc = await nats.connect(
            servers=self.servers,
            name=f"crossdock-{self.service}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        self.js = self.nc.jetstream(publish_async_max_pending=4000)
        metrics.nats_connected(True)

    async def ensure_streams(self) -> None:
        """Create every stream, or bring its config up to date (idempotent)."""
        assert self.js is not None
        for name, subjects in contracts.STREAMS.items():
            config = StreamConfig(
                name=name,
                subjects=subjects,
                storage=StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=DUPLICATE_WINDOW_S,
                max_age=STREAM_MAX_AGE_S,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)

    async def close(self) -> None:
        # Consumers have stopped and acked what they handled: flush the acks
        # and close (nats.py's drain() can hang on pull subscriptions).
        if self.nc and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.flush(), 2)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            await self.nc.close()
            metrics.nats_connected(False)


class OutboxRelay:
    """Publishes committed outbox rows, oldest first, and deletes them once acked.

    On SQLite the loop (``run``) does not wait for the delete of a published
    batch before publishing the next: deletes need the store's single write
    connection, which a long transaction (a big receipt, a consumer batch) may
    hold for a while. Published rows are remembered (and skipped by the next
    reads) until a background delete, which takes every published id at once,
    has committed; at most ``max_unconfirmed`` such rows. A crash before that
    delete re-publishes them at the next start: the broker drops the copies
    (same ``Nats-Msg-Id``), as for any crash between publish and delete.
    """

    def __init__(self, store: Store, bus: Bus, *, poll_interval: float, batch: int = 256,
                 max_unconfirmed: int = 4096):
        self.store = store
        self.bus = bus
        self.poll_interval = poll_interval
        self.batch = batch
        self.max_unconfirmed = max_unconfirmed
        self._wake = asyncio.Event()
        self._stopping = False
        # Published, not deleted yet (SQLite loop only).
        self._published: set[str] = set()
        self._deleted = asyncio.Event()
        self._deleter: asyncio.Task | None = None
        store.on_commit(self._wake.set)

    async def run(self) -> None:
        backoff = 0.2
        pipelined = self.store.dialect != "postgresql"
        try:
            while not self._stopping:
                try:
                    sent = await (self._relay_pipelined() if pipelined else self.relay_once())
                    backoff = 0.2
                except Exception as exc:  # noqa: BLE001 - broker down: keep the rows, retry
                    log.warning("outbox.relay_failed", error=str(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if sent == self.batch:
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                except TimeoutError:
                    pass
        finally:
            if self._deleter is not None:
                self._deleter.cancel()

    async def _relay_pipelined(self) -> int:
        """SQLite: publish the next oldest rows not published yet; delete in the background."""
        while len(self._published) >= self.max_unconfirmed:
            self._deleted.clear()
            self._start_deleter()
            await self._deleted.wait()
        outbox = self.store.outbox
        query = (select(outbox.c.event_id, outbox.c.subject, outbox.c.headers, outbox.c.payload)
                 .order_by(outbox.c.id).limit(self.batch + len(self._published)))
        # Everything published so far is in this set before the read starts: a
        # delete committing during the read cannot make a published row look new.
        published = set(self._published)
        async with self.store.read() as conn:
            rows = [r for r in (await conn.execute(query)).all() if r.event_id not in published]
        rows = rows[:self.batch]
        await self._publish(rows)
        if rows:
            self._published.update(r.event_id for r in rows)
            self._start_deleter()
        return len(rows)

    def _start_deleter(self) -> None:
        if self._deleter is None or self._deleter.done():
            self._deleter = asyncio.create_task(self._delete_published(), name="outbox-delete")

    async def _delete(self, ids: list[str]) -> None:
        """Delete published rows by event id, in one transaction."""
        outbox = self.store.outbox
        async with self.store.transaction() as tx:
            for i in range(0, len(ids), 500):
                await tx.conn.execute(delete(outbox).where(outbox.c.event_id.in_(ids[i:i + 500])))

    async def _delete_published(self) -> None:
        while self._published:
            ids = list(self._published)
            try:
                await self._delete(ids)
            except Exception as exc:  # noqa: BLE001 - kept; deleted by a later attempt
                log.warning("outbox.delete_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            self._published.difference_update(ids)
            self._deleted.set()

    async def relay_once(self) -> int:
        """Publish one batch of the oldest outbox rows and delete them; returns how many.

        (Also used to flush at shutdown: rows the loop published and has not
        deleted yet are deleted first.)"""
        outbox = self.store.outbox
        if self._published and self.store.dialect != "postgresql":
            ids = list(self._published)
            await self._delete(ids)
            self._published.difference_update(ids)
        # Rows are deleted by event id, never by id: SQLite reuses the id of a
        # deleted last row, and a replica's relay may delete a row that another
        # replica's transaction has just taken that id for.
        query = (select(outbox.c.event_id, outbox.c.subject, outbox.c.headers, outbox.c.payload)
                 .order_by(outbox.c.id).limit(self.batch))
        if self.store.dialect == "postgresql":
            # Replicas share the outbox: each row is relayed by the one that
            # locked it. Rows committed out of id order are simply picked up
            # by a later sweep (nothing is skipped: published rows are deleted).
            async with self.store.transaction() as tx:
                rows = (await tx.conn.execute(query.with_for_update(skip_locked=True))).all()
                await self._publish(rows)
                await tx.conn.execute(delete(outbox).where(outbox.c.event_id.in_([r.event_id for r in rows])))
            return len(rows)
        # SQLite: never hold the write lock across network I/O. Two replicas may
        # publish the same row; the broker drops the copy (same Nats-Msg-Id).
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        await self._publish(rows)
        if rows:
            await self._delete([r.event_id for r in rows])
        return len(rows)

    async def _publish(self, rows) -> None:
        if not rows:
            return
        js = self.bus.js
        assert js is not None
        futures = [
            await js.publish_async(row.subject, row.payload, headers=json.loads(row.headers))
            for row in rows
        ]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        faults.crash_point("after_publish_before_delete")

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


DLQ_PREFIX = "dlq."
ADVISORY_STREAM = "ADVISORIES"


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential back-off with jitter: base·2^(attempt−1), capped, times 0.5–1."""
    return min(base * 2 ** max(attempt - 1, 0), cap) * random.uniform(0.5, 1.0)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    retries: int = 0
    dead_lettered: int = 0


class Consumer:
    """A durable pull consumer whose handler runs in an idempotent transaction."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        durable: str,
        stream: str,
        subjects: list[str],
        handlers: Handlers,
        max_deliver: int,
        ack_wait: float,
        backoff: tuple[float, float] = (0.5, 30.0),
        limiter: AsyncLimiter | None = None,
        batch: int = 64,
        tx_batch: int = 64,
        tx_max_s: float = 0.05,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.store = store
        self.batch_handler = batch_handler
        self.bus = bus
        self.durable = durable
        self.stream = stream
        self.subjects = subjects
        self.handlers = handlers
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.backoff = backoff
        self.limiter = limiter
        self.batch = batch
        self.tx_batch = tx_batch
        self.tx_max_s = tx_max_s
        self._stopping = False
        self.stats = ConsumerStats()

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.bus.js
        assert js is not None
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=1000,
            filter_subjects=self.subjects if len(self.subjects) > 1 else None,
            filter_subject=self.subjects[0] if len(self.subjects) == 1 else None,
        )
        await js.add_consumer(self.stream, config)
        return await js.pull_subscribe_bind(self.durable, self.stream)

    async def run(self) -> None:
        sub, generation = None, -1
        given_up = asyncio.create_task(self._dead_letter_given_up())
        while not self._stopping:
            try:
                if sub is None or generation != self.bus.generation:
                    generation = self.bus.generation
                    sub = await self.subscribe()
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats.errors.TimeoutError is one too)
                continue
            except Exception as exc:  # noqa: BLE001 - broker away: re-bind and keep consuming
                log.warning("consumer.fetch_failed", consumer=self.durable, error=repr(exc))
                sub = None
                await asyncio.sleep(0.5)
                continue
            # Finish the messages in hand even when asked to stop.
            for i in range(0, len(msgs), self.tx_batch):
                await self.process_batch(msgs[i:i + self.tx_batch])
        await given_up
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    async def process_batch(self, msgs: list[Msg]) -> None:
        """Handle fetched messages in as few store transactions as possible.

        Messages go into one transaction until it has been open for
        ``tx_max_s`` (then it commits and the rest go into the next one, so
        a gRPC call waiting for the store's write connection never waits
        long); each transaction is acked after it commits. Each message is
        claimed and handled inside its own SAVEPOINT: a handler that fails
        rolls back only its own message, which is then retried or
        dead-lettered exactly as ``process`` does (one handler call per
        delivery, as without batching). Should a transaction itself fail
        (e.g. at commit), its messages are handled again one at a time.
        """
        if len(msgs) == 1 or self.tx_batch == 1:
            for msg in msgs:
                await self.process(msg)
            return
        todo: list[tuple[Msg, Envelope]] = []
        for msg in msgs:
            try:
                env = decode(msg)
            except PermanentError as exc:
                await self.dead_letter(msg, str(exc), permanent=True)
                continue
            if self.limiter:
                await metrics.acquire_posting(self.limiter, self.durable)
            try:
                # Latency is served outside the transaction (never holding the write lock).
                await faults.slow_or_failing(self.durable)
            except faults.InjectedFault as exc:
                await self._failed(msg, env, exc)
                continue
            todo.append((msg, env))
        if self.batch_handler is not None and len(todo) > 1 and await self._handle_at_once(todo):
            return
        while todo:
            todo = await self._handle_group(todo)

    async def _handle_at_once(self, todo: list[tuple[Msg, Envelope]]) -> bool:
        """The set-based path: claim every message with one statement and hand the new ones
        to ``batch_handler`` in one transaction. False (nothing committed) when it fails
        or declines (NotBatchable): the caller then handles them one by one as usual."""
        with telemetry.tracer().start_as_current_span(
            f"{todo[0][0].subject} process batch", kind=SpanKind.CONSUMER,
            links=[Link(ctx) for msg, _ in todo
                   if (ctx := trace.get_current_span(
                       telemetry.extract(msg.headers or {})).get_span_context()).is_valid],
            attributes={"messaging.system": "nats", "messaging.batch.message_count": len(todo),
                        "messaging.consumer.group.name": self.durable},
        ):
            try:
                async with self.store.transaction() as tx:
                    claimed = await tx.claim_many(self.durable, [env.id for _, env in todo])
                    fresh, seen = [], set()
                    for _, env in todo:
                        if env.id in claimed and env.id not in seen:
                            fresh.append(env)
                            seen.add(env.id)
                    if fresh:
                        await self.batch_handler(fresh, tx)
            except NotBatchable:
                return False
            except Exception as exc:  # noqa: BLE001 - nothing committed: one by one instead
                log.info("consumer.batch_handler_failed", consumer=self.durable, size=len(todo),
                         error=repr(exc))
                return False
        for _ in todo:
            faults.crash_point("after_effect_before_ack")
        first = set()
        for msg, env in todo:
            await msg.ack()
            self._handled(msg, env, env.id in claimed and env.id not in first)
            first.add(env.id)
        return True

    async def _handle_group(self, todo: list[tuple[Msg, Envelope]]) -> list[tuple[Msg, Envelope]]:
        """Handle messages from the front of ``todo`` in one transaction; returns the rest."""
        done: list[tuple[Msg, Envelope, bool]] = []
        failed: list[tuple[Msg, Envelope, Exception]] = []
        taken = 0
        started = time.monotonic()
        try:
            async with self.store.transaction() as tx:
                for msg, env in todo:
                    if taken and time.monotonic() - started > self.tx_max_s:
                        break
                    taken += 1
                    # One SAVEPOINT statement per message, never released: COMMIT
                    # keeps them all, ROLLBACK TO undoes only this message (a
                    # release would cost one more round trip to the driver thread).
                    savepoint = f"crossdock_msg_{taken}"
                    await tx.conn.exec_driver_sql(f"SAVEPOINT {savepoint}")
                    with self._span(msg, env):
                        try:
                            claimed = await tx.claim(self.durable, env.id)
                            if claimed:
                                await self.handler_for(env)(env, tx)
                        except Exception as exc:  # noqa: BLE001 - only this message is rolled back
                            await tx.conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {savepoint}")
                            failed.append((msg, env, exc))
                            continue
                    done.append((msg, env, claimed))
        except Exception as exc:  # noqa: BLE001 - nothing committed: each message again, on its own
            log.warning("consumer.batch_failed", consumer=self.durable, size=taken, error=repr(exc))
            for msg, _env in todo[:taken]:
                await self.process(msg, limited=False)
            return todo[taken:]
        for _ in done:
            faults.crash_point("after_effect_before_ack")
        for msg, env, claimed in done:
            await msg.ack()
            self._handled(msg, env, claimed)
        for msg, env, exc in failed:
            await self._failed(msg, env, exc)
        return todo[taken:]

    async def _failed(self, msg: Msg, env: Envelope, exc: Exception) -> None:
        """A handling attempt failed: dead-letter (permanent, or the last attempt) or nak with back-off."""
        if isinstance(exc, PermanentError):
            await self.dead_letter(msg, str(exc), permanent=True, attempts=env.attempt)
            return
        if env.attempt >= self.max_deliver:
            await self.dead_letter(msg, repr(exc), permanent=False, attempts=env.attempt)
            return
        self.stats.retries += 1
        delay = backoff_delay(env.attempt, *self.backoff)
        log.warning("message.retry", consumer=self.durable, subject=msg.subject,
                    id=env.id, attempt=env.attempt, delay=round(delay, 2), error=repr(exc))
        try:
            await msg.nak(delay=delay)
        except Exception:  # noqa: BLE001 - the ack wait will redeliver it
            pass

    def handler_for(self, env: Envelope) -> Handler:
        """The dispatch table's handler of the message's subject; a subject with none is a
        permanent error (its claim rolls back with it, so a replay after a fix is handled)."""
        try:
            return self.handlers[env.subject]
        except KeyError:
            raise PermanentError(f"consumer {self.durable} has no handler for {env.subject}") from None

    def _span(self, msg: Msg, env: Envelope):
        return telemetry.tracer().start_as_current_span(
            f"{msg.subject} process",
            context=telemetry.extract(msg.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject,
                        "messaging.message.id": env.id, "messaging.consumer.group.name": self.durable},
        )

    def _handled(self, msg: Msg, env: Envelope, claimed: bool) -> None:
        if claimed:
            self.stats.handled += 1
            metrics.observe_event_lag(self.durable, env.time)
            log.debug("message.handled", consumer=self.durable, subject=msg.subject, id=env.id)
        else:
            self.stats.duplicates += 1
            log.info("message.duplicate", consumer=self.durable, subject=msg.subject, id=env.id)

    async def process(self, msg: Msg, *, limited: bool = True) -> None:
        try:
            env = decode(msg)
        except PermanentError as exc:
            await self.dead_letter(msg, str(exc), permanent=True)
            return
        with self._span(msg, env):
            try:
                if self.limiter and limited:
                    await metrics.acquire_posting(self.limiter, self.durable)
                await faults.slow_or_failing(self.durable)
                async with self.store.transaction() as tx:
                    claimed = await tx.claim(self.durable, env.id)
                    if claimed:
                        await self.handler_for(env)(env, tx)
                faults.crash_point("after_effect_before_ack")
                await msg.ack()
                self._handled(msg, env, claimed)
            except Exception as exc:  # noqa: BLE001 - dead letter or retry with back-off
                await self._failed(msg, env, exc)

    async def dead_letter(self, msg: Msg, reason: str, *, permanent: bool, attempts: int = 1,
                          subject: str | None = None, headers: dict | None = None,
                          data: bytes | None = None, stream_seq: int | None = None) -> None:
        """Park a message on dlq.<consumer> with why, then stop its delivery."""
        original = dict(headers if headers is not None else (msg.headers or {}))
        subject = subject or msg.subject
        if stream_seq is None and msg is not None and msg.reply:
            stream_seq = msg.metadata.sequence.stream
        ce_id = original.get("ce-id") or original.get("Nats-Msg-Id") or f"seq-{stream_seq}"
        dlq_headers = {
            **original,
            # One dead letter per stored message: the same message given up on
            # twice (handler and advisory) is deduped, a replayed one (a new
            # stream sequence) that fails again is parked again.
            "Nats-Msg-Id": f"dlq:{self.durable}:{self.stream}:{stream_seq or ce_id}",
            "crossdock-dlq-subject": subject,
            "crossdock-dlq-stream": self.stream,
            "crossdock-dlq-stream-seq": str(stream_seq or ""),
            "crossdock-dlq-consumer": self.durable,
            "crossdock-dlq-reason": reason[:2000],
            "crossdock-dlq-permanent": "true" if permanent else "false",
            "crossdock-dlq-attempts": str(attempts),
            "crossdock-dlq-time": utcnow().isoformat(),
        }
        assert self.bus.js is not None
        await self.bus.js.publish(f"{DLQ_PREFIX}{self.durable}", data if data is not None else msg.data,
                                  headers=dlq_headers)
        self.stats.dead_lettered += 1
        log.error("message.dead_lettered", consumer=self.durable, subject=subject, id=ce_id,
                  permanent=permanent, attempts=attempts, reason=reason[:500])
        if msg is not None and msg.reply:
            await msg.term()

    async def subscribe_given_up(self) -> JetStreamContext.PullSubscription:
        """The durable that reads this consumer's MAX_DELIVERIES advisories."""
        js = self.bus.js
        assert js is not None
        durable = f"{self.durable}-given-up"
        await js.add_consumer(ADVISORY_STREAM, ConsumerConfig(
            durable_name=durable, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30, max_ack_pending=100,
            filter_subject=f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.durable}"))
        return await js.pull_subscribe_bind(durable, ADVISORY_STREAM)

    async def _dead_letter_given_up(self) -> None:
        """Dead-letter what JetStream gave up on after a timed-out last attempt.

        Its MAX_DELIVERIES advisories are kept in the ADVISORIES stream (sent
        only when the next pull arrives, as core NATS messages, they would be
        lost whenever no process of ours listened); a durable of this
        consumer's own, shared by its replicas, reads them and acks each once
        its dead letter is published (deduped per stream sequence).
        """
        sub, generation = None, -1
        while not self._stopping:
            try:
                if sub is None or generation != self.bus.generation:
                    generation = self.bus.generation
                    sub = await self.subscribe_given_up()
                advisories = await sub.fetch(16, timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - broker away: re-bind and keep watching
                log.warning("consumer.advisories_failed", consumer=self.durable, error=repr(exc))
                sub = None
                await asyncio.sleep(0.5)
                continue
            for adv in advisories:
                try:
                    info = json.loads(adv.data)
                    try:
                        raw = await self.bus.js.get_msg(self.stream, info["stream_seq"])
                    except nats.js.errors.NotFoundError:
                        log.error("advisory.message_gone", consumer=self.durable, seq=info["stream_seq"])
                    else:
                        await self.dead_letter(
                            None,
                            f"no ack within {self.ack_wait}s on the last of {info['deliveries']} attempts",
                            permanent=False, attempts=int(info["deliveries"]), subject=raw.subject,
                            headers=dict(raw.headers or {}), data=raw.data or b"",
                            stream_seq=info["stream_seq"])
                    await adv.ack()
                except Exception as exc:  # noqa: BLE001 - not acked: the advisory comes again
                    log.warning("advisory.failed", consumer=self.durable, error=repr(exc))
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    def stop(self) -> None:
        self._stopping = True
