"""The toolkit of a process service: a workflow (saga) whose instances have a
status, an optimistic version and an append-only timeline.

Order-to-ship and returns share this plumbing and nothing more: each keeps its
own states, its pure decisions (``workflow.py``) and its own tables.

- ``Entry`` and ``Decision``: what a pure decision returns (a workflow extends
  ``Decision`` with what only it records).
- ``NotCancellable`` and ``ConcurrentUpdate``: the failures every workflow has.
- ``request_fingerprint``: a create request's body, so that a reused
  ``request_id`` with another body is refused (AIP-155).
- ``timeline_table``: the audit log, one row per step, never updated.
- ``Instances``: finding by request id, appending to the timeline, and the
  versioned apply of a decision (state + timeline + outbox in the caller's
  transaction).
- ``proto_numbers``: a StrEnum of statuses checked against its contract enum
  when the module is imported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import telemetry
from .errors import FailedPrecondition
from .store import BigId, Tx, utcnow


@dataclass(frozen=True)
class Entry:
    """One step in an instance's timeline: which system (``source``) did what (``step``)."""

    source: str
    step: str
    detail: str = ""
    # The person who acted, when one did (an exception resolved, an operator's note).
    actor: str = ""


@dataclass
class Decision:
    """What a workflow decided about one fact; ``Instances.apply`` records it."""

    status: str | None = None  # None: unchanged
    reason: str | None = None  # None: unchanged ("" clears it)
    entries: list[Entry] = field(default_factory=list)
    # Column values of the instance's row.
    updates: dict[str, Any] = field(default_factory=dict)
    # (subject, message): sent when the transaction commits (outbox).
    commands: list[tuple[str, Message]] = field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return bool(self.status or self.entries or self.updates or self.commands)


class NotCancellable(Exception):
    """A cancel request for an instance that is past the point where it can be cancelled."""


class ConcurrentUpdate(Exception):
    """Another process changed the instance between our read and our write: retry."""


