"""Each service's own store: engine, migrations, transactional outbox and inbox.

A service's state change and the events/commands it causes are written in ONE
transaction (``Tx.emit`` adds an outbox row); the relay in ``bus.py`` publishes
them afterwards. A handled message id is recorded in the same transaction as
its effect (``Tx.claim``), so a redelivered message has no second effect.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from google.protobuf.message import Message
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from . import contracts, faults, telemetry

# Committed write transactions of this process's store (what `make bench`
# counts per order, next to RPCs and messages handled).
STORE_TRANSACTIONS = Counter("crossdock_store_transactions",
                             "Committed write transactions of the service's store")

# An autoincrementing 64-bit key on PostgreSQL, INTEGER PRIMARY KEY on SQLite.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def runtime_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and inbox tables, added to a service's own metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("subject", String(200), nullable=False),
        Column("headers", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("message_id", String(100), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("consumer", "message_id"),
    )
    return outbox, inbox


def async_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        return str(u.set(drivername="sqlite+aiosqlite"))
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    return url


def sync_url(url: str) -> str:
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        return str(u.set(drivername="sqlite"))
    if u.drivername.startswith("postgres"):
        return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer. synchronous=NORMAL in WAL mode
    # survives a process crash (SIGKILL); only an OS crash can lose the last
    # commits, which PostgreSQL is for.
    # The lock wait first: even switching to WAL waits for another connection's lock.
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_manual_transactions(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite recipe).
    dbapi_conn.isolation_level = None


def _sqlite_begin_immediate(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(url: str, migrations_dir: Path) -> None:
    """Create or upgrade the schema to the newest revision (keeps the data)."""
    u = make_url(url)
    if u.drivername.startswith("sqlite") and u.database:
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


def run_alembic_env(target_metadata: MetaData) -> None:
    """Body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together migrate one at a time.
            conn.execute(text("SELECT pg_advisory_lock(727274)"))
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_unlock(727274)"))
            conn.commit()
    engine.dispose()


def build_headers(message: Message, *, source: str, event_id: str, key: str = "") -> dict[str, str]:
    """CloudEvents (NATS binding) attributes, W3C trace context and the dedupe id."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": contracts.type_name(message),
        "ce-source": f"crossdock/{source}",
        "ce-time": utcnow().isoformat(),
        "content-type": "application/protobuf",
        "Nats-Msg-Id": event_id,
    }
    if key:
        headers["ce-subject"] = key
    telemetry.inject(headers)
    return headers


class Tx:
    """One transaction of a service's store: state changes plus outbox rows."""

    def __init__(self, store: Store, conn: AsyncConnection) -> None:
        self.store = store
        self.conn = conn
        self.emitted = 0

    async def emit(
        self,
        subject: str,
        message: Message,
        *,
        key: str = "",
        event_id: str | None = None,
    ) -> str:
        """Queue an event or command for publication when this transaction commits.

        ``key`` names the aggregate (``ce-subject``); ``event_id`` defaults to a
        new UUID and becomes both ``ce-id`` and ``Nats-Msg-Id``.
        """
        row = self._outbox_row(subject, message, key, event_id)
        await self.conn.execute(self.store.outbox.insert().values(**row))
        self.emitted += 1
        return row["event_id"]

    async def emit_many(self, events: list[tuple[str, Message, str]]) -> list[str]:
        """Queue several events, ``(subject, message, key)`` each, in one multi-row INSERT
        (a bulk change such as a receipt of many lines); their ids, in order."""
        rows = [self._outbox_row(subject, message, key) for subject, message, key in events]
        if rows:
            await self.conn.execute(self.store.outbox.insert(), rows)
        self.emitted += len(rows)
        return [r["event_id"] for r in rows]

    def _outbox_row(self, subject: str, message: Message, key: str, event_id: str | None = None) -> dict:
        """The outbox row of one message (checked against the contract), under its PRODUCER span."""
        expected = contracts.message_type(subject)
        if not isinstance(message, expected):
            raise TypeError(
                f"{subject} carries {contracts.type_name(expected)}, "
                f"not {contracts.type_name(message)}"
            )
        event_id = event_id or str(uuid.uuid4())
        # The message's PRODUCER span: the consumer's span is its child.
        with telemetry.producer_span(subject, event_id):
            headers = build_headers(message, source=self.store.service, event_id=event_id, key=key)
        return {"event_id": event_id, "subject": subject, "headers": json.dumps(headers),
                "payload": message.SerializeToString(), "created_at": utcnow()}

    async def claim_many(self, consumer: str, message_ids: list[str]) -> set[str]:
        """``claim`` for many messages with one statement per 300: the ids that were new."""
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        inbox, now, claimed = self.store.inbox, utcnow(), set()
        ids = list(dict.fromkeys(message_ids))
        for i in range(0, len(ids), 300):
            stmt = (dialect.insert(inbox).values([{"consumer": consumer, "message_id": m, "handled_at": now}
                                                  for m in ids[i:i + 300]])
                    .on_conflict_do_nothing().returning(inbox.c.message_id))
            claimed.update((await self.conn.execute(stmt)).scalars())
        return claimed

    async def claim(self, consumer: str, message_id: str) -> bool:
        """Record a message as handled; False when it already was (a redelivery)."""
        return await insert_ignore(
            self.conn,
            self.store.inbox,
            {"consumer": consumer, "message_id": message_id, "handled_at": utcnow()},
        )


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict) -> bool:
    """INSERT that does nothing on a key conflict; True when a row was added."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(stmt)
    return result.rowcount == 1


class Store:
    def __init__(self, service: str, url: str, metadata: MetaData) -> None:
        self.service = service
        self.url = url
        self.metadata = metadata
        self.outbox = metadata.tables["outbox"]
        self.inbox = metadata.tables["inbox"]
        self._on_commit: list[Callable[[], None]] = []
        u = make_url(async_url(url))
        if u.drivername.startswith("sqlite"):
            # Writes: one connection per process, and BEGIN IMMEDIATE so that
            # writers in several processes (replicas) queue on the database
            # lock (busy_timeout) instead of failing on a lock upgrade.
            # Reads: their own small pool, never blocking or blocked by writes (WAL).
            self.engine: AsyncEngine = create_async_engine(
                u, pool_size=1, max_overflow=0, pool_timeout=60
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "connect", _sqlite_manual_transactions)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
            self.read_engine: AsyncEngine = create_async_engine(
                u, pool_size=4, max_overflow=0, pool_timeout=60
            )
            event.listen(self.read_engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(u, pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.read_engine = self.engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call back after every commit that emitted messages (wakes the relay)."""
        self._on_commit.append(callback)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.engine.begin() as conn:
            tx = Tx(self, conn)
            yield tx
        STORE_TRANSACTIONS.inc()
        if tx.emitted:
            faults.crash_point("after_commit_before_publish")
            for callback in self._on_commit:
                callback()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.connect() as conn:
            yield conn

    async def migrate(self, migrations_dir: Path) -> None:
        await asyncio.to_thread(migrate, self.url, migrations_dir)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
