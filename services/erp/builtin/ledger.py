"""The built-in ERP's inventory ledger: positions per SKU and warehouse following WMS's
movements (set-based for a burst), and conditional corrections from reconciliation."""

from __future__ import annotations

import structlog
from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.mesh.bus import PermanentError
from services.mesh.store import Store, Tx, insert_ignore, utcnow

from .. import contract, domain
from ..store import ledger_entries, ledger_positions
from .masterdata import page

log = structlog.get_logger()


def position_pb(row) -> erp_pb2.LedgerPosition:
    p = erp_pb2.LedgerPosition(sku=row.sku, warehouse_id=row.warehouse_id, on_hand=row.on_hand,
                               last_sequence=row.last_sequence)
    p.update_time.FromDatetime(row.updated_at)
    return p


def movement_reason(ev: wms_msgs.InventoryAdjusted) -> str:
    reason = wms_msgs.MovementReason.DESCRIPTOR.values_by_number.get(ev.reason)
    return reason.name.removeprefix("MOVEMENT_REASON_") if reason else str(ev.reason)


def movements(moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> list[domain.Movement]:
    """The movements of InventoryAdjusted events (refused without a position or a sequence)."""
    for ev, _ in moves:
        if not ev.sku or not ev.warehouse_id or ev.sequence < 1:
            raise PermanentError("InventoryAdjusted needs sku, warehouse_id and a sequence >= 1")
    return [domain.Movement(ev.sku, ev.warehouse_id, ev.sequence, ev.on_hand_after, ev.delta, (ev, event_id))
            for ev, event_id in moves]


def log_update(update_: domain.LedgerUpdate, last: dict) -> None:
    for m in update_.stale:
        log.info("ledger.stale_movement_ignored", last_sequence=last.get((m.sku, m.warehouse_id), (0, 0))[1],
                 sku=m.sku, warehouse_id=m.warehouse_id, sequence=m.sequence)
    for m, (first, last_missing) in update_.gaps:
        log.warning("ledger.sequence_gap", missing_from=first, missing_to=last_missing, sku=m.sku,
                    warehouse_id=m.warehouse_id, sequence=m.sequence)


async def apply_inventory_movements(tx: Tx, moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> None:
    """Follow WMS (the truth) for many movements at once (a burst): a handful of statements.

    Movements of one position are applied in sequence order; a stale one is
    ignored and a gap logged.
    """
    wanted = movements(moves)
    if not wanted:
        return
    conn, now = tx.conn, utcnow()
    lp = ledger_positions.c
    pairs = sorted({(m.sku, m.warehouse_id) for m in wanted})
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(ledger_positions).on_conflict_do_nothing(), [
        dict(sku=sku, warehouse_id=wh, on_hand=0, last_sequence=0, updated_at=now) for sku, wh in pairs])
    state = {}
    for i in range(0, len(pairs), 400):
        rows = await conn.execute(select(lp.sku, lp.warehouse_id, lp.on_hand, lp.last_sequence)
                                  .where(tuple_(lp.sku, lp.warehouse_id).in_(pairs[i:i + 400]))
                                  .order_by(lp.sku, lp.warehouse_id).with_for_update())
        state.update({(r.sku, r.warehouse_id): (r.on_hand, r.last_sequence) for r in rows})
    result = domain.apply_movements(state, wanted)
    log_update(result, state)
    if not result.applied:
        return
    await conn.execute(
        update(ledger_positions).where(lp.sku == bindparam("k_sku"), lp.warehouse_id == bindparam("k_wh"))
        .values(on_hand=bindparam("v_on_hand"), last_sequence=bindparam("v_seq"), updated_at=now),
        [dict(k_sku=sku, k_wh=wh, v_on_hand=on_hand, v_seq=seq)
         for (sku, wh), (on_hand, seq) in sorted(result.positions.items())])
    entries = []
    for m in result.applied:
        ev, event_id = m.key
        entries.append(dict(sku=m.sku, warehouse_id=m.warehouse_id, sequence=m.sequence, delta=ev.delta,
                            on_hand_after=m.on_hand_after, reason=movement_reason(ev), reference=ev.reference,
                            event_id=event_id, applied_at=now))
    await conn.execute(ledger_entries.insert(), entries)


async def correct_ledger(tx: Tx, reference: str,
                         corrections: list[erp_pb2.LedgerCorrection]) -> list[erp_pb2.LedgerCorrectionResult]:
    """Bring positions to WMS truth, each only while it is still as the caller read it.

    A correction is audited twice: a ledger entry with reason RECONCILIATION
    (the run as its reference) and an erp.inventory.corrected event. A
    position already at the target is reported applied without a second entry.
    """
    contract.validate_corrections(reference, corrections)
    conn, now, results = tx.conn, utcnow(), []
    for c in corrections:
        key = (ledger_positions.c.sku == c.sku, ledger_positions.c.warehouse_id == c.warehouse_id)
        if c.expected_on_hand == 0 and c.expected_last_sequence == 0:
            await insert_ignore(conn, ledger_positions, dict(
                sku=c.sku, warehouse_id=c.warehouse_id, on_hand=0, last_sequence=0, updated_at=now))
        pos = (await conn.execute(select(ledger_positions).where(*key).with_for_update())).first()
        decision = domain.correction(None if pos is None else (pos.on_hand, pos.last_sequence),
                                     (c.expected_on_hand, c.expected_last_sequence), (c.on_hand, c.sequence))
        if decision == "APPLY":
            await conn.execute(update(ledger_positions).where(*key).values(
                on_hand=c.on_hand, last_sequence=c.sequence, updated_at=now))
            event_id = await tx.emit("erp.inventory.corrected", msgs.InventoryCorrected(
                sku=c.sku, warehouse_id=c.warehouse_id, on_hand_before=pos.on_hand,
                on_hand_after=c.on_hand, delta=c.on_hand - pos.on_hand, sequence=c.sequence,
                reference=reference, detail=c.detail), key=f"{c.warehouse_id}/{c.sku}")
            await conn.execute(ledger_entries.insert().values(
                sku=c.sku, warehouse_id=c.warehouse_id, delta=c.on_hand - pos.on_hand,
                on_hand_after=c.on_hand, sequence=c.sequence, reason="RECONCILIATION",
                reference=reference[:100], event_id=event_id, applied_at=now))
            log.warning("ledger.corrected", sku=c.sku, warehouse_id=c.warehouse_id,
                        before=pos.on_hand, after=c.on_hand, sequence=c.sequence, reference=reference)
        result = erp_pb2.LedgerCorrectionResult(sku=c.sku, warehouse_id=c.warehouse_id,
                                                applied=decision != "STALE")
        if (now_pos := (await conn.execute(select(ledger_positions).where(*key))).first()) is not None:
            result.position.CopyFrom(position_pb(now_pos))
        results.append(result)
    return results


class BuiltinLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply_movements(self, tx: Tx, moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> None:
        await apply_inventory_movements(tx, moves)

    async def list_positions(self, page_size: int, page_token: str, warehouse_id: str):
        where = [ledger_positions.c.warehouse_id == warehouse_id] if warehouse_id else []
        async with self.store.read() as conn:
            rows, token = await page(conn, ledger_positions, ["sku", "warehouse_id"], page_size,
                                     page_token, *where)
        return [position_pb(r) for r in rows], token

    async def correct(self, reference: str, corrections: list[erp_pb2.LedgerCorrection]):
        async with self.store.transaction() as tx:
            return await correct_ledger(tx, reference, corrections)
