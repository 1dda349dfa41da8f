"""The dead-letter stream and its operator API (served by every service).

A dead letter is the original message (headers and body) on ``dlq.<consumer>``
with ``crossdock-dlq-*`` headers saying why. Replay publishes it again to its
original subject with a NEW ``Nats-Msg-Id`` (the broker's dedupe window must
not swallow it) and the SAME ``ce-id`` (every consumer's inbox still allows at
most one effect), then deletes it from the dead-letter stream.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import nats.js.errors
from google.protobuf import json_format

from crossdock.admin.v1 import admin_pb2, admin_pb2_grpc

from . import contracts
from .bus import DLQ_PREFIX, Bus
from .errors import InvalidArgument, NotFound
from .paging import page_size

STREAM = "DLQ"
_DLQ_HEADERS = "crossdock-dlq-"


def _seq(dead_letter_id: str, field: str = "dead_letter_id") -> int:
    if not (dead_letter_id.isdigit() and 0 < int(dead_letter_id) < 2**63):
        raise InvalidArgument([(field, "a dead-letter id is a positive number")])
    return int(dead_letter_id)


def to_pb(raw) -> admin_pb2.DeadLetter:
    h = dict(raw.headers or {})
    subject = h.get("crossdock-dlq-subject", "")
    dl = admin_pb2.DeadLetter(
        dead_letter_id=str(raw.seq), subject=subject,
        consumer=h.get("crossdock-dlq-consumer", ""), reason=h.get("crossdock-dlq-reason", ""),
        permanent=h.get("crossdock-dlq-permanent") == "true",
        attempts=int(h.get("crossdock-dlq-attempts") or 0),
        event_id=h.get("ce-id", ""), event_type=h.get("ce-type", ""), headers=h, body=raw.data or b"",
    )
    if when := h.get("crossdock-dlq-time"):
        dl.dead_time.FromDatetime(datetime.fromisoformat(when))
    try:
        body = contracts.message_type(subject)()
        body.ParseFromString(raw.data or b"")
        dl.body_json = json_format.MessageToJson(body, indent=None)
    except Exception:  # noqa: BLE001 - shown as bytes only
        pass
    return dl


class DeadLetters:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def _get(self, seq: int):
        try:
            return await self.bus.js.get_msg(STREAM, seq)
        except nats.js.errors.NotFoundError:
            raise NotFound("dead letter", str(seq)) from None

    async def list(self, *, consumer: str = "", size: int = 0, token: str = "") -> tuple[list, str, int]:
        js = self.bus.js
        try:
            limit = page_size(size)
        except ValueError as exc:
            raise InvalidArgument([("page_size", str(exc))]) from None
        seq = _seq(token, "page_token") if token else 1
        subject = f"{DLQ_PREFIX}{consumer}" if consumer else f"{DLQ_PREFIX}>"
        total = (await js.stream_info(STREAM)).state.messages
        out = []
        while len(out) <= limit:
            try:
                raw = await js.get_msg(STREAM, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            out.append(raw)
            seq = raw.seq + 1
        next_token = str(out[limit].seq) if len(out) > limit else ""
        return out[:limit], next_token, total

    async def replay(self, dead_letter_id: str) -> tuple[str, str]:
        raw = await self._get(_seq(dead_letter_id))
        headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith(_DLQ_HEADERS)}
        subject = (raw.headers or {}).get("crossdock-dlq-subject", "")
        if not subject:
            raise InvalidArgument([("dead_letter_id", "the dead letter names no original subject")])
        message_id = f"{headers.get('ce-id', 'replay')}:replay:{uuid.uuid4().hex[:12]}"
        headers["Nats-Msg-Id"] = message_id
        await self.bus.js.publish(subject, raw.data or b"", headers=headers)
        await self.bus.js.delete_msg(STREAM, raw.seq)
        return subject, message_id

    async def discard(self, dead_letter_id: str) -> None:
        raw = await self._get(_seq(dead_letter_id))
        await self.bus.js.delete_msg(STREAM, raw.seq)


class DeadLetterServicer(admin_pb2_grpc.DeadLetterServiceServicer):
    def __init__(self, bus: Bus) -> None:
        self.dlq = DeadLetters(bus)

    async def ListDeadLetters(self, request, context):
        raws, token, total = await self.dlq.list(consumer=request.consumer, size=request.page_size,
                                                 token=request.page_token)
        return admin_pb2.ListDeadLettersResponse(dead_letters=[to_pb(r) for r in raws],
                                                 next_page_token=token, total=total)

    async def GetDeadLetter(self, request, context):
        return admin_pb2.GetDeadLetterResponse(
            dead_letter=to_pb(await self.dlq._get(_seq(request.dead_letter_id))))

    async def ReplayDeadLetter(self, request, context):
        subject, message_id = await self.dlq.replay(request.dead_letter_id)
        return admin_pb2.ReplayDeadLetterResponse(subject=subject, message_id=message_id)

    async def DiscardDeadLetter(self, request, context):
        await self.dlq.discard(request.dead_letter_id)
        return admin_pb2.DiscardDeadLetterResponse()
