"""A sample workload: N orders through order-to-ship, followed to the end.

Most orders are ordinary; one exceeds a customer's credit (rejected), one asks
for more of a scarce item than there is (backordered) and one does the same
under the CANCEL policy (cancelled for shortage).
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
    return reqs


@dataclass
class Outcome:
    orders: dict[str, pb.Order] = field(default_factory=dict)
    submitted_in: float = 0.0
    settled_in: float = 0.0
    timed_out: bool = False

    def counts(self) -> Counter:
        return Counter(pb.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_") for o in self.orders.values())

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
