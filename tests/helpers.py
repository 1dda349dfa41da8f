"""Test helpers: waiting on conditions with a deadline, publishing like a
service, and collecting the events a test expects."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from services.mesh import contracts
from services.mesh.store import build_headers

PG_URL = os.environ.get("CROSSDOCK_TEST_PG_URL", "")


async def eventually(check: Callable[[], Awaitable[object] | object], timeout: float = 30.0,
                     interval: float = 0.1, what: str = "condition"):
    """Poll a check (sync or async) until it returns a truthy value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except AssertionError as exc:  # a check may assert; keep polling
            last_exc = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}") from last_exc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def publish(nc, subject: str, message: Message, *, key: str = "",
                  event_id: str | None = None, source: str = "test") -> str:
    """Publish as a service's outbox relay would (same headers)."""
    event_id = event_id or str(uuid.uuid4())
    js = nc.jetstream()
    headers = build_headers(message, source=source, event_id=event_id, key=key)
    await js.publish(subject, message.SerializeToString(), headers=headers)
    return event_id


class EventLog:
    """Every message on the given subjects, decoded, collected in the background."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Message, dict]] = []
        self._sub = None

    async def start(self, nc, subjects: list[str]) -> EventLog:
        js = nc.jetstream()
        streams = {contracts.stream_for(s.replace(">", "x").replace("*", "x")) for s in subjects}
        subs = []
        for stream in streams:
            for subject in subjects:
                if contracts.stream_for(subject.replace(">", "x").replace("*", "x")) != stream:
                    continue

                async def cb(msg):
                    body = contracts.message_type(msg.subject)()
                    body.ParseFromString(msg.data)
                    self.messages.append((msg.subject, body, dict(msg.headers or {})))

                subs.append(await js.subscribe(subject, cb=cb, ordered_consumer=True, stream=stream))
        self._sub = subs
        return self

    def of(self, subject: str) -> list[Message]:
        return [m for s, m, _ in self.messages if s == subject]




def pg_database(base_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``base_url``; return its URL."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                            password=url.password, dbname=url.database or "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


def pg_drop(base_url: str, name: str) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                            password=url.password, dbname=url.database or "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()
