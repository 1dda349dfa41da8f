"""Warehouse choice at intake: by coverage, and from what WMS last said when it is slow."""

from __future__ import annotations

import asyncio

import pytest

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import DownstreamUnavailable, NotFound
from services.ordertoship.placement import Placement, best_warehouse


def test_the_warehouse_covering_most_lines_then_units_wins_ties_by_id():
    available = {("A", "x"): 5, ("B", "x"): 5, ("B", "y"): 1, ("C", "y"): 3}
    assert best_warehouse(["C", "B", "A"], available, [("x", 5), ("y", 2)]) == "B"
    assert best_warehouse(["B", "A"], available, [("x", 5)]) == "A"


class SlowableWms:
    """A stand-in WMS stub answering after ``delay`` seconds (the gRPC client's interface)."""

    def __init__(self, positions: dict[tuple[str, str], int]) -> None:
        self.positions = positions
        self.delay = 0.0
        self.calls = 0

    async def ListWarehouses(self, req):
        await asyncio.sleep(self.delay)
        return wms_pb2.ListWarehousesResponse(warehouses=[
            wms_pb2.Warehouse(warehouse_id=w) for w in sorted({w for w, _ in self.positions})])

    async def GetAvailability(self, req):
        self.calls += 1
        await asyncio.sleep(self.delay)
        return wms_pb2.GetAvailabilityResponse(positions=[
            wms_pb2.InventoryPosition(warehouse_id=w, sku=s, available=q)
            for (w, s), q in self.positions.items() if s in req.skus])


class Clients:
    def __init__(self, wms) -> None:
        self.wms = wms


def order(**lines: int) -> pb.SubmitOrderRequest:
    return pb.SubmitOrderRequest(lines=[pb.OrderLine(sku=s, quantity=q) for s, q in lines.items()])


async def test_a_slow_wms_is_not_waited_for_once_its_availability_is_known():
    wms = SlowableWms({("EAST", "x"): 10, ("WEST", "x"): 0})
    placement = Placement(Clients(wms), budget=0.05)
    assert await placement.choose(order(x=3)) == ("EAST", "")
    # WMS slows down: intake answers within the budget from what WMS last said...
    wms.delay, wms.positions = 0.3, {("EAST", "x"): 0, ("WEST", "x"): 10}
    started = asyncio.get_running_loop().time()
    warehouse, note = await placement.choose(order(x=3))
    assert (warehouse, "slower than 50 ms" in note) == ("EAST", True)
    assert asyncio.get_running_loop().time() - started < 0.3
    # ...and the late answer, when it comes, is what the next order is placed by.
    await asyncio.wait_for(asyncio.gather(*placement._background), 5)
    assert (await placement.choose(order(x=3)))[0] == "WEST"


async def test_nothing_known_and_wms_slow_is_left_to_the_callers_fallback():
    wms = SlowableWms({("EAST", "x"): 1})
    wms.delay = 0.3
    with pytest.raises(DownstreamUnavailable):
        await Placement(Clients(wms), budget=0.05).choose(order(x=1))


async def test_a_requested_warehouse_must_exist():
    placement = Placement(Clients(SlowableWms({("EAST", "x"): 1})), budget=1)
    assert await placement.choose(pb.SubmitOrderRequest(warehouse_id="EAST")) == ("EAST", "")
    with pytest.raises(NotFound):
        await placement.choose(pb.SubmitOrderRequest(warehouse_id="NOWHERE"))
