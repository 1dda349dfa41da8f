"""Production topologies on one machine: two replicas of every service
sharing stores and durable consumers, and a 3-node NATS cluster (streams at 3
replicas) that loses a node mid-run."""

from __future__ import annotations

import pytest

from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, make_world
from tests.e2e.test_crash_recovery import IN_FLIGHT
from tests.e2e.test_order_to_ship import check_books, random_orders, statuses, submit_all, wait_all
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


async def run_orders(mesh: Mesh, n: int, seed: int, during=None) -> None:
    stubs = Stubs(mesh)
    try:
        world = await make_world(stubs)
        ids = await submit_all(stubs, random_orders(world, n, seed=seed))
        if during:
            async def in_flight():
                return any(o.status in IN_FLIGHT for o in (await statuses(stubs, ids)).values())
            await eventually(in_flight, timeout=60, interval=0.05, what="orders in flight")
            during()
        orders = await wait_all(stubs, ids, timeout=240)
        await check_books(stubs, world, orders)
    finally:
        await stubs.close()


async def test_two_replicas_of_every_service_share_the_work_without_duplicate_effects(tmp_path):
    with Mesh(tmp_path, replicas=2, env={**FAST, "CROSSDOCK_LOG_LEVEL": "DEBUG"}) as mesh:
        await run_orders(mesh, 30, seed=11)
        # Both instances took part: each handled messages from the shared durables.
        for name in ("erp", "wms", "ordertoship"):
            for proc in mesh.instances(name):
                assert "message.handled" in proc.log_path.read_text(), proc.log_path


async def test_a_three_node_cluster_loses_a_node_mid_run_and_nothing_is_lost(tmp_path):
    with Mesh(tmp_path, nats_cluster=3, env=FAST) as mesh:
        await run_orders(mesh, 20, seed=12, during=lambda: mesh.nats.nodes[1].kill())
