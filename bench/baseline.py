"""Scenario 4: the peer the brief warns about, a direct synchronous integration,
next to Crossdock under the same offered load, first normal, then with the WMS
slowed (+200 ms on every call it serves and message it handles, through the
WMS's fault file) for a while, then normal again.

The baseline is deliberately small and uses the same system services over gRPC:

- order intake calls ERP, then WMS, in a chain before it answers: ERP
  ``GetCustomer`` (validate) -> ERP ``CheckCredit`` -> WMS ``GetAvailability``
  (the real-time stock check ERP waits on); accepted when all three answered;
- shipment confirmation posts straight to ERP: WMS confirms the shipment, then
  the integration posts it to ERP, synchronously, right after acceptance. The
  system services offer no synchronous shipment/invoice posting RPC (in
  Crossdock those are durable commands), so the baseline stands in one unary
  call of the same kind for each: WMS ``GetAvailability``, then ERP
  ``CheckCredit``;
- no queue and no retry, as in a point-to-point integration: a call that fails
  or misses its deadline (5 s, the mesh's own ``CROSSDOCK_RPC_TIMEOUT``) loses
  the order (counted as lost).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import Stubs, World, usd

from . import meshrun
from .stats import latency_ms, open_loop, wait_for

DEADLINE_S = 5.0


@dataclass
class Record:
    started: float
    accept_s: float | None = None
    completed_at: float | None = None
    error: str = ""


@dataclass
class Recorder:
    records: list[Record] = field(default_factory=list)


class DirectIntegration:
    """Order intake and shipment confirmation as synchronous call chains."""

    def __init__(self, stubs: Stubs, world: World) -> None:
        self.stubs = stubs
        self.world = world
        self.shipping: set[asyncio.Task] = set()

    async def submit(self, req: pb.SubmitOrderRequest, rec: Record) -> None:
        s, w = self.stubs, self.world
        try:
            await s.erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id=req.customer_id),
                                    timeout=DEADLINE_S)
            amount = sum(w.prices[ln.sku] * ln.quantity for ln in req.lines)
            await s.erp.CheckCredit(
                erp_pb2.CheckCreditRequest(customer_id=req.customer_id, amount=usd(amount)),
                timeout=DEADLINE_S)
            await s.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
                skus=[ln.sku for ln in req.lines], warehouse_id=req.warehouse_id), timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            rec.error = exc.code().name
            return
        rec.accept_s = time.perf_counter() - rec.started
        task = asyncio.create_task(self.ship(req, rec))
        self.shipping.add(task)
        task.add_done_callback(self.shipping.discard)

    async def ship(self, req: pb.SubmitOrderRequest, rec: Record) -> None:
        s = self.stubs
        try:
            await s.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
                skus=[ln.sku for ln in req.lines], warehouse_id=req.warehouse_id), timeout=DEADLINE_S)
            await s.erp.CheckCredit(erp_pb2.CheckCreditRequest(customer_id=req.customer_id, amount=usd(1)),
                                    timeout=DEADLINE_S)
            rec.completed_at = time.perf_counter()
        except grpc.aio.AioRpcError as exc:
            rec.error = f"shipment: {exc.code().name}"

    async def drain(self) -> None:
        while self.shipping:
            await asyncio.gather(*list(self.shipping), return_exceptions=True)


def _phase_stats(records: list[Record], start: float, end: float) -> dict:
    rs = [r for r in records if start <= r.started < end]
    accepted = [r.accept_s for r in rs if r.accept_s is not None]
    return {"offered": len(rs), "accepted": len(accepted),
            "accepted_per_s": round(len(accepted) / (end - start), 2) if end > start else None,
            "acceptance": latency_ms(accepted)}


def _summary(records: list[Record], phases: dict[str, tuple[float, float]], spike_end: float) -> dict:
    accepted = [r for r in records if r.accept_s is not None]
    completed = [r for r in accepted if r.completed_at is not None]
    out = {name: _phase_stats(records, a, b) for name, (a, b) in phases.items()}
    out["totals"] = {
        "offered": len(records), "accepted": len(accepted), "refused": len(records) - len(accepted),
        "completed": len(completed), "lost": len(accepted) - len(completed),
        "completed_after_spike": sum(1 for r in completed if r.completed_at >= spike_end),
        "backlog_cleared_s_after_spike": round(max((r.completed_at for r in completed), default=spike_end)
                                               - spike_end, 2),
        "errors": sorted({r.error for r in records if r.error}),
    }
    n99, s99 = out["normal"]["acceptance"]["p99_ms"], out["slowed"]["acceptance"]["p99_ms"]
    out["acceptance_p99_slowed_over_normal"] = round(s99 / n99, 2) if n99 and s99 else None
    out["acceptance_p99_growth_ms"] = round(s99 - n99, 1) if n99 and s99 else None
    n50, s50 = out["normal"]["acceptance"]["p50_ms"], out["slowed"]["acceptance"]["p50_ms"]
    out["acceptance_p50_growth_ms"] = round(s50 - n50, 1) if n50 and s50 else None
    return out


async def side_by_side(stubs: Stubs, metrics: meshrun.Metrics, fault_file, *, rate: float, normal_s: float,
                       slowed_s: float, after_s: float, latency_ms_added: int = 200,
                       drain_timeout: float = 900) -> dict:
    """Crossdock and the baseline at the same offered rate, at the same time."""
    wx, wb = await meshrun.world(stubs), await meshrun.world(stubs)
    baseline = DirectIntegration(stubs, wb)
    mesh_records: list[Record] = []
    base_records: list[Record] = []
    order_of: dict[str, Record] = {}

    async def crossdock(i: int):
        rec = Record(time.perf_counter())
        mesh_records.append(rec)
        try:
            r = await stubs.ots.SubmitOrder(meshrun.order(wx, i), timeout=30)
            rec.accept_s = time.perf_counter() - rec.started
            order_of[r.order.order_id] = rec
        except grpc.aio.AioRpcError as exc:
            rec.error = exc.code().name

    async def direct(i: int):
        rec = Record(time.perf_counter())
        base_records.append(rec)
        await baseline.submit(meshrun.order(wb, i), rec)

    total = normal_s + slowed_s + after_s
    t0 = time.perf_counter()
    phases = {"normal": (t0, t0 + normal_s), "slowed": (t0 + normal_s, t0 + normal_s + slowed_s),
              "after": (t0 + normal_s + slowed_s, t0 + total)}

    async def fault_schedule():
        await asyncio.sleep(normal_s)
        fault_file.write_text(f"latency_ms={latency_ms_added}\n")
        await asyncio.sleep(slowed_s)
        fault_file.unlink(missing_ok=True)

    try:
        await asyncio.gather(fault_schedule(), open_loop(rate, total, crossdock),
                             open_loop(rate, total, direct))
    finally:
        fault_file.unlink(missing_ok=True)
    spike_end = phases["slowed"][1]
    await baseline.drain()
    # Crossdock: every accepted order must reach a final state; read when each was invoiced.
    accepted_ids = set(order_of)

    async def settled():
        orders = await meshrun.orders_of(stubs, wx.customer_id)
        final = [o for o in orders if o.order_id in accepted_ids and o.status in (
            pb.ORDER_STATUS_INVOICED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED)]
        return final if len(final) >= len(accepted_ids) else None

    final = await wait_for(settled, drain_timeout, "Crossdock's accepted orders to settle", interval=1.0)
    wall0, mono0 = meshrun.now(), time.perf_counter()
    for o in final:
        if o.status == pb.ORDER_STATUS_INVOICED:
            order_of[o.order_id].completed_at = mono0 - (wall0 - meshrun.ts(o.update_time)).total_seconds()
    return {"offered_orders_per_s": rate, "wms_added_latency_ms": latency_ms_added,
            "phases_s": {"normal": normal_s, "slowed": slowed_s, "after": after_s},
            "crossdock": _summary(mesh_records, phases, spike_end),
            "baseline": _summary(base_records, phases, spike_end)}
