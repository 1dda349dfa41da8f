"""Helpers of the returns, reconciliation and settlement end-to-end tests: a mesh
with extra settings, stubs of the returns process, orders taken to invoiced."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import grpc

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.reconciliation.v1 import reconciliation_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, World
from tests.helpers import eventually


def start_mesh_with(tmp_path_factory, env: dict[str, str]) -> Mesh:
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), env={**FAST, **env})
    try:
        mesh.start()
    except BaseException:
        mesh.stop()
        raise
    return mesh


class ReturnsStubs:
    def __init__(self, mesh: Mesh) -> None:
        self.channel = grpc.aio.insecure_channel(mesh.addr("returns"))
        self.returns = returns_pb2_grpc.ReturnsServiceStub(self.channel)
        self.reconciliation = reconciliation_pb2_grpc.ReconciliationServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()


async def invoiced_order(stubs, world: World, lines: dict[str, int]) -> pb.Order:
    """Submit an order and wait until it is shipped and invoiced."""
    order_id = (await stubs.ots.SubmitOrder(world.order(lines))).order.order_id

    async def invoiced():
        o = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        assert o.status not in (pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED), o.status_reason
        return o if o.status == pb.ORDER_STATUS_INVOICED else None
    return await eventually(invoiced, timeout=60, what=f"order {order_id} invoiced")


def return_request(order: pb.Order, *lines: tuple[int, int, int], **kw) -> rpb.CreateReturnRequest:
    """lines: (order line number, quantity, reason)"""
    return rpb.CreateReturnRequest(request_id=str(uuid.uuid4()), order_id=order.order_id, lines=[
        rpb.ReturnLine(line_number=n, quantity=q, reason=r) for n, q, r in lines], **kw)


async def wait_return(rs: ReturnsStubs, return_id: str, *statuses: int,
                      timeout: float = 60) -> rpb.CustomerReturn:
    async def reached():
        r = (await rs.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id))).customer_return
        return r if r.status in statuses else None
    try:
        return await eventually(reached, timeout=timeout, what=f"return {return_id}")
    except AssertionError:
        r = (await rs.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id))).customer_return
        raise AssertionError(f"{return_id} is {rpb.ReturnStatus.Name(r.status)}, not "
                             f"{[rpb.ReturnStatus.Name(s) for s in statuses]}: "
                             f"{[(e.step, e.detail) for e in r.timeline]}") from None


def sqlite(mesh: Mesh, service: str, sql: str, *args):
    """Read (or write, behind the mesh's back) a service's own SQLite store."""
    with sqlite3.connect(Path(mesh.data_dir) / f"{service}.db", timeout=30) as conn:
        return conn.execute(sql, args).fetchall()
