"""WMS fulfilment use cases in-process: allocation, backorders, rejection, pick, pack,
shipment and its waves, cancel, exceptions and their resolution, the handheld RPCs."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from crossdock.erp.v1 import erp_pb2
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.bus import PermanentError
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.store import Store
from services.wms import fulfilment, replicas, stock
from services.wms import fulfilment_rules as rules
from services.wms.__main__ import MIGRATIONS
from services.wms.fulfilment import NotReady
from services.wms.store import metadata
from tests.helpers import PG_URL, pg_database, pg_drop

from .wms import DELAYS, WH, Warehouse, lines, milestones, pairs, status_name

SHIP_PARTIAL, CANCEL_LINES = wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL, wms_pb2.EXCEPTION_ACTION_CANCEL_LINES


@pytest.fixture
async def wms(usecase_store) -> Warehouse:
    return await Warehouse.open(usecase_store)


# ---- a new order ----


async def test_an_order_that_fits_is_allocated_whole_and_announced(wms):
    await wms.receive("R-1", A=10, B=5)
    await wms.sent()
    await wms.create("O-1", A=3, B=2)
    (allocated,) = await wms.sent()
    assert allocated.subject == "wms.fulfilment.allocated" and allocated.key == "O-1"
    order = allocated.body.fulfilment_order
    assert (status_name(order), milestones(order), pairs(order.lines)) == (
        "ALLOCATED", ["ALLOCATED"], [("A", 3), ("B", 2)])
    assert (order.fulfilment_id, order.ship_to.name, order.wave) == ("FUL-O-1", "Ada", 1)
    assert await wms.positions("A", "B") == {"A": (10, 3, 1), "B": (5, 2, 1)}


async def test_a_second_create_for_the_same_order_changes_nothing(wms):
    await wms.allocated_order("O-1", A=3)
    await wms.create("O-1", A=9, B=9)
    assert await wms.sent() == []
    assert pairs((await wms.order("O-1")).lines) == [("A", 3)]


async def test_a_short_order_is_rejected_under_policy_cancel_and_stock_stays_untouched(wms):
    await wms.receive("R-1", A=1)
    await wms.sent()
    await wms.create("O-1", wms_pb2.SHORTAGE_POLICY_CANCEL, A=2, B=1)
    (rejected,) = await wms.sent()
    assert (rejected.subject, rejected.body.reason_code) == ("wms.fulfilment.rejected", "INSUFFICIENT_STOCK")
    assert pairs(rejected.body.shortages) == [("A", 1), ("B", 1)]
    order = await wms.order("O-1")
    assert (status_name(order), milestones(order)) == ("REJECTED", ["REJECTED"])
    assert await wms.positions("A") == {"A": (1, 0, 1)}


async def test_an_unknown_warehouse_or_invalid_lines_are_rejected(wms):
    await wms.create("O-1", warehouse_id="NOPE", A=1)
    await wms.create("O-2", A=0)
    no_lines = events.CreateFulfilment(order_id="O-3", warehouse_id=WH)
    await wms.run(fulfilment.create_fulfilment, no_lines, DELAYS)
    rejected = {m.body.fulfilment_order.order_id: m.body for m in await wms.sent("wms.fulfilment.rejected")}
    assert (rejected["O-1"].reason_code, rejected["O-1"].reason) == (
        "UNKNOWN_WAREHOUSE", "no warehouse 'NOPE'")
    assert (rejected["O-2"].reason_code, rejected["O-2"].reason) == (
        "INVALID_LINES", "lines[0].quantity: must be positive")
    assert rejected["O-3"].reason == "lines: at least one line is required"


async def test_an_unknown_shortage_policy_is_a_permanent_error(wms):
    with pytest.raises(PermanentError):
        await wms.create("O-1", policy=7, A=1)


async def test_backorders_are_allocated_first_come_first_served_when_stock_arrives(wms):
    await wms.receive("R-1", C=2)
    await wms.create("O-1", C=3)
    await wms.create("O-2", wms_pb2.SHORTAGE_POLICY_UNSPECIFIED, C=3)
    backordered = await wms.sent("wms.fulfilment.backordered")
    assert [(m.body.fulfilment_order.order_id, pairs(m.body.shortages)) for m in backordered] == [
        ("O-1", [("C", 1)]), ("O-2", [("C", 1)])]
    assert milestones(await wms.order("O-1")) == ["BACKORDERED"]
    assert await wms.positions("C") == {"C": (2, 0, 1)}

    await wms.receive("R-2", C=2)  # 4 units: enough for the first only
    assert [m.body.fulfilment_order.order_id for m in await wms.sent("wms.fulfilment.allocated")] == ["O-1"]
    assert milestones(await wms.order("O-1")) == ["BACKORDERED", "ALLOCATED"]
    assert await wms.status("O-2") == "BACKORDERED"
    assert await wms.positions("C") == {"C": (4, 3, 2)}

    # Cancelling the first releases its allocation, which serves the second.
    await wms.cancel("O-1", "customer")
    assert [(m.subject, m.body.fulfilment_order.order_id) for m in await wms.sent("wms.fulfilment")] == [
        ("wms.fulfilment.cancelled", "O-1"), ("wms.fulfilment.allocated", "O-2")]
    assert await wms.positions("C") == {"C": (4, 3, 2)}


# ---- pick, pack, ship ----


async def test_pick_pack_label_and_ship_one_wave(wms):
    await wms.run(replicas.replicate_item, erp_pb2.Item(sku="A", weight_grams=200))
    await wms.allocated_order("O-1", A=3, B=2)
    assert await wms.pick("O-1")
    assert await wms.subjects() == ["wms.fulfilment.picked"]
    assert await wms.pack("O-1")
    (packed,) = await wms.sent()
    assert packed.body.fulfilment_order.package_weight_grams == 3 * 200 + 2 * 500  # B unknown: 500 g
    await wms.assign("O-1", "SHP-1")
    assert await wms.sent() == []  # labelled: no event of its own
    labelled = await wms.order("O-1")
    assert (status_name(labelled), labelled.shipment_id, labelled.carrier_id) == ("LABELLED", "SHP-1", "FAST")

    assert await wms.ship("O-1")
    sent = await wms.sent()
    assert [m.subject for m in sent] == ["wms.inventory.adjusted"] * 2 + ["wms.fulfilment.shipped"]
    assert [(m.body.sku, m.body.delta, m.body.on_hand_after, m.body.sequence, m.body.reference,
             m.body.reason) for m in sent[:2]] == [
        ("A", -3, 0, 2, "O-1", events.MOVEMENT_REASON_SHIPMENT),
        ("B", -2, 0, 2, "O-1", events.MOVEMENT_REASON_SHIPMENT)]
    shipped = sent[2].body
    assert (shipped.wave, pairs(shipped.shipped_lines), pairs(shipped.remaining_lines)) == (
        1, [("A", 3), ("B", 2)], [])
    assert milestones(shipped.fulfilment_order) == ["ALLOCATED", "PICKED", "PACKED", "LABELLED", "SHIPPED"]
    assert await wms.positions("A", "B") == {"A": (0, 0, 2), "B": (0, 0, 2)}
    assert not await wms.ship("O-1")  # once


async def test_steps_out_of_order_change_nothing(wms):
    await wms.allocated_order("O-1", A=1)
    assert not await wms.pack("O-1")
    assert not await wms.ship("O-1")
    assert await wms.pick("O-1") and not await wms.pick("O-1")
    assert not await wms.pick("O-?")
    assert await wms.subjects() == ["wms.fulfilment.picked"]


async def test_a_shipment_waits_for_packing_and_ignores_repeats_closed_orders_and_earlier_waves(wms):
    await wms.allocated_order("O-1", A=1)
    with pytest.raises(NotReady):
        await wms.assign("O-1", "SHP-1")  # retried with back-off until packed
    await wms.pick("O-1")
    await wms.pack("O-1")
    await wms.assign("O-1", "SHP-1", wave=1)
    await wms.assign("O-1", "SHP-1")  # a repeat
    await wms.assign("O-1", "SHP-2")  # a stale booking for a labelled order
    assert (await wms.order("O-1")).shipment_id == "SHP-1"
    await wms.ship("O-1")
    await wms.assign("O-1", "SHP-1")
    with pytest.raises(PermanentError):
        await wms.assign("O-?", "SHP-?")
    await wms.allocated_order("O-2", A=1)
    await wms.cancel("O-2")
    await wms.assign("O-2", "SHP-2")  # a closed order: ignored
    assert await wms.status("O-2") == "CANCELLED"


# ---- cancel ----


async def test_cancel_releases_the_allocation_until_labelled_then_is_refused(wms):
    await wms.allocated_order("O-1", A=2)
    await wms.receive("R-more", A=3)
    await wms.sent()
    await wms.cancel("O-1")
    await wms.cancel("O-1", "again")
    first, again = await wms.sent()
    assert [(m.subject, status_name(m.body.fulfilment_order), m.body.reason) for m in (first, again)] == [
        ("wms.fulfilment.cancelled", "CANCELLED", ""), ("wms.fulfilment.cancelled", "CANCELLED", "again")]
    assert [(p.sku, p.cancelled_quantity, p.wave_quantity) for p in first.body.fulfilment_order.progress] == [
        ("A", 2, 0)]
    assert await wms.positions("A") == {"A": (5, 0, 2)}

    await wms.allocated_order("O-2", A=1)
    await wms.pick("O-2")
    await wms.pack("O-2")
    await wms.assign("O-2")
    await wms.sent()
    await wms.cancel("O-2")
    (refused,) = await wms.sent()
    assert (refused.subject, refused.body.reason) == (
        "wms.fulfilment.cancel_refused", "fulfilment is already LABELLED: too late to cancel")
    assert await wms.status("O-2") == "LABELLED"


async def test_a_cancel_that_overtakes_its_create_leaves_a_tombstone_and_the_create_allocates_nothing(wms):
    await wms.receive("R-1", A=5)
    await wms.sent()
    await wms.cancel("O-1", "customer")  # redelivered out of order: before its create
    (cancelled,) = await wms.sent()
    assert (cancelled.subject, cancelled.body.reason) == ("wms.fulfilment.cancelled", "customer")
    assert status_name(cancelled.body.fulfilment_order) == "CANCELLED"
    await wms.create("O-1", A=2)
    order = await wms.order("O-1")
    assert (status_name(order), milestones(order), list(order.lines)) == ("CANCELLED", ["CANCELLED"], [])
    assert await wms.sent() == []
    assert await wms.positions("A") == {"A": (5, 0, 1)}  # nothing allocated for a cancelled order
    await wms.cancel("O-1", "again")  # a repeat says again that it is cancelled
    assert [(m.subject, m.body.reason) for m in await wms.sent()] == [("wms.fulfilment.cancelled", "again")]
    await wms.receive("R-2", A=1)  # nor is it served as a backorder later
    assert await wms.sent("wms.fulfilment") == [] and await wms.status("O-1") == "CANCELLED"


# ---- exceptions ----


async def test_a_short_pick_writes_off_the_missing_units_and_waits_for_a_decision(wms):
    await wms.allocated_order("O-1", A=3, B=2)
    assert await wms.pick("O-1", A=1)
    adjusted, exception = await wms.sent()
    assert (adjusted.body.sku, adjusted.body.delta, adjusted.body.reason, adjusted.body.reference) == (
        "A", -2, events.MOVEMENT_REASON_ADJUSTMENT, "short-pick O-1")
    assert exception.subject == "wms.fulfilment.exception"
    assert (exception.body.kind, pairs(exception.body.lines), exception.body.detail) == (
        wms_pb2.EXCEPTION_KIND_SHORT_PICK, [("A", 2)], "found less than allocated: A 1 of 3")
    order = exception.body.fulfilment_order
    assert status_name(order) == "EXCEPTION" and order.exception.HasField("time")
    assert [(p.sku, p.wave_quantity, p.exception_quantity) for p in order.progress] == [
        ("A", 1, 2), ("B", 2, 0)]
    assert await wms.positions("A") == {"A": (1, 1, 2)}
    assert not await wms.pack("O-1")  # it waits for order-to-ship


async def test_ship_partial_ships_what_is_there_and_the_rest_as_a_second_wave(wms):
    await wms.allocated_order("O-1", A=3, B=2)
    await wms.pick("O-1", A=1)
    await wms.sent()
    await wms.resolve("O-1", SHIP_PARTIAL)
    (picked,) = await wms.sent("wms.fulfilment")
    assert picked.subject == "wms.fulfilment.picked"
    assert not picked.body.fulfilment_order.HasField("exception")
    await wms.pack("O-1")
    await wms.assign("O-1", "SHP-1")
    await wms.receive("R-2", A=5)  # the missing units arrive
    await wms.sent()
    await wms.ship("O-1")
    shipped, backordered, allocated = await wms.sent("wms.fulfilment")
    assert pairs(shipped.body.shipped_lines) == [("A", 1), ("B", 2)]
    assert pairs(shipped.body.remaining_lines) == [("A", 2)]
    assert (backordered.subject, pairs(backordered.body.shortages)) == (
        "wms.fulfilment.backordered", [("A", 2)])
    assert (allocated.subject, allocated.body.fulfilment_order.wave) == ("wms.fulfilment.allocated", 2)
    assert allocated.body.fulfilment_order.shipment_id == ""  # the next wave books its own shipment
    await wms.pick("O-1")
    await wms.pack("O-1")
    await wms.assign("O-1", "SHP-2", wave=2)
    await wms.ship("O-1")
    (last,) = await wms.sent("wms.fulfilment.shipped")
    assert (last.body.wave, pairs(last.body.shipped_lines), pairs(last.body.remaining_lines)) == (
        2, [("A", 2)], [])
    assert await wms.status("O-1") == "SHIPPED"


async def test_cancel_lines_cancels_the_missing_units_and_ships_the_rest(wms):
    await wms.allocated_order("O-1", A=3, B=2)
    await wms.pick("O-1", A=1)
    await wms.resolve("O-1", CANCEL_LINES)
    await wms.pack("O-1")
    await wms.assign("O-1")
    await wms.sent()
    await wms.ship("O-1")
    (shipped,) = await wms.sent("wms.fulfilment")
    assert pairs(shipped.body.remaining_lines) == []
    progress = shipped.body.fulfilment_order.progress
    assert [(p.sku, p.shipped_quantity, p.cancelled_quantity) for p in progress] == [("A", 1, 2), ("B", 2, 0)]


async def test_with_nothing_left_in_the_wave_a_decision_backorders_or_cancels(wms):
    await wms.allocated_order("O-1", A=2)
    await wms.receive("R-more", A=5)
    await wms.pick("O-1", A=0)
    await wms.sent()
    await wms.resolve("O-1", SHIP_PARTIAL)  # waits for stock again: it is there, so allocated at once
    assert [m.subject for m in await wms.sent("wms.fulfilment")] == [
        "wms.fulfilment.backordered", "wms.fulfilment.allocated"]

    await wms.allocated_order("O-2", B=2)
    await wms.pick("O-2", B=0)
    await wms.sent()
    await wms.resolve("O-2", CANCEL_LINES)
    (cancelled,) = await wms.sent("wms.fulfilment")
    assert (cancelled.subject, cancelled.body.reason) == (
        "wms.fulfilment.cancelled", "every missing line cancelled")


async def test_damage_at_packing_is_an_exception_and_the_package_is_weighed_again(wms):
    await wms.allocated_order("O-1", A=3, B=2)
    await wms.pick("O-1")
    await wms.sent()
    assert await wms.pack("O-1", B=1)
    adjusted, exception = await wms.sent()
    assert (adjusted.body.sku, adjusted.body.delta, adjusted.body.reference) == ("B", -1, "damaged O-1")
    assert (exception.body.kind, exception.body.detail) == (
        wms_pb2.EXCEPTION_KIND_DAMAGED, "damaged at packing: B 1")
    await wms.resolve("O-1", SHIP_PARTIAL)
    (packed,) = await wms.sent()
    assert packed.subject == "wms.fulfilment.packed"
    assert packed.body.fulfilment_order.package_weight_grams == (3 + 1) * 500


async def test_a_decision_for_another_wave_or_no_open_exception_is_ignored(wms):
    await wms.allocated_order("O-1", A=3)
    await wms.resolve("O-1", SHIP_PARTIAL)  # nothing open
    await wms.pick("O-1", A=1)
    await wms.sent()
    await wms.resolve("O-1", SHIP_PARTIAL, wave=2)
    assert await wms.sent() == [] and await wms.status("O-1") == "EXCEPTION"
    with pytest.raises(PermanentError):
        await wms.resolve("O-1", wms_pb2.EXCEPTION_ACTION_UNSPECIFIED)
    with pytest.raises(PermanentError):
        await wms.resolve("O-?", SHIP_PARTIAL)


# ---- the handheld RPCs ----


async def test_milestone_rpcs_answer_the_fulfilment_or_say_why_not(wms):
    await wms.allocated_order("O-1", A=3)
    with pytest.raises(FailedPrecondition) as info:
        await wms.run(fulfilment.confirm_pack, "O-1", DELAYS, 0)
    assert (info.value.reason, str(info.value)) == (
        "FULFILMENT_NOT_PICKED", "fulfilment order 'O-1' is ALLOCATED, not PICKED")
    with pytest.raises(NotFound):
        await wms.run(fulfilment.confirm_pick, "O-?", DELAYS)
    for bad in (lines(Z=1), lines(A=1) + lines(A=1)):
        with pytest.raises(InvalidArgument):
            await wms.run(fulfilment.confirm_pick, "O-1", DELAYS, bad)
    with pytest.raises(InvalidArgument):
        await wms.run(fulfilment.confirm_pack, "O-1", DELAYS, -1)
    with pytest.raises(InvalidArgument):
        await wms.run(fulfilment.confirm_pack, "O-1", DELAYS, 0, lines(A=0))

    picked = await wms.run(fulfilment.confirm_pick, "O-1", DELAYS, lines(A=3))
    assert status_name(picked) == "PICKED"
    packed = await wms.run(fulfilment.confirm_pack, "O-1", DELAYS, 1234)
    assert packed.package_weight_grams == 1234
    with pytest.raises(FailedPrecondition) as info:
        await wms.run(fulfilment.confirm_ship, "O-1", DELAYS)
    assert info.value.reason == "NO_SHIPMENT_ASSIGNED"
    await wms.assign("O-1")
    assert status_name(await wms.run(fulfilment.confirm_ship, "O-1", DELAYS)) == "SHIPPED"
    with pytest.raises(FailedPrecondition) as info:
        await wms.run(fulfilment.confirm_ship, "O-1", DELAYS)
    assert info.value.reason == "FULFILMENT_SHIPPED"


# ---- two advancers at once ----


async def _pg_wms():
    name = f"crossdock_test_{uuid.uuid4().hex[:10]}"
    store = Store("wms", pg_database(PG_URL, name), metadata)
    await store.migrate(MIGRATIONS)
    return store, name


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)"))])
async def test_of_two_concurrent_advancers_exactly_one_wins(usecase_store, backend):
    if backend == "sqlite":
        wms, name = await Warehouse.open(usecase_store), None
    else:
        store, name = await _pg_wms()
        wms = Warehouse(store)
        await wms.run(stock.upsert_warehouse, wms_pb2.Warehouse(warehouse_id=WH))
    try:
        await wms.allocated_order("O-1", A=3)
        # The autopilot and a handheld pick at once, each in its own transaction.
        picks = await asyncio.gather(wms.pick("O-1"), wms.pick("O-1", A=1), wms.pick("O-1"))
        assert sorted(picks) == [False, False, True]
        order = await wms.order("O-1")
        assert milestones(order).count("PICKED") + milestones(order).count("EXCEPTION") == 1
        assert len(await wms.sent("wms.fulfilment")) == 1
    finally:
        if name:
            await wms.store.close()
            pg_drop(PG_URL, name)


async def test_a_decision_made_on_a_stale_view_changes_nothing(wms):
    await wms.allocated_order("O-1", A=3)
    async with wms.store.transaction() as tx:
        seen = await fulfilment.load_fulfilment(tx.conn, "O-1")
    assert await wms.pick("O-1", A=1)  # someone else got there first: a short pick
    await wms.sent()
    async with wms.store.transaction() as tx:
        assert not await fulfilment.apply_change(tx, seen, rules.decide_pick(seen), DELAYS)
    order = await wms.order("O-1")
    assert status_name(order) == "EXCEPTION" and milestones(order) == ["ALLOCATED", "EXCEPTION"]
    assert await wms.sent() == [] and await wms.positions("A") == {"A": (1, 1, 2)}
