"""Tryton's changes as the mesh's ``erp.*`` events: the adapter tails the change rows the
crossdock_outbox module writes in the same transaction as each change (an outbox inside
Tryton), whoever made it (the adapter's own upserts, or a person in the Tryton client).

- Rows are read by id after the cursor; the events and the new cursor are written in ONE
  transaction of the adapter's store (its outbox), so each change is published once; the
  event id is derived from the change id, so a replay is dropped by the broker and the
  consumers' inboxes.
- The window: on PostgreSQL ids are taken from a sequence when a row is inserted, and
  transactions commit out of order, so a row with a higher id can be visible before a
  lower one. The tail never passes a missing id until ``erp_tryton_feed_window``
  seconds after a later row was written (then it is taken as rolled back). On SQLite
  (one writer) rows commit in id order and a missing id is a rollback.
- A record's rows read together become one event (its latest state), with a revision
  that grows with every change (the change id, past a base the cut-over sets) and the
  canonical fields that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.store import Store

from .base import TrytonErp
from .masterdata import read_customer, read_items
from .rpc import TrytonError

log = structlog.get_logger()

CURSOR = "feed"
REVISION_BASE = "feed:revision_base"
CUSTOMER_FIELDS = {
    "name": "name",
    "active": "blocked",
    "credit_limit_amount": "credit_limit",
    "addresses": "ship_to",
    "code": "customer_id",
}
ITEM_FIELDS = {
    "name": "description",
    "list_price": "unit_price",
    "crossdock_uom": "uom",
    "crossdock_weight_grams": "weight_grams",
    "active": "active",
    "code": "sku",
}


def safe_prefix(rows: list[dict], cursor: int, now: datetime, window: float) -> list[dict]:
    """The rows that may be consumed now: in id order from the cursor, stopping at a
    missing id unless a later row is older than the window (the gap is then a rollback)."""
    out, expected = [], cursor + 1
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["id"] != expected and (
            row["create_date"] is None or now - row["create_date"] < timedelta(seconds=window)
        ):
            break
        out.append(row)
        expected = row["id"] + 1
    return out


def changed(rows: list[dict], names: dict[str, str]) -> list[str] | None:
    """The canonical fields the rows changed ([] for a new record, None when none)."""
    if any(r["mode"] == "create" for r in rows):
        return []
    fields = {names[f] for r in rows for f in (r["field_names"] or "").split(",") if f in names}
    return sorted(fields) or None


class ChangeFeed:
    def __init__(self, erp: TrytonErp, store: Store) -> None:
        self.erp = erp
        self.store = store

    async def poll(self, limit: int = 200) -> int:
        """Publish the changes after the cursor; how many rows were consumed."""
        erp = self.erp
        cursor = await erp.cursor(CURSOR)
        rows = await erp.rpc.search_read(
            "crossdock.change",
            [("id", ">", cursor)],
            ["model", "record", "mode", "field_names", "create_date"],
            limit=limit,
            order=[("id", "ASC")],
        )
        now = await self._tryton_now(rows)
        rows = safe_prefix(rows, cursor, now, erp.settings.erp_tryton_feed_window)
        if not rows:
            return 0
        base = await erp.cursor(REVISION_BASE)
        groups: dict[tuple[str, int], list[dict]] = {}
        for r in rows:
            groups.setdefault((r["model"], r["record"]), []).append(r)
        events = []
        for (model, record), group in groups.items():
            last = max(r["id"] for r in group)
            try:
                events += await self._events(model, record, group, base + last, last)
            except TrytonError as exc:
                log.warning("tryton.feed_record_skipped", model=model, record=record, error=str(exc))
        async with self.store.transaction() as tx:
            for subject, message, key, event_id in events:
                await tx.emit(subject, message, key=key, event_id=event_id)
            await erp.set_cursor(tx, CURSOR, rows[-1]["id"])
        return len(rows)

    async def _tryton_now(self, rows: list[dict]) -> datetime:
        # Tryton's create_date is its own (naive UTC) clock: compare with the newest row.
        return max((r["create_date"] for r in rows if r["create_date"]), default=datetime.utcnow())

    async def _events(self, model: str, record: int, group: list[dict], revision: int, last: int) -> list:
        erp = self.erp
        if model == "party.party":
            if (fields := changed(group, CUSTOMER_FIELDS)) is None:
                return []
            (party,) = await erp.rpc.model("party.party", "read", [record], ["code"]) or [{"code": None}]
            if not party["code"] or record == (await erp.fixed())["company"]:
                return []
            customer = await read_customer(erp, record)
            return [
                (
                    "erp.customer.upserted",
                    msgs.CustomerUpserted(customer=customer, revision=revision, changed_fields=fields),
                    customer.customer_id,
                    f"tryton-change-{last}",
                )
            ]
        if model in ("product.template", "product.product"):
            if (fields := changed(group, ITEM_FIELDS)) is None:
                return []
            if model == "product.template":
                ids = await erp.rpc.model(
                    "product.product",
                    "search",
                    [("template", "=", record), ("active", "in", [True, False])],
                    0,
                    None,
                    None,
                )
            else:
                ids = [record]
            items = await read_items(erp, ids) if ids else []
            return [
                (
                    "erp.item.upserted",
                    msgs.ItemUpserted(item=i, revision=revision, changed_fields=fields),
                    i.sku,
                    f"tryton-change-{last}-{n}",
                )
                for n, i in enumerate(items)
                if i.sku
            ]
        return []

    def loop(self):
        async def tryton_change_feed(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    while await self.poll() and not stop.is_set():
                        pass
                except Exception as exc:  # noqa: BLE001 - Tryton away: the cursor waits
                    log.warning("tryton.feed_failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.erp.settings.erp_tryton_feed_interval)

        return tryton_change_feed
