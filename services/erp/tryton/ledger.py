"""The inventory ledger on Tryton: Tryton's stock at each warehouse follows WMS's
movements, booked by inventories of the warehouse's storage (``book``). Each movement's
event is a ``crossdock.booking`` of its inventory (crossdock_outbox module), looked up
before anything is booked: a movement redelivered after Tryton committed is not booked
twice.

The position's applied WMS sequence is the adapter's cursor ``ledger:<warehouse>/<sku>``
(Crossdock's rule: a movement at or below it is stale); the on-hand is Tryton's.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select

from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.mesh.paging import encode_token
from services.mesh.store import Tx

from .. import contract, domain
from ..builtin.ledger import log_update, movements
from .base import TrytonErp, committed_in_tryton, permanent_on_refusal, refusal_as_precondition
from .masterdata import page
from .store import cursors

log = structlog.get_logger()

PREFIX = "ledger:"


def position_key(warehouse_id: str, sku: str) -> str:
    return f"{PREFIX}{warehouse_id}/{sku}"


class TrytonLedger:
    def __init__(self, erp: TrytonErp) -> None:
        self.erp = erp

    async def book(self, moves: list[tuple[str, str, int, int, str]]) -> None:
        """Book movements (warehouse id, sku, delta, reason, key), each at most once: per
        warehouse one ``stock.inventory`` counting the storage at what it holds plus the
        deltas (Tryton's way to book stock without a document: moves to or from
        lost-and-found, no origin needed), created together with a ``crossdock.booking``
        per movement key in ONE Tryton transaction. Keys already booked are skipped
        (their inventory confirmed if a crash left it in draft)."""
        erp, rpc = self.erp, self.erp.rpc
        keys = [m[4] for m in moves]
        booked = (
            await rpc.search_read("crossdock.booking", [("key", "in", keys)], ["key", "inventory"])
            if keys
            else []
        )
        drafts = sorted({b["inventory"] for b in booked})
        if drafts:
            pending = await rpc.search_read(
                "stock.inventory", [("id", "in", drafts), ("state", "=", "draft")], ["id"]
            )
            if pending:
                await rpc.model("stock.inventory", "confirm", [p["id"] for p in pending])
        done = {b["key"] for b in booked}
        todo = [m for m in moves if m[4] not in done]
        if not todo:
            return
        fixed = await erp.fixed()
        products = await erp.products([m[1] for m in todo])
        for sku in sorted({m[1] for m in todo} - set(products)):
            # A SKU Tryton has no product for (stock received before the item master):
            # made as a bare product, so that the books follow WMS.
            await rpc.model(
                "product.template",
                "create",
                [
                    {
                        "name": sku,
                        "code": sku,
                        "type": "goods",
                        "default_uom": fixed["unit"],
                        "sale_uom": fixed["unit"],
                        "purchase_uom": fixed["unit"],
                        "salable": True,
                        "purchasable": True,
                        "account_category": fixed["category"],
                        "list_price": 0,
                        "crossdock_uom": "EA",
                        "products": [["create", [{}]]],
                    }
                ],
            )
            products[sku] = await erp.product(sku)
        by_wh: dict[str, list] = {}
        for m in todo:
            by_wh.setdefault(m[0], []).append(m)
        for warehouse_id, wh_moves in by_wh.items():
            storage = (await erp.warehouse(warehouse_id))["storage"]
            deltas: dict[str, int] = {}
            for _, sku, delta, _, _ in wh_moves:
                deltas[sku] = deltas.get(sku, 0) + delta
            rows = await rpc.model(
                "product.product",
                "read",
                [products[s] for s in deltas],
                ["code", "quantity"],
                context={"locations": [storage]},
            )
            current = {r["code"]: int(r["quantity"]) for r in rows}
            lines = [
                {"product": products[sku], "quantity": current.get(sku, 0) + d}
                for sku, d in sorted(deltas.items())
                if d
            ]
            (inventory,) = await rpc.model(
                "stock.inventory",
                "create",
                [
                    {
                        "location": storage,
                        "lines": [["create", lines]] if lines else [],
                        "crossdock_bookings": [["create", [{"key": m[4]} for m in wh_moves]]],
                    }
                ],
            )
            await rpc.model("stock.inventory", "confirm", [inventory])

    @permanent_on_refusal
    async def apply_movements(self, tx: Tx, moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> None:
        wanted = movements(moves)
        if not wanted:
            return
        state = {}
        for m in wanted:
            state[(m.sku, m.warehouse_id)] = (
                0,
                await self.erp.cursor(position_key(m.warehouse_id, m.sku), tx.conn),
            )
        result = domain.apply_movements(state, wanted)
        log_update(result, state)
        await self.book(
            [
                (m.warehouse_id, m.sku, m.key[0].delta, m.key[0].reason, f"mv:{m.key[1]}")
                for m in result.applied
            ]
        )
        if result.applied:
            committed_in_tryton()
        for (sku, warehouse_id), (_, sequence) in result.positions.items():
            await self.erp.set_cursor(tx, position_key(warehouse_id, sku), sequence)

    async def quantities(self, warehouse_id: str, skus: list[str]) -> dict[str, int]:
        wh = await self.erp.warehouse(warehouse_id)
        products = await self.erp.products(skus)
        if not products:
            return {}
        rows = await self.erp.rpc.model(
            "product.product",
            "read",
            list(products.values()),
            ["code", "quantity"],
            context={"locations": [wh["id"]], "with_childs": True},
        )
        return {r["code"]: int(r["quantity"]) for r in rows}

    async def list_positions(self, page_size: int, page_token: str, warehouse_id: str):
        size, key = page(page_size, page_token, 2)
        c = cursors.c
        query = select(c.name, c.position, c.updated_at).where(c.name.like(f"{PREFIX}%"))
        if warehouse_id:
            query = query.where(c.name.like(f"{PREFIX}{warehouse_id}/%"))
        async with self.erp.store.read() as conn:
            rows = (await conn.execute(query)).all()
        positions = sorted(
            (
                (n.removeprefix(PREFIX).split("/", 1)[1], n.removeprefix(PREFIX).split("/", 1)[0], p, at)
                for n, p, at in rows
            )
        )
        if key:
            positions = [p for p in positions if (p[0], p[1]) > (key[0], key[1])]
        more, positions = len(positions) > size, positions[:size]
        by_wh: dict[str, list[str]] = {}
        for sku, wh, _, _ in positions:
            by_wh.setdefault(wh, []).append(sku)
        on_hand = {}
        for wh, skus in by_wh.items():
            for sku, qty in (await self.quantities(wh, skus)).items():
                on_hand[(sku, wh)] = qty
        out = []
        for sku, wh, seq, at in positions:
            p = erp_pb2.LedgerPosition(
                sku=sku, warehouse_id=wh, on_hand=on_hand.get((sku, wh), 0), last_sequence=seq
            )
            p.update_time.FromDatetime(at)
            out.append(p)
        return out, encode_token([out[-1].sku, out[-1].warehouse_id]) if more and out else ""

    @refusal_as_precondition
    async def correct(self, reference: str, corrections: list[erp_pb2.LedgerCorrection]):
        contract.validate_corrections(reference, corrections)
        results = []
        for c in corrections:
            key = position_key(c.warehouse_id, c.sku)
            async with self.erp.store.transaction() as tx:
                seq = await self.erp.cursor(key, tx.conn)
                on_hand = (await self.quantities(c.warehouse_id, [c.sku])).get(c.sku, 0)
                decision = domain.correction(
                    (on_hand, seq), (c.expected_on_hand, c.expected_last_sequence), (c.on_hand, c.sequence)
                )
                if decision == "APPLY":
                    await self.book(
                        [
                            (
                                c.warehouse_id,
                                c.sku,
                                c.on_hand - on_hand,
                                wms_msgs.MOVEMENT_REASON_ADJUSTMENT,
                                f"fix:{reference[:60]}:{key}",
                            )
                        ]
                    )
                    await self.erp.set_cursor(tx, key, c.sequence)
                    await tx.emit(
                        "erp.inventory.corrected",
                        msgs.InventoryCorrected(
                            sku=c.sku,
                            warehouse_id=c.warehouse_id,
                            on_hand_before=on_hand,
                            on_hand_after=c.on_hand,
                            delta=c.on_hand - on_hand,
                            sequence=c.sequence,
                            reference=reference,
                            detail=c.detail,
                        ),
                        key=f"{c.warehouse_id}/{c.sku}",
                    )
                    log.warning(
                        "ledger.corrected",
                        sku=c.sku,
                        warehouse_id=c.warehouse_id,
                        before=on_hand,
                        after=c.on_hand,
                        sequence=c.sequence,
                        reference=reference,
                    )
            result = erp_pb2.LedgerCorrectionResult(
                sku=c.sku, warehouse_id=c.warehouse_id, applied=decision != "STALE"
            )
            now = (await self.quantities(c.warehouse_id, [c.sku])).get(c.sku, 0)
            result.position.CopyFrom(
                erp_pb2.LedgerPosition(
                    sku=c.sku,
                    warehouse_id=c.warehouse_id,
                    on_hand=now,
                    last_sequence=await self.erp.cursor(key),
                )
            )
            results.append(result)
        return results
