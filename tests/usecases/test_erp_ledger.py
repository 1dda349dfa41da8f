"""The ERP inventory ledger, use case by use case: it follows WMS's movements in
sequence order, ignores stale ones, takes a gap as WMS reports it, and is corrected by
reconciliation only while a position is still as the reconciliation read it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crossdock.erp.v1 import erp_pb2
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.erp.store import ledger_entries
from services.mesh.bus import PermanentError
from services.mesh.errors import InvalidArgument
from tests.usecases.erp_support import builtin_erp, movement


@pytest.fixture
async def erp(usecase_store):
    return await builtin_erp(usecase_store)


async def positions(erp, warehouse_id: str) -> list[tuple[str, int, int]]:
    found, _ = await erp.backend.ledger.list_positions(100, "", warehouse_id)
    return [(p.sku, p.on_hand, p.last_sequence) for p in found]


async def entries(erp, sku: str) -> list[tuple]:
    e = ledger_entries.c
    async with erp.store.read() as conn:
        return [tuple(r) for r in (await conn.execute(
            select(e.sequence, e.delta, e.on_hand_after, e.reason, e.reference).where(e.sku == sku)
            .order_by(e.id))).all()]


async def test_the_ledger_follows_wms_and_ignores_stale_movements(erp):
    await erp.move(movement("SKU-1", "WH-1", 1, 10, 10, reference="R-1"),
                   movement("SKU-1", "WH-1", 2, -3, 7, reference="R-1"),
                   movement("SKU-1", "WH-1", 1, 10, 999),       # stale: already applied
                   movement("SKU-2", "WH-1", 5, 1, 4),          # a gap: WMS is the truth
                   movement("SKU-1", "WH-2", 1, 5, 5))
    await erp.move(movement("SKU-1", "WH-1", 2, -3, 0))         # stale in a later batch too
    assert await positions(erp, "WH-1") == [("SKU-1", 7, 2), ("SKU-2", 4, 5)]
    assert await entries(erp, "SKU-1") == [(1, 10, 10, "RECEIPT", "R-1"), (2, -3, 7, "RECEIPT", "R-1"),
                                           (1, 5, 5, "RECEIPT", "")]


async def test_a_movement_without_a_position_or_sequence_is_refused(erp):
    with pytest.raises(PermanentError, match="sequence"):
        await erp.move(movement("SKU-1", "WH-1", 0, 1, 1))


async def test_corrections_are_conditional_audited_and_idempotent(erp, outbox):
    await erp.move(movement("SKU-L", "WH-L", 1, 10, 10, reference="R1"))

    def correction(expected_on_hand: int, expected_seq: int) -> erp_pb2.LedgerCorrection:
        return erp_pb2.LedgerCorrection(sku="SKU-L", warehouse_id="WH-L", expected_on_hand=expected_on_hand,
                                        expected_last_sequence=expected_seq, on_hand=15, sequence=2,
                                        detail="MISSED_MOVEMENTS")

    (stale,) = await erp.backend.ledger.correct("RECON-T", [correction(9, 1)])
    assert not stale.applied and stale.position.on_hand == 10
    (done,) = await erp.backend.ledger.correct("RECON-T", [correction(10, 1)])
    assert done.applied and (done.position.on_hand, done.position.last_sequence) == (15, 2)
    (again,) = await erp.backend.ledger.correct("RECON-T", [correction(10, 1)])
    assert again.applied and again.position.on_hand == 15
    assert await entries(erp, "SKU-L") == [(1, 10, 10, "RECEIPT", "R1"),
                                           (2, 5, 15, "RECONCILIATION", "RECON-T")]
    (event,) = [p.body for p in await outbox(erp.store, "erp.inventory.corrected")]
    assert (event.on_hand_before, event.on_hand_after, event.delta, event.reference) == (10, 15, 5, "RECON-T")
    # The lost movement's event arriving late is stale now; the next one applies.
    await erp.move(movement("SKU-L", "WH-L", 2, 5, 15, reason=wms_msgs.MOVEMENT_REASON_SHIPMENT),
                   movement("SKU-L", "WH-L", 3, -3, 12, reason=wms_msgs.MOVEMENT_REASON_SHIPMENT))
    assert await positions(erp, "WH-L") == [("SKU-L", 12, 3)]


async def test_a_correction_may_create_a_position_erp_never_saw(erp):
    (done,) = await erp.backend.ledger.correct("RECON-1", [erp_pb2.LedgerCorrection(
        sku="SKU-N", warehouse_id="WH-N", on_hand=4, sequence=3, detail="UNKNOWN_TO_ERP")])
    assert done.applied and await positions(erp, "WH-N") == [("SKU-N", 4, 3)]


async def test_a_correction_without_a_reference_or_a_position_is_refused(erp):
    with pytest.raises(InvalidArgument) as info:
        await erp.backend.ledger.correct("", [erp_pb2.LedgerCorrection()])
    assert {f for f, _ in info.value.violations} == {"reference", "corrections[0]"}
