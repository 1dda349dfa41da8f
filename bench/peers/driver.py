"""The load driver for a peer (its own process, the peers' venv): submits orders
to Temporal (``start_workflow``) or DBOS (``DBOSClient.enqueue``), and reports
what each order did, from the peer's own records.

- ``closed``: like Crossdock's throughput scenario, at most ``backlog`` orders
  between submission and invoiced, for ``duration`` s, ``submitters`` at once;
  progress (for the back-pressure only) is the count of ERP's invoices of the
  run's customer, read from ERP's store (read-only, the same for every peer).
- ``open``: ``rate`` orders/s for ``duration`` s, not waiting for earlier ones;
  a submission that fails (the orchestrator is down) is retried with the same
  order id until it is accepted; every accepted order id is appended to
  ``--accepted`` at once (the kill scenario reads it).

Afterwards it waits until every accepted order is invoiced in ERP (or
``--settle`` s passed) and writes ``--out``: per order its submission time, the
workflow's start and close time and status (epoch seconds), and the
acceptance latencies.

    python -m bench.peers.driver temporal|dbos --target ADDR|URL --world FILE --erp-db FILE --out FILE ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

from .system import Line, Order

RETRY_S = 0.2


def make_order(world: dict, i: int) -> Order:
    sku = world["skus"][i % len(world["skus"])]
    return Order(
        order_id=f"{world['prefix']}-{i:06d}",
        customer_id=world["customer_id"],
        warehouse_id=world["warehouse_id"],
        currency_code=world.get("currency_code", "USD"),
        lines=[Line(sku, 1, world["prices"][sku])],
    )


class Invoices:
    """ERP's invoices of one customer, read from ERP's SQLite store (read-only)."""

    def __init__(self, db: str, customer_id: str) -> None:
        self.db, self.customer_id = db, customer_id

    def count(self) -> int:
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as conn:
            return conn.execute(
                "SELECT count(*) FROM invoices WHERE customer_id = ?", (self.customer_id,)
            ).fetchone()[0]


class TemporalPeer:
    async def connect(self, target: str) -> None:
        from .temporal_peer import connect

        self.client = await connect(target)

    async def submit(self, order: Order) -> None:
        from temporalio.common import WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from .temporal_workflow import TASK_QUEUE

        try:
            await self.client.start_workflow(
                "OrderToShip",
                order,
                id=order.order_id,
                task_queue=TASK_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # a repeat of an accepted submission

    async def outcomes(self, ids: set[str], prefix: str) -> dict[str, dict]:
        out = {}
        async for wf in self.client.list_workflows(
            f"WorkflowType = 'OrderToShip' AND WorkflowId STARTS_WITH '{prefix}-'"
        ):
            if wf.id in ids:
                out[wf.id] = {
                    "start": wf.start_time.timestamp(),
                    "close": wf.close_time.timestamp() if wf.close_time else None,
                    "status": wf.status.name if wf.status else "",
                }
        return out

    async def close(self) -> None:
        pass


class DbosPeer:
    async def connect(self, target: str) -> None:
        from dbos import DBOSClient

        self.client = DBOSClient(system_database_url=target)

    async def submit(self, order: Order) -> None:
        from .dbos_peer import QUEUE, WORKFLOW

        await self.client.enqueue_async(
            {"queue_name": QUEUE, "workflow_name": WORKFLOW, "workflow_id": order.order_id}, order
        )

    async def outcomes(self, ids: set[str], prefix: str) -> dict[str, dict]:
        """On SQLite DBOS stamps a workflow's status in whole seconds (Python < 3.12): the
        close time is its last step's completion (ms), the start the driver's own."""
        out, todo = {}, sorted(ids)
        for i in range(0, len(todo), 500):
            for wf in await self.client.list_workflows_async(workflow_ids=todo[i : i + 500]):
                close = None
                if wf.status in ("SUCCESS", "ERROR", "CANCELLED"):
                    steps = await self.client.list_workflow_steps_async(wf.workflow_id, load_output=False)
                    close = max((s["completed_at_epoch_ms"] or 0 for s in steps), default=0) / 1e3 or None
                out[wf.workflow_id] = {"start": None, "close": close,
                                       "status": {"SUCCESS": "COMPLETED"}.get(wf.status, wf.status)}
        return out

    async def close(self) -> None:
        self.client.destroy()


PEERS = {"temporal": TemporalPeer, "dbos": DbosPeer}


class Run:
    def __init__(self, peer, world: dict, invoices: Invoices, accepted_file: Path | None) -> None:
        self.peer, self.world, self.invoices = peer, world, invoices
        self.base = invoices.count()
        self.submitted_at: dict[str, float] = {}
        self.accept_s: list[float] = []
        self.retries = 0
        self._accepted = open(accepted_file, "a") if accepted_file else None  # noqa: SIM115

    def invoiced(self) -> int:
        return self.invoices.count() - self.base

    async def submit(self, i: int, deadline: float) -> None:
        order = make_order(self.world, i)
        t = time.perf_counter()
        while True:
            try:
                await self.peer.submit(order)
                break
            except Exception:  # noqa: BLE001 - the orchestrator is down: the same order again
                if time.monotonic() > deadline:
                    return
                self.retries += 1
                await asyncio.sleep(RETRY_S)
        self.accept_s.append(time.perf_counter() - t)
        self.submitted_at[order.order_id] = time.time()
        if self._accepted:
            self._accepted.write(order.order_id + "\n")
            self._accepted.flush()

    async def closed(self, duration: float, backlog: int, submitters: int) -> None:
        stop_at = time.monotonic() + duration
        invoiced = 0
        started = 0

        async def watch():
            nonlocal invoiced
            while time.monotonic() < stop_at:
                invoiced = self.invoiced()
                await asyncio.sleep(0.25)  # the same poll interval as Crossdock's run

        async def submitter(k: int):
            nonlocal started
            i = k
            while time.monotonic() < stop_at:
                if started - invoiced >= backlog:
                    await asyncio.sleep(0.02)  # back-pressure: wait for the workflow to catch up
                    continue
                started += 1
                await self.submit(i, stop_at + 60)
                i += submitters

        await asyncio.gather(watch(), *(submitter(k) for k in range(submitters)))

    async def open(self, rate: float, duration: float) -> None:
        tasks, start, i = set(), time.monotonic(), 0
        while True:
            due = start + i / rate
            if due - start >= duration:
                break
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            t = asyncio.create_task(self.submit(i, start + duration + 120))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def settle(self, timeout: float) -> dict[str, dict]:
        """Wait until ERP invoiced every accepted order and the peer closed its workflow."""
        ids = set(self.submitted_at)
        deadline = time.monotonic() + timeout
        # Polls ERP's store (nothing to wait on).
        while self.invoiced() < len(ids) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        while True:
            out = await self.peer.outcomes(ids, self.world["prefix"])
            if (
                len(out) >= len(ids) and all(o["close"] for o in out.values())
            ) or time.monotonic() > deadline:
                return out
            await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    world = json.loads(Path(args.world).read_text())  # noqa: ASYNC240 - before the load
    peer = PEERS[args.peer]()
    await peer.connect(args.target)
    run = Run(
        peer,
        world,
        Invoices(args.erp_db, world["customer_id"]),
        Path(args.accepted) if args.accepted else None,
    )
    t0 = time.time()
    if args.mode == "closed":
        await run.closed(args.duration, args.backlog, args.submitters)
    else:
        await run.open(args.rate, args.duration)
    t1 = time.time()
    outcomes = await run.settle(args.settle)
    orders = {}
    for oid, at in run.submitted_at.items():
        o = outcomes.get(oid, {"start": None, "close": None, "status": "MISSING"})
        orders[oid] = {**o, "submitted_at": at, "start": o["start"] or at}
    report = {"mode": args.mode, "load_started": t0, "load_ended": t1, "settled": time.time(),
              "submitted": len(run.submitted_at), "retries": run.retries, "accept_s": run.accept_s,
              "orders": orders}
    Path(args.out).write_text(json.dumps(report))  # noqa: ASYNC240 - after the load
    await peer.close()


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.peers.driver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument(
        "--target", required=True, help="Temporal frontend HOST:PORT, or DBOS system database URL"
    )
    ap.add_argument("--world", required=True)
    ap.add_argument("--erp-db", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=("closed", "open"), default="closed")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--backlog", type=int, default=150)
    ap.add_argument("--submitters", type=int, default=8)
    ap.add_argument("--rate", type=float, default=5)
    ap.add_argument("--accepted", default="")
    ap.add_argument("--settle", type=float, default=300)
    return ap.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
    # The report is written: leave without the interpreter's finalization, which the
    # gRPC threads of a client whose server was killed can crash (exit code 134).
    sys.stdout.flush()
    os._exit(0)
