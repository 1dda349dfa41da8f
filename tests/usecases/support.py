"""Reading what a use case left in the outbox (the messages it would publish)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf.message import Message
from sqlalchemy import delete, select

from services.mesh import contracts
from services.mesh.store import Store


@dataclass(frozen=True)
class Published:
    subject: str
    body: Message
    headers: dict[str, str]
    key: str


class Outbox:
    @staticmethod
    async def read(store: Store, subject: str = "", *, take: bool = False) -> list[Published]:
        """The outbox's messages (those on ``subject`` or under ``subject.`` when given),
        decoded with the contract's type; ``take=True`` also removes them, as the relay would."""
        table = store.outbox
        async with store.transaction() as tx:
            rows = (await tx.conn.execute(select(table).order_by(table.c.id))).all()
            out = []
            for row in rows:
                if subject and not (row.subject == subject or row.subject.startswith(subject + ".")):
                    continue
                body = contracts.message_type(row.subject)()
                body.ParseFromString(row.payload)
                headers = json.loads(row.headers)
                out.append(Published(row.subject, body, headers, headers.get("ce-subject", "")))
            if take and out:
                await tx.conn.execute(delete(table).where(table.c.event_id.in_(
                    [p.headers["ce-id"] for p in out])))
        return out