def request_fingerprint(req: Message) -> str:
    """SHA-256 of a create request without its ``request_id``."""
    body = type(req)()
    body.CopyFrom(req)
    body.request_id = ""  # type: ignore[attr-defined]
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def timeline_table(metadata: MetaData, key: str) -> Table:
    """The audit log: one row per step of an instance (``key`` names it), never updated or deleted."""
    return Table(
        "timeline",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column(key, String(64), nullable=False, index=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("source", String(20), nullable=False),
        Column("step", String(64), nullable=False),
        Column("status", String(20), nullable=False),
        Column("detail", Text, nullable=False, default=""),
        Column("trace_id", String(32), nullable=False, default=""),
        Column("actor", String(200), nullable=False, default="", server_default=""),
    )


def proto_numbers(members: type[StrEnum], contract: EnumTypeWrapper, prefix: str) -> dict[str, int]:
    """The contract's number of each member (``prefix`` + name); a member the contract
    does not have fails here, when the workflow's module is imported."""
    missing = [m.value for m in members if prefix + m.value not in contract.keys()]
    if missing:
        raise ValueError(f"{members.__name__}: {', '.join(missing)} not in {contract.DESCRIPTOR.full_name}")
    return {m: contract.Value(prefix + m.value) for m in members}


NOTE_STEP = re.compile(r"^[a-z][a-z0-9_]{0,50}$")


def note_violations(key: str, instance_id: str, actor: str, step: str, note: str) -> list[tuple[str, str]]:
    """What is wrong with a person's note (``AddTimelineNote``): the instance and the actor are
    required, the step is a short lower-case word, lengths are bounded."""
    problems = [(f, "required") for f, v in ((key, instance_id), ("actor", actor)) if not v]
    if step and not NOTE_STEP.match(step):
        problems.append(("step", "lower-case letters, digits and '_' (at most 51)"))
    if len(actor) > 200:
        problems.append(("actor", "at most 200 characters"))
    if len(note) > 2000:
        problems.append(("note", "at most 2000 characters"))
    return problems


def note_entry(actor: str, step: str, note: str) -> Entry:
    """A person's note: source ``console``, step ``note.<step>`` (``note`` alone without one)."""
    return Entry("console", f"note.{step}" if step else "note", note, actor=actor)


# (instance id, from status, to status, reason) -> (subject, event)
StatusEvent = Callable[[str, str, str, str], tuple[str, Message]]


@dataclass(frozen=True)
class Instances:
    """The instances of one workflow in its store.

    ``table`` has the columns ``key``, ``request_id``, ``request_hash``,
    ``status``, ``status_reason``, ``version`` and ``updated_at``; ``timeline``
    is made by ``timeline_table``. ``status_changed`` builds the event that
    announces a change of status.
    """

    noun: str  # "order", "return": in messages
    table: Table
    timeline: Table
    key: str
    status_changed: StatusEvent

    async def by_request_id(self, conn: AsyncConnection, request_id: str, fingerprint: str) -> str | None:
        """The instance an earlier create with this ``request_id`` made, or None.

        The same id with another body is refused (FailedPrecondition REQUEST_ID_REUSED).
        """
        t = self.table
        row = (await conn.execute(select(t.c[self.key], t.c.request_hash)
                                  .where(t.c.request_id == request_id))).first()
        if row is None:
            return None
        instance_id = row[0]
        if row.request_hash != fingerprint:
            raise FailedPrecondition(
                f"request_id {request_id!r} was already used for a different {self.noun} ({instance_id})",
                reason="REQUEST_ID_REUSED", subject="request_id")
        return instance_id

    async def append(self, tx: Tx, instance_id: str, status: str, entry: Entry) -> None:
        """One step in the timeline, with the status the instance has after it and the current trace."""
        await tx.conn.execute(insert(self.timeline).values({
            self.key: instance_id, "at": utcnow(), "source": entry.source, "step": entry.step,
            "status": status, "detail": entry.detail, "trace_id": telemetry.current_trace_id(),
            "actor": entry.actor[:200]}))

    async def add_note(self, tx: Tx, instance_id: str, entry: Entry):
        """A note on the instance's timeline, with its current status; nothing else changes.
        The timeline row written, or None when there is no such instance."""
        t = self.table
        row = (await tx.conn.execute(select(t.c.status).where(t.c[self.key] == instance_id))).first()
        if row is None:
            return None
        await self.append(tx, instance_id, row.status, entry)
        tl = self.timeline
        return (await tx.conn.execute(select(tl).where(tl.c[self.key] == instance_id)
                                      .order_by(tl.c.id.desc()).limit(1))).first()

    async def timeline_of(self, conn: AsyncConnection, instance_id: str) -> list:
        t = self.timeline
        rows = await conn.execute(select(t).where(t.c[self.key] == instance_id).order_by(t.c.id))
        return list(rows.all())

    async def apply(self, tx: Tx, row: Any, decision: Decision, **columns: Any) -> None:
        """Record ``decision`` about the instance ``row`` was read from, in ``tx``.

        The row is updated only if nobody changed it since it was read (its
        ``version``; else ConcurrentUpdate), with the decision's status, reason
        and updates plus ``columns``; then its timeline entries, its commands
        and, when the status changes, the status event. What else a workflow
        records (lines, exceptions, shipments) it writes itself in the same
        transaction.
        """
        instance_id = getattr(row, self.key)
        status = decision.status or row.status
        values: dict[str, Any] = {"version": row.version + 1, "updated_at": utcnow(),
                                  **decision.updates, **columns}
        if decision.status:
            values["status"] = decision.status
        if decision.reason is not None:
            values["status_reason"] = decision.reason
        t = self.table
        result = await tx.conn.execute(update(t).where(
            t.c[self.key] == instance_id, t.c.version == row.version).values(**values))
        if result.rowcount != 1:
            raise ConcurrentUpdate(instance_id)
        for entry in decision.entries:
            await self.append(tx, instance_id, status, entry)
        for subject, command in decision.commands:
            await tx.emit(subject, command, key=instance_id)
        if decision.status and decision.status != row.status:
            subject, event = self.status_changed(instance_id, row.status, decision.status,
                                                 decision.reason or "")
            await tx.emit(subject, event, key=instance_id)
