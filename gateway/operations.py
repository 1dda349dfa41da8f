"""Operations the HTTP API and the console share, on the process services' APIs: the
exception work list (filters, resolving one or many by filter) and the timeline notes
that tell an order's or a return's story when an operator acts on one of its messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as rpb

KINDS = ("SHORT_PICK", "DAMAGED", "STOCK_DISCREPANCY", "CARRIER_FAILED")
ACTIONS = ("SHIP_PARTIAL", "CANCEL_LINES", "CANCEL_ORDER", "RETRY", "REASSIGN_CARRIER")
POLICIES = ("SHIP_PARTIAL", "HOLD", "CANCEL_LINES")


@dataclass(frozen=True)
class ExceptionFilter:
    kind: str = ""
    customer_id: str = ""
    warehouse_id: str = ""
    older_than_minutes: int = 0
    status: str = "OPEN"  # OPEN, RESOLVED, or "" for both

    def request(self, page_size: int = 100, page_token: str = "") -> ots.ListExceptionsRequest:
        req = ots.ListExceptionsRequest(
            page_size=page_size, page_token=page_token, customer_id=self.customer_id,
            warehouse_id=self.warehouse_id,
            kind=ots.ExceptionKind.Value(f"EXCEPTION_KIND_{self.kind}") if self.kind else 0,
            status=ots.ExceptionStatus.Value(f"EXCEPTION_STATUS_{self.status}") if self.status else 0)
        if self.older_than_minutes:
            ts = Timestamp()
            ts.FromDatetime(datetime.now(UTC) - timedelta(minutes=self.older_than_minutes))
            req.raised_before.CopyFrom(ts)
        return req


def kind_of(e: ots.OrderException) -> str:
    return ots.ExceptionKind.Name(e.kind).removeprefix("EXCEPTION_KIND_")


def valid_actions(kind: str) -> tuple[str, ...]:
    if kind == "CARRIER_FAILED":
        return ("RETRY", "REASSIGN_CARRIER", "CANCEL_ORDER")
    return ("SHIP_PARTIAL", "CANCEL_LINES", "CANCEL_ORDER")


@dataclass
class BatchResult:
    resolved: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (exception id, why)


async def resolve_many(ots_stub, flt: ExceptionFilter, *, action: str, resolved_by: str, note: str,
                       carrier_id: str = "", owns=lambda customer_id: True, limit: int = 500) -> BatchResult:
    """Resolve every open exception the filter finds (at most ``limit``) with one action; one
    whose kind the action does not fit, or that another person resolved meanwhile, is skipped
    with the reason."""
    out, token = BatchResult(), ""
    seen = 0
    while seen < limit:
        page = await ots_stub.ListExceptions(flt.request(100, token))
        for e in page.exceptions:
            seen += 1
            if not owns(e.customer_id):
                continue
            if action not in valid_actions(kind_of(e)):
                out.skipped.append((e.exception_id, f"{action} does not resolve a {kind_of(e)}"))
                continue
            try:
                await ots_stub.ResolveException(ots.ResolveExceptionRequest(
                    exception_id=e.exception_id, resolved_by=resolved_by, note=note, carrier_id=carrier_id,
                    action=ots.ResolutionAction.Value(f"RESOLUTION_ACTION_{action}")))
                out.resolved.append(e.exception_id)
            except Exception as err:  # noqa: BLE001 - reported per exception, the batch goes on
                details = err.details() if hasattr(err, "details") else str(err)
                out.skipped.append((e.exception_id, details or "failed"))
        if not (token := page.next_page_token):
            break
    return out


def owner_of(subject: str, body_json: str, headers: dict[str, str]) -> tuple[str, str]:
    """("order"|"return", id) a dead letter belongs to, from its body (decoded from Protobuf) or
    its CloudEvents subject header; ("", "") when it names neither."""
    try:
        body = json.loads(body_json) if body_json else {}
    except ValueError:
        body = {}

    def find(obj, key: str, depth: int = 0) -> str:
        if depth > 4 or not isinstance(obj, dict):
            return ""
        if isinstance(obj.get(key), str) and obj[key]:
            return obj[key]
        for value in obj.values():
            if found := find(value, key, depth + 1):
                return found
        return ""

    if rid := find(body, "returnId") or find(body, "return_id"):
        return "return", rid
    if oid := find(body, "orderId") or find(body, "order_id"):
        return "order", oid
    aggregate = headers.get("ce-subject", "")
    if aggregate.startswith("RET-"):
        return "return", aggregate
    if aggregate.startswith("ORD-"):
        return "order", aggregate
    return "", ""


async def note_on_owner(ots_stub, returns_stub, kind: str, owner_id: str, *, actor: str, step: str,
                        note: str) -> None:
    if kind == "order":
        await ots_stub.AddTimelineNote(ots.AddTimelineNoteRequest(order_id=owner_id, actor=actor, step=step,
                                                                  note=note))
    elif kind == "return":
        await returns_stub.AddTimelineNote(rpb.AddTimelineNoteRequest(return_id=owner_id, actor=actor,
                                                                      step=step, note=note))
