"""A sample workload: N orders through order-to-ship, followed to the end, then a
few returns of the invoiced ones through the returns process.

Most orders are ordinary; one exceeds a customer's credit (rejected), one asks
for more of a scarce item than there is (backordered) and one does the same
under the CANCEL policy (cancelled for shortage). Of the returns (with the WMS
returns autopilot's default rules) one is credited in full (unwanted goods,
restocked), one partially (one line without a qualifying reason is refused at
inspection) and one is refused (nothing qualifies).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb

# Where an order stops on its own: finished, or waiting for stock.
SETTLED = {pb.ORDER_STATUS_INVOICED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED,
           pb.ORDER_STATUS_BACKORDERED}
NORMAL_SKUS = [f"SKU-100{i}" for i in range(1, 9)]


def sample_requests(n: int, seed: int = 7) -> list[pb.SubmitOrderRequest]:
    rnd = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    reqs = []
    for i in range(n):
        skus = rnd.sample(NORMAL_SKUS, rnd.randint(1, 3))
        reqs.append(pb.SubmitOrderRequest(
            request_id=f"demo-{run}-{i}", customer_id=rnd.choice(["C-ACME", "C-GLOBEX"]),
            lines=[pb.OrderLine(sku=s, quantity=rnd.randint(1, 5)) for s in skus]))
    if n >= 3:
        reqs[1] = pb.SubmitOrderRequest(request_id=f"demo-{run}-credit", customer_id="C-INITECH",
                                        lines=[pb.OrderLine(sku="SKU-1005", quantity=3)])
        reqs[2] = pb.SubmitOrderRequest(request_id=f"demo-{run}-short", customer_id="C-ACME",
                                        lines=[pb.OrderLine(sku="SKU-RARE", quantity=50)],
                                        shortage_policy=pb.SHORTAGE_POLICY_BACKORDER)
    if n >= 4:
        reqs[3] = pb.SubmitOrderRequest(request_id=f"demo-{run}-short-cancel", customer_id="C-GLOBEX",
                                        lines=[pb.OrderLine(sku="SKU-RARE", quantity=40)],
                                        shortage_policy=pb.SHORTAGE_POLICY_CANCEL)
    if n >= 8:
        # Two lines: the partial return needs one to keep and one to refuse.
        reqs[4] = pb.SubmitOrderRequest(request_id=f"demo-{run}-two-lines", customer_id="C-ACME",
                                        lines=[pb.OrderLine(sku="SKU-1002", quantity=4),
                                               pb.OrderLine(sku="SKU-1006", quantity=2)])
    return reqs


@dataclass
class Outcome:
    orders: dict[str, pb.Order] = field(default_factory=dict)
    submitted_in: float = 0.0
    settled_in: float = 0.0
    timed_out: bool = False
    returns: dict[str, rpb.CustomerReturn] = field(default_factory=dict)

    def return_counts(self) -> Counter:
        return Counter(rpb.ReturnStatus.Name(r.status).removeprefix("RETURN_STATUS_")
                       for r in self.returns.values())

    def counts(self) -> Counter:
        return Counter(pb.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_")
                       for o in self.orders.values())

    @property
    def completed_per_second(self) -> float:
        done = sum(o.status == pb.ORDER_STATUS_INVOICED for o in self.orders.values())
        return done / self.settled_in if self.settled_in else 0.0


async def run_workload(stub, requests: list[pb.SubmitOrderRequest], *, concurrency: int = 16,
                       timeout: float = 300.0, on_submitted: Callable[[int], None] = lambda n: None,
                       on_settled: Callable[[int], None] = lambda n: None) -> Outcome:
    out = Outcome()
    start = time.monotonic()
    sem = asyncio.Semaphore(concurrency)

    async def submit(req: pb.SubmitOrderRequest) -> None:
        async with sem:
            resp = await stub.SubmitOrder(req, timeout=30)
            out.orders[resp.order.order_id] = resp.order
            on_submitted(len(out.orders))

    await asyncio.gather(*(submit(r) for r in requests))
    out.submitted_in = time.monotonic() - start
    pending = list(out.orders)  # oldest first
    deadline = start + timeout
    while pending and time.monotonic() < deadline:
        # Orders mostly settle oldest first: each round looks only as far as
        # the first few unsettled ones, so watching costs the mesh little.
        unsettled = []
        for order_id in pending:
            order = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10)).order
            out.orders[order_id] = order
            if order.status not in SETTLED:
                unsettled.append(order_id)
                if len(unsettled) == 4:
                    break
        pending = unsettled + pending[pending.index(unsettled[-1]) + 1:] if unsettled else []
        on_settled(len(out.orders) - len(pending))
        if pending:
            await asyncio.sleep(0.2)  # polling interval of the progress display
    out.settled_in = time.monotonic() - start
    out.timed_out = bool(pending)
    return out


# ---- returns ----

RETURN_SETTLED = {rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_PARTIALLY_CREDITED,
                  rpb.RETURN_STATUS_REFUSED, rpb.RETURN_STATUS_EXPIRED, rpb.RETURN_STATUS_CANCELLED}


def sample_returns(orders: dict[str, pb.Order]) -> list[rpb.CreateReturnRequest]:
    """A full, a partial and a refused return of three invoiced orders (fewer when
    fewer orders are invoiced)."""
    invoiced = [o for o in orders.values() if o.status == pb.ORDER_STATUS_INVOICED]
    two_lines = next((o for o in invoiced if len(o.lines) >= 2), None)
    others = [o for o in invoiced if o is not two_lines]
    reqs = []

    def ret(order: pb.Order, kind: str, lines: list[rpb.ReturnLine]) -> rpb.CreateReturnRequest:
        return rpb.CreateReturnRequest(request_id=f"demo-return-{order.order_id}-{kind}",
                                       order_id=order.order_id, lines=lines)

    if others:
        o = others[0]  # unwanted: everything comes back and is restocked
        reqs.append(ret(o, "full", [rpb.ReturnLine(line_number=x.line_number, quantity=x.quantity,
                                                   reason=rpb.RETURN_REASON_NOT_NEEDED) for x in o.lines]))
    if two_lines:
        first, second = two_lines.lines[0], two_lines.lines[1]
        reqs.append(ret(two_lines, "partial", [
            rpb.ReturnLine(line_number=first.line_number, quantity=first.quantity,
                           reason=rpb.RETURN_REASON_DEFECTIVE, note="does not power on"),
            rpb.ReturnLine(line_number=second.line_number, quantity=1, reason=rpb.RETURN_REASON_OTHER,
                           note="no reason given")]))
    if len(others) > 1:
        o = others[1]
        reqs.append(ret(o, "refused", [rpb.ReturnLine(line_number=o.lines[0].line_number, quantity=1,
                                                      reason=rpb.RETURN_REASON_OTHER)]))
    return reqs


async def run_returns(stub, requests: list[rpb.CreateReturnRequest], out: Outcome, *,
                      timeout: float = 120.0, on_settled: Callable[[int], None] = lambda n: None) -> None:
    """Create the returns and follow them until each is settled (or the timeout)."""
    for req in requests:
        r = (await stub.CreateReturn(req, timeout=30)).customer_return
        out.returns[r.return_id] = r
    deadline = time.monotonic() + timeout
    pending = list(out.returns)
    while pending and time.monotonic() < deadline:
        for return_id in list(pending):
            r = (await stub.GetReturn(rpb.GetReturnRequest(return_id=return_id), timeout=10)).customer_return
            out.returns[return_id] = r
            if r.status in RETURN_SETTLED:
                pending.remove(return_id)
        on_settled(len(out.returns) - len(pending))
        if pending:
            await asyncio.sleep(0.2)  # polling interval of the progress display
    out.timed_out = out.timed_out or bool(pending)
