"""Replenishment rules: the crossing trigger, the order-up-to quantity, purchase vs transfer."""

from __future__ import annotations

from services.erp.replenishment import PURCHASE, TRANSFER, Source, plan_replenishment
from services.wms.replenishment import Trigger, inventory_position, order_up_to_quantity, trigger


def test_position_subtracts_allocations_and_backordered_demand():
    assert inventory_position(on_hand=10, allocated=3, backordered=0) == 7
    assert inventory_position(on_hand=3, allocated=0, backordered=50) == -47


def test_one_request_per_crossing_then_rearmed_at_or_above_the_reorder_point():
    rp = 10
    below = False
    requests = 0
    # Picks walk the position down, a receipt brings it back, picks again.
    for position in [15, 12, 9, 7, 3, 0, -4, 9, 10, 14, 8, 2]:
        action = trigger(below, position, rp)
        if action is Trigger.REQUEST:
            requests += 1
            below = True
        elif action is Trigger.REARM:
            below = False
    assert requests == 2  # 15 -> 9 crosses, 10 re-arms, 14 -> 8 crosses again


def test_trigger_cases():
    assert trigger(False, 9, 10) is Trigger.REQUEST
    assert trigger(True, 9, 10) is None  # already asked for this crossing
    assert trigger(True, 10, 10) is Trigger.REARM  # at the reorder point is not below
    assert trigger(False, 10, 10) is None
    assert trigger(False, -1, 0) is Trigger.REQUEST  # reorder point 0: backorders ask


def test_quantity_orders_up_to_reorder_point_plus_reorder_quantity():
    assert order_up_to_quantity(position=7, reorder_point=10, reorder_quantity=20) == 23
    assert order_up_to_quantity(position=-47, reorder_point=5, reorder_quantity=60) == 112
    # Delivered, the position is exactly reorder_point + reorder_quantity.
    assert -47 + order_up_to_quantity(-47, 5, 60) == 65
    assert order_up_to_quantity(position=10, reorder_point=10, reorder_quantity=0) == 1


def test_transfer_when_another_warehouse_covers_the_whole_quantity():
    plan = plan_replenishment("WH-A", 30, [Source("WH-B", on_hand=100, reorder_point=20)])
    assert (plan.kind, plan.source_warehouse_id) == (TRANSFER, "WH-B")
    assert "80 spare" in plan.note


def test_purchase_when_no_warehouse_covers_it():
    # Spare = on hand - own reorder point - planned transfers out: 50 - 20 - 10 = 20 < 30.
    plan = plan_replenishment("WH-A", 30, [Source("WH-B", on_hand=50, reorder_point=20, committed=10)])
    assert (plan.kind, plan.source_warehouse_id) == (PURCHASE, "")
    assert plan_replenishment("WH-A", 30, []).kind == PURCHASE
    # Never from itself, never split across warehouses.
    assert plan_replenishment("WH-A", 30, [Source("WH-A", 1_000)]).kind == PURCHASE
    assert plan_replenishment("WH-A", 30, [Source("WH-B", 20), Source("WH-C", 20)]).kind == PURCHASE


def test_exact_cover_transfers_and_the_most_spare_wins_ties_by_id():
    assert plan_replenishment("WH-A", 30, [Source("WH-B", 50, 20)]).kind == TRANSFER
    sources = [Source("WH-C", 100), Source("WH-B", 100), Source("WH-D", 60)]
    assert plan_replenishment("WH-A", 30, sources).source_warehouse_id == "WH-B"
    plan = plan_replenishment("WH-A", 30, [Source("WH-D", 60), Source("WH-E", 90)])
    assert plan.source_warehouse_id == "WH-E"
