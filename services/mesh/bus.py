"""NATS JetStream: streams, the outbox relay and durable pull consumers.

- Streams are provisioned idempotently at start (file storage).
- ``OutboxRelay`` publishes committed outbox rows with ``Nats-Msg-Id`` = event
  id (JetStream drops a duplicate inside the dedupe window; the consumer's
  inbox drops one outside it) and deletes them once the broker acked.
- ``Consumer`` fetches from a durable pull consumer and runs each message's
  handler inside a store transaction that also records the message id.
  Success -> ack; a retryable error -> nak with back-off; a permanent one
  (undecodable body, invalid command) -> term.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import nats
import nats.errors
import nats.js.errors
import structlog
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
from opentelemetry.trace import SpanKind
from sqlalchemy import delete, select

from . import contracts, telemetry
from .store import Store, Tx

log = structlog.get_logger()

DUPLICATE_WINDOW_S = 30 * 60
STREAM_MAX_AGE_S = 14 * 24 * 3600


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
        self.url = url
        self.replicas = replicas
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None

    async def connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", error=str(exc))

        async def on_disconnect() -> None:
            log.warning("nats.disconnected")

        async def on_reconnect() -> None:
            log.info("nats.reconnected")

        self.nc = await nats.connect(
            self.url,
            name=f"crossdock-{self.service}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        self.js = self.nc.jetstream(publish_async_max_pending=4000)

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


class OutboxRelay:
    """Publishes committed outbox rows, oldest first, and deletes them once acked."""

    def __init__(self, store: Store, bus: Bus, *, poll_interval: float, batch: int = 256):
        self.store = store
        self.bus = bus
        self.poll_interval = poll_interval
        self.batch = batch
        self._wake = asyncio.Event()
        self._stopping = False
        store.on_commit(self._wake.set)

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                sent = await self.relay_once()
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

    async def relay_once(self) -> int:
        outbox = self.store.outbox
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.subject, outbox.c.headers, outbox.c.payload)
                    .order_by(outbox.c.id)
                    .limit(self.batch)
                )
            ).all()
        if not rows:
            return 0
        js = self.bus.js
        assert js is not None
        futures = [
            await js.publish_async(row.subject, row.payload, headers=json.loads(row.headers))
            for row in rows
        ]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        async with self.store.transaction() as tx:
            await tx.conn.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
        return len(rows)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


def backoff_delay(attempt: int) -> float:
    return min(0.5 * 2 ** max(attempt - 1, 0), 30.0)


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
        handler: Handler,
        max_deliver: int,
        ack_wait: float,
        batch: int = 64,
    ) -> None:
        self.store = store
        self.bus = bus
        self.durable = durable
        self.stream = stream
        self.subjects = subjects
        self.handler = handler
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.batch = batch
        self._stopping = False
        self.handled = 0

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
        sub = await self.subscribe()
        while not self._stopping:
            try:
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                await asyncio.sleep(0.5)
                continue
            except Exception as exc:  # noqa: BLE001 - keep consuming
                log.warning("consumer.fetch_failed", consumer=self.durable, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                # Finish the messages in hand even when asked to stop.
                await self.process(msg)
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - closing anyway
            pass

    async def process(self, msg: Msg) -> None:
        try:
            env = decode(msg)
        except PermanentError as exc:
            log.error("message.rejected", consumer=self.durable, subject=msg.subject, reason=str(exc))
            await msg.term()
            return
        ctx = telemetry.extract(msg.headers or {})
        with telemetry.tracer().start_as_current_span(
            f"{msg.subject} process",
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject,
                        "messaging.message.id": env.id, "messaging.consumer.group.name": self.durable},
        ):
            try:
                async with self.store.transaction() as tx:
                    if await tx.claim(self.durable, env.id):
                        await self.handler(env, tx)
                await msg.ack()
                self.handled += 1
            except PermanentError as exc:
                log.error("message.failed_permanently", consumer=self.durable,
                          subject=msg.subject, id=env.id, reason=str(exc))
                await msg.term()
            except Exception as exc:  # noqa: BLE001 - retry with back-off
                delay = backoff_delay(env.attempt)
                log.warning("message.retry", consumer=self.durable, subject=msg.subject,
                            id=env.id, attempt=env.attempt, delay=delay, error=repr(exc))
                try:
                    await msg.nak(delay=delay)
                except Exception:  # noqa: BLE001 - the ack wait will redeliver it
                    pass

    def stop(self) -> None:
        self._stopping = True
