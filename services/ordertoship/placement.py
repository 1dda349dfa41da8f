"""Choosing a new order's warehouse without letting a slow WMS slow order intake.

The choice needs two WMS lookups (the warehouses, the availability of the
order's SKUs). Intake waits for them at most ``budget`` seconds
(CROSSDOCK_ORDERTOSHIP_WMS_LOOKUP_BUDGET). A lookup that takes longer is not
cancelled: it finishes in the background and refreshes what this process last
heard from WMS, and the order is placed from that instead (the timeline says
so). The choice is advisory either way: WMS allocates under row locks and a
warehouse that turns out short backorders by the order's shortage policy.

The rule: the warehouse that covers the most lines, then the most units;
ties by id. A requested warehouse must exist: one WMS has not reported yet is
waited for (within the call's deadline), never assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh.app import Clients
from services.mesh.errors import DownstreamUnavailable, FailedPrecondition, NotFound

WAREHOUSES_TTL_S = 30.0


def best_warehouse(warehouses: Sequence[str], available: Mapping[tuple[str, str], int],
                   lines: Sequence[tuple[str, int]]) -> str:
    """The warehouse that covers the most lines, then the most units; ties by id."""
    def coverage(wh: str) -> tuple[int, int]:
        lines_covered = sum(available.get((wh, sku), 0) >= qty for sku, qty in lines)
        units = sum(min(available.get((wh, sku), 0), qty) for sku, qty in lines)
        return lines_covered, units

    return max(sorted(warehouses), key=coverage)


class Placement:
    def __init__(self, clients: Clients, budget: float) -> None:
        self.clients = clients
        self.budget = budget
        self._warehouses: list[str] = []
        self._warehouses_at = float("-inf")
        # (warehouse, sku) -> available, as WMS last said.
        self._available: dict[tuple[str, str], int] = {}
        self._background: set[asyncio.Task] = set()

    async def choose(self, req: pb.SubmitOrderRequest) -> tuple[str, str]:
        """(warehouse, note): the note says when WMS was too slow and the choice is from what it last said.

        Raises DownstreamUnavailable when WMS is slow or down and nothing is known yet.
        """
        lookup = asyncio.ensure_future(self._ask_wms(req))
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), self.budget), ""
        except TimeoutError:
            if req.warehouse_id and req.warehouse_id not in self._warehouses:
                # A warehouse WMS never reported is checked, not assumed: its answer
                # decides (NOT_FOUND when it does not exist), within the call's deadline.
                return await lookup, ""
            # Let it finish: its answer refreshes what we know for the next orders.
            self._background.add(lookup)
            lookup.add_done_callback(self._done)
        warehouse = self._from_memory(req)
        return warehouse, (f"WMS answered slower than {self.budget * 1000:.0f} ms: warehouse {warehouse} "
                           "chosen from the availability it last reported")

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure only means nothing was learnt

    async def _warehouse_ids(self) -> list[str]:
        if time.monotonic() - self._warehouses_at > WAREHOUSES_TTL_S:
            resp = await self.clients.wms.ListWarehouses(wms_pb2.ListWarehousesRequest())
            self._warehouses = [w.warehouse_id for w in resp.warehouses]
            self._warehouses_at = time.monotonic()
        return self._warehouses

    async def _ask_wms(self, req: pb.SubmitOrderRequest) -> str:
        warehouses = await self._warehouse_ids()
        if req.warehouse_id and req.warehouse_id not in warehouses:
            self._warehouses_at = float("-inf")  # maybe new since: ask again
            warehouses = await self._warehouse_ids()
        if req.warehouse_id:
            if req.warehouse_id not in warehouses:
                raise NotFound("warehouse", req.warehouse_id)
            return req.warehouse_id
        if not warehouses:
            raise FailedPrecondition("no warehouse is set up", reason="NO_WAREHOUSE")
        positions = (await self.clients.wms.GetAvailability(
            wms_pb2.GetAvailabilityRequest(skus=[ln.sku for ln in req.lines]))).positions
        for ln in req.lines:  # what WMS does not list has nothing available
            for wh in warehouses:
                self._available[(wh, ln.sku)] = 0
        self._available.update({(p.warehouse_id, p.sku): p.available for p in positions})
        return best_warehouse(warehouses, self._available, [(ln.sku, ln.quantity) for ln in req.lines])

    def _from_memory(self, req: pb.SubmitOrderRequest) -> str:
        if not self._warehouses or (req.warehouse_id and req.warehouse_id not in self._warehouses):
            raise DownstreamUnavailable("wms")  # nothing to go by: the caller's fallback
        if req.warehouse_id:
            return req.warehouse_id
        return best_warehouse(self._warehouses, self._available, [(ln.sku, ln.quantity) for ln in req.lines])
