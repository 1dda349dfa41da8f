"""The fault-injection run: a workload of orders and returns while faults hit
every part of the mesh, then heal, wait for quiescence and check the invariants.

    python -m tests.faults.chaos --orders 2000 --returns 200        (make chaos)

Faults: SIGKILL of a random service every few seconds, SIGSTOP/SIGCONT of a
consumer past its ack wait, restarts of nats-server, a slow WMS (latency on
every call and message), an ERP outage of tens of seconds, and crashes at the
injection points (after a commit before the publish, after a publish before
the outbox delete, after an effect before the ack). A supervisor restarts
whatever died, as Kubernetes would.

Invariants: every order and every return terminal; exactly one invoice per
shipped order and none for the others; exactly one credit memo per accepted
return and none for the others, never more than invoiced; no shipment booked
twice; ERP ledger equal to WMS stock for every SKU/warehouse and no negative
stock; the dead-letter stream holds only messages with a stated permanent
reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, World, make_world

TERMINAL = {pb.ORDER_STATUS_INVOICED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED}
RETURN_TERMINAL = {rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_PARTIALLY_CREDITED,
                   rpb.RETURN_STATUS_REFUSED, rpb.RETURN_STATUS_EXPIRED, rpb.RETURN_STATUS_CANCELLED}
CREDITED = {rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_PARTIALLY_CREDITED}
# Restocked, scrapped (both credited) and refused, by the WMS autopilot's default rules.
REASONS = [rpb.RETURN_REASON_NOT_NEEDED, rpb.RETURN_REASON_DEFECTIVE, rpb.RETURN_REASON_OTHER]
ACK_WAIT = 3

ENV = {
    **FAST,
    "CROSSDOCK_ACK_WAIT": str(ACK_WAIT),
    "CROSSDOCK_MAX_DELIVER": "30",
    "CROSSDOCK_RETRY_BACKOFF": "0.2",
    "CROSSDOCK_RETRY_BACKOFF_MAX": "3",
    "CROSSDOCK_BREAKER_TTL": "2",
    "CROSSDOCK_RPC_TIMEOUT": "3",
    "CROSSDOCK_WMS_RETURN_RECEIVE_DELAY": "0.1",
    "CROSSDOCK_WMS_RETURN_INSPECT_DELAY": "0.1",
    "CROSSDOCK_CRASH_POINTS": ("after_commit_before_publish:0.002,after_publish_before_delete:0.01,"
                               "after_effect_before_ack:0.002"),
}
# A slow and flaky WMS: 30 ms on every call and message, 2% of them fail (retried).
SLOW_WMS = {"CROSSDOCK_FAULT_LATENCY_MS": "30", "CROSSDOCK_FAULT_ERROR_RATE": "0.02"}


@dataclass
class Size:
    orders: int = 300
    returns: int = 30
    erp_outage: float = 10.0
    fault_every: float = 3.0
    concurrency: int = 8
    quiescence_timeout: float = 300.0
    seed: int = 1


@dataclass
class Summary:
    orders: Counter = field(default_factory=Counter)
    returns: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    retries: int = 0
    duplicates_absorbed: int = 0
    crash_points: int = 0
    dead_letters: int = 0
    dead_letters_not_permanent: int = 0
    invariants: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Healed on their own (a restart that a crash point or a kill interrupted, retried).
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return all(self.invariants.values()) and bool(self.invariants)

    def text(self) -> str:
        lines = [
            f"chaos run: {sum(self.orders.values())} orders and {sum(self.returns.values())} returns "
            f"in {self.elapsed:.0f}s",
            "  orders:     " + ", ".join(f"{k} {v}" for k, v in sorted(self.orders.items())),
            "  returns:    " + ", ".join(f"{k} {v}" for k, v in sorted(self.returns.items())),
            "  faults:     " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"  crash points fired {self.crash_points}, retries {self.retries}, "
            f"duplicates absorbed {self.duplicates_absorbed}, dead letters {self.dead_letters} "
            f"({self.dead_letters_not_permanent} without a permanent reason)",
            "  invariants: "
            + ", ".join(f"{k} {'OK' if v else 'FAILED'}" for k, v in self.invariants.items()),
        ]
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        if self.notes:
            lines.append(f"  healed: {len(self.notes)} interrupted restart(s) retried by the supervisor")
        return "\n".join(lines)


class Chaos:
    def __init__(self, mesh: Mesh, size: Size, summary: Summary) -> None:
        self.mesh = mesh
        self.size = size
        self.summary = summary
        self.rnd = random.Random(size.seed)
        self.down: set[str] = set()  # planned outages: the supervisor leaves them alone
        self.faults_over = asyncio.Event()
        self.stop = asyncio.Event()

    async def supervisor(self) -> None:
        """Restart whatever died (crash points, kills), as an orchestrator would."""
        while not self.stop.is_set():
            try:
                for key, proc in list(self.mesh.services.items()):
                    if key not in self.down and not proc.alive:
                        if proc.proc and proc.proc.returncode == 86:
                            self.summary.faults["crash point exit"] += 1
                        await asyncio.to_thread(self._restart, key)
                if not self._nats_alive() and "nats" not in self.down:
                    await asyncio.to_thread(self.mesh.nats.start)
            except Exception as exc:  # noqa: BLE001 - an orchestrator keeps going
                self.summary.notes.append(f"supervisor: {exc!r}")
            await asyncio.sleep(0.2)

    def _nats_alive(self) -> bool:
        return bool(self.mesh.nats.proc and self.mesh.nats.proc.poll() is None)

    def _restart(self, key: str) -> None:
        proc = self.mesh.services[key]
        try:
            proc.start()
            proc.wait_healthy(timeout=60)
        except Exception as exc:  # noqa: BLE001 - tried again on the next round
            self.summary.notes.append(f"restart of {key} failed: {exc}")

    async def faults(self) -> None:
        kinds = ["sigkill", "sigkill", "sigkill", "sigstop", "nats_restart"]
        # Every kind once early on (the ERP outage first of all), then at random.
        first = ["erp_outage", *self.rnd.sample(sorted(set(kinds)), len(set(kinds)))]
        while not self.faults_over.is_set():
            await asyncio.sleep(self.size.fault_every * self.rnd.uniform(0.5, 1.5))
            if self.faults_over.is_set():
                return
            kind = first.pop(0) if first else self.rnd.choice(kinds)
            self.summary.faults[kind] += 1
            try:
                await self._inject(kind)
            except Exception as exc:  # noqa: BLE001 - recorded; the supervisor heals
                self.summary.problems.append(f"fault {kind}: {exc!r}")
            finally:
                self.down.clear()

    async def _inject(self, kind: str) -> None:
        if kind == "sigkill":
            key = self.rnd.choice([k for k in self.mesh.services if k not in self.down])
            self.mesh.services[key].kill()  # the supervisor restarts it
        elif kind == "sigstop":
            key = self.rnd.choice([k for k in self.mesh.services if k not in self.down])
            proc = self.mesh.services[key]
            if proc.alive:
                self.down.add(key)
                proc.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(ACK_WAIT + 1.5)  # its unacked messages go to the others / later
                proc.proc.send_signal(signal.SIGCONT)
                self.down.discard(key)
        elif kind == "nats_restart":
            self.down.add("nats")
            await asyncio.to_thread(self.mesh.nats.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.mesh.nats.start)
            self.down.discard("nats")
        elif kind == "erp_outage":
            self.down.add("erp")
            self.mesh.services["erp"].kill()
            await asyncio.sleep(self.size.erp_outage)
            await asyncio.to_thread(self._restart, "erp")
            self.down.discard("erp")


async def submit_orders(stubs: Stubs, world: World, poor: World, size: Size, rnd: random.Random) -> list[str]:
    reqs = []
    for i in range(size.orders):
        w = poor if i % 50 == 7 else world  # a few credit refusals
        skus = rnd.sample(w.skus, rnd.randint(1, len(w.skus)))
        reqs.append(w.order({s: rnd.randint(1, 3) for s in skus}))
    sem = asyncio.Semaphore(size.concurrency)

    async def one(req) -> str:
        async with sem:
            for attempt in range(200):  # retried with the same request_id: one order
                try:
                    return (await stubs.ots.SubmitOrder(req, timeout=10)).order.order_id
                except grpc.aio.AioRpcError as err:
                    if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    await asyncio.sleep(min(0.2 * (attempt + 1), 2))
            raise RuntimeError("order-to-ship stayed unavailable")

    return await asyncio.gather(*(one(r) for r in reqs))


async def _unavailable_retry(call):
    for attempt in range(200):  # retried with the same request_id: one effect
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            await asyncio.sleep(min(0.2 * (attempt + 1), 2))
    raise RuntimeError("a service stayed unavailable")


async def submit_returns(stubs: Stubs, rs, order_ids: list[str], size: Size, rnd: random.Random,
                         timeout: float) -> list[str]:
    """A return for each of ``size.returns`` orders, as soon as it is invoiced."""
    pending = rnd.sample(order_ids, len(order_ids))
    created: list[str] = []
    deadline = time.monotonic() + timeout
    while pending and len(created) < size.returns and time.monotonic() < deadline:
        for oid in list(pending[: size.returns - len(created)]):
            order = await _unavailable_retry(
                lambda oid=oid: stubs.ots.GetOrder(pb.GetOrderRequest(order_id=oid), timeout=10))
            o = order.order
            if o.status in (pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED):
                pending.remove(oid)
            elif o.status == pb.ORDER_STATUS_INVOICED:
                line = rnd.choice(list(o.lines))
                req = rpb.CreateReturnRequest(request_id=f"chaos-{oid}", order_id=oid, lines=[rpb.ReturnLine(
                    line_number=line.line_number, quantity=rnd.randint(1, line.quantity),
                    reason=rnd.choice(REASONS))])
                resp = await _unavailable_retry(lambda req=req: rs.CreateReturn(req, timeout=10))
                created.append(resp.customer_return.return_id)
                pending.remove(oid)
        if pending:
            await asyncio.sleep(0.5)
    return created


async def wait_returns(rs, ids: list[str], timeout: float) -> dict[str, rpb.CustomerReturn]:
    deadline = time.monotonic() + timeout
    out: dict[str, rpb.CustomerReturn] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for rid in pending:
            try:
                r = (await rs.GetReturn(rpb.GetReturnRequest(return_id=rid), timeout=10)).customer_return
            except grpc.aio.AioRpcError:
                still.append(rid)
                continue
            out[rid] = r
            if r.status not in RETURN_TERMINAL:
                still.append(rid)
        pending = still
        if pending:
            await asyncio.sleep(1.0)
    for rid in pending:
        out.setdefault(rid, rpb.CustomerReturn(return_id=rid))
    return out


async def wait_quiescent(stubs: Stubs, ids: list[str], timeout: float) -> dict[str, pb.Order]:
    deadline = time.monotonic() + timeout
    orders: dict[str, pb.Order] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for oid in pending:
            try:
                o = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=oid), timeout=10)).order
            except grpc.aio.AioRpcError:
                still.append(oid)
                continue
            orders[oid] = o
            if o.status not in TERMINAL:
                still.append(oid)
        pending = still
        if pending:
            await asyncio.sleep(1.0)
    for oid in pending:
        orders.setdefault(oid, pb.Order(order_id=oid))
    return orders


def _db(mesh: Mesh, name: str) -> sqlite3.Connection:
    return sqlite3.connect(mesh.data_dir / f"{name}.db")


def check_returns(mesh: Mesh, returns: dict[str, rpb.CustomerReturn], s: Summary) -> None:
    s.returns = Counter(rpb.ReturnStatus.Name(r.status).removeprefix("RETURN_STATUS_")
                        for r in returns.values())
    s.invariants["every return terminal"] = all(r.status in RETURN_TERMINAL for r in returns.values())
    with _db(mesh, "erp") as erp:
        memos = Counter(rid for (rid,) in erp.execute("SELECT return_id FROM credit_memos"))
        over = erp.execute(
            "SELECT count(*) FROM credit_memos m JOIN invoices i ON i.order_id = m.order_id "
            "WHERE m.total_minor > i.total_minor").fetchone()[0]
    credited = {rid for rid, r in returns.items() if r.status in CREDITED}
    ours = {rid: n for rid, n in memos.items() if rid in returns}
    s.invariants["one credit memo per accepted return"] = (
        set(ours) == credited and all(n == 1 for n in ours.values()) and over == 0)


async def check(mesh: Mesh, worlds: list[World], orders: dict[str, pb.Order], s: Summary) -> None:
    statuses = {oid: o.status for oid, o in orders.items()}
    s.orders = Counter(pb.OrderStatus.Name(v).removeprefix("ORDER_STATUS_") for v in statuses.values())
    s.invariants["every order terminal"] = all(v in TERMINAL for v in statuses.values())
    invoiced = {oid for oid, v in statuses.items() if v == pb.ORDER_STATUS_INVOICED}

    with _db(mesh, "erp") as erp, _db(mesh, "tms") as tms, _db(mesh, "wms") as wms:
        invoices = Counter(oid for (oid,) in erp.execute("SELECT order_id FROM invoices"))
        ours = {oid: n for oid, n in invoices.items() if oid in statuses}
        s.invariants["one invoice per shipped order"] = (
            set(ours) == invoiced and all(n == 1 for n in ours.values()))
        shipments = Counter(oid for (oid,) in tms.execute("SELECT order_id FROM shipments"))
        s.invariants["no shipment booked twice"] = all(n == 1 for n in shipments.values())
        stock = {(w, k): (h, a) for w, k, h, a in wms.execute(
            "SELECT warehouse_id, sku, on_hand, allocated FROM stock")}
        s.invariants["no negative stock"] = all(h >= 0 and 0 <= a <= h for h, a in stock.values())

    async def ledger_converged() -> bool:
        with _db(mesh, "erp") as erp, _db(mesh, "wms") as wms:
            ledger = {(w, k): h
                      for k, w, h in erp.execute("SELECT sku, warehouse_id, on_hand FROM ledger_positions")}
            wms_stock = {(w, k): h for w, k, h in wms.execute("SELECT warehouse_id, sku, on_hand FROM stock")}
        drift = {key: (ledger.get(key), qty) for key, qty in wms_stock.items() if ledger.get(key) != qty}
        if drift:
            s.problems.append(f"ledger drift: {dict(list(drift.items())[:5])}")
        return not drift

    for _ in range(60):  # the last movements may still be in flight
        if await ledger_converged():
            break
        await asyncio.sleep(1)
    s.invariants["ERP ledger equals WMS stock"] = await ledger_converged()
    if s.invariants["ERP ledger equals WMS stock"]:
        s.problems = [p for p in s.problems if not p.startswith("ledger drift")]

    nc = await nats.connect(servers=mesh.nats.url.split(","))
    try:
        js = nc.jetstream()
        info = await js.stream_info("DLQ")
        s.dead_letters = info.state.messages
        seq = 1
        while True:
            try:
                raw = await js.get_msg("DLQ", seq, subject="dlq.>", next=True)
            except nats.js.errors.NotFoundError:
                break
            if raw.headers.get("crossdock-dlq-permanent") != "true":
                s.dead_letters_not_permanent += 1
                s.problems.append("dead letter without a permanent reason: "
                                  f"{raw.headers.get('crossdock-dlq-reason')}")
            seq = raw.seq + 1
    finally:
        await nc.close()
    s.invariants["dead letters only with a permanent reason"] = s.dead_letters_not_permanent == 0

    for proc in mesh.services.values():
        text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        s.retries += text.count('"message.retry"')
        s.duplicates_absorbed += text.count('"message.duplicate"')
        s.crash_points += text.count('"fault.crash_point"')


async def _retrying(make):
    for attempt in range(60):
        try:
            return await make()
        except grpc.aio.AioRpcError as err:
            transient = err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not transient or attempt == 59:
                raise
            await asyncio.sleep(0.5)


async def run(size: Size, data_dir: Path) -> Summary:
    summary = Summary()
    start = time.monotonic()
    mesh = Mesh(data_dir, env=dict(ENV), service_env={"wms": SLOW_WMS})
    mesh.start()
    stubs = Stubs(mesh)
    try:
        chaos = Chaos(mesh, size, summary)
        supervisor = asyncio.create_task(chaos.supervisor())
        # Crash points fire from the start: set up as a client would, retrying.
        world = await _retrying(lambda: make_world(stubs, stock=size.orders * 10))
        poor = await _retrying(lambda: make_world(stubs, credit_minor=1_00, stock=0))
        faults = asyncio.create_task(chaos.faults())
        ids = await submit_orders(stubs, world, poor, size, random.Random(size.seed))
        returns_channel = grpc.aio.insecure_channel(mesh.addr("returns"))
        rs = returns_pb2_grpc.ReturnsServiceStub(returns_channel)
        return_ids = await submit_returns(stubs, rs, ids, size, random.Random(size.seed + 1),
                                          size.quiescence_timeout)
        # Keep the faults going a while after the last submission, then heal:
        # no new faults, but crash points stay armed and the supervisor keeps
        # restarting whatever they take down, to the end.
        await asyncio.sleep(size.fault_every * 3)
        chaos.faults_over.set()
        await faults
        orders = await wait_quiescent(stubs, ids, size.quiescence_timeout)
        returns = await wait_returns(rs, return_ids, size.quiescence_timeout)
        await check(mesh, [world, poor], orders, summary)
        check_returns(mesh, returns, summary)
        await returns_channel.close()
        chaos.stop.set()
        await supervisor
    finally:
        await stubs.close()
        mesh.stop()
    summary.elapsed = time.monotonic() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--returns", type=int, default=200)
    parser.add_argument("--erp-outage", type=float, default=30.0)
    parser.add_argument("--fault-every", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the summary as JSON")
    args = parser.parse_args()
    size = Size(orders=args.orders, returns=args.returns, erp_outage=args.erp_outage,
                fault_every=args.fault_every, seed=args.seed, quiescence_timeout=900)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="crossdock-chaos-"))
    summary = asyncio.run(run(size, data_dir))
    print(summary.text())
    if args.json:
        args.json.write_text(json.dumps({**summary.__dict__, "ok": summary.ok}, default=dict, indent=2))
    raise SystemExit(0 if summary.ok else 1)


if __name__ == "__main__":
    main()
