"""A SIGKILL of any one service mid-run loses nothing: after a restart every
order completes, invoiced exactly once, with stock and ledger exact."""

from __future__ import annotations

import zlib

import pytest

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from tests.e2e.conftest import make_world
from tests.e2e.test_order_to_ship import check_books, random_orders, statuses, submit_all, wait_all
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

IN_FLIGHT = {pb.ORDER_STATUS_RELEASED, pb.ORDER_STATUS_ALLOCATED, pb.ORDER_STATUS_PICKED,
             pb.ORDER_STATUS_PACKED, pb.ORDER_STATUS_SHIPMENT_BOOKED, pb.ORDER_STATUS_SHIPPED}


@pytest.mark.parametrize("victim", ["erp", "wms", "tms", "ordertoship"])
async def test_sigkill_mid_run_then_every_order_completes(mesh, stubs, victim):
    world = await make_world(stubs)
    order_ids = await submit_all(stubs, random_orders(world, 20, seed=zlib.crc32(victim.encode())))

    async def some_in_flight():
        orders = await statuses(stubs, order_ids)
        return any(o.status in IN_FLIGHT for o in orders.values())
    await eventually(some_in_flight, timeout=60, interval=0.05, what="orders in flight")

    mesh.services[victim].kill()
    mesh.services[victim].start()
    mesh.services[victim].wait_healthy()

    orders = await wait_all(stubs, order_ids, timeout=240)
    await check_books(stubs, world, orders)
