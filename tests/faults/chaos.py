"""The fault-injection run: a workload of orders and returns while faults hit
every part of the mesh, then heal, wait for quiescence and check the invariants.

    python -m tests.faults.chaos --orders 2000 --returns 200        (make chaos)

Faults: SIGKILL of a random service every few seconds, SIGSTOP/SIGCONT of a
consumer past its ack wait, restarts of nats-server, a slow WMS (latency on
every call and message), an ERP outage of tens of seconds, and crashes at the
injection points (after a commit before the publish, after a publish before
the outbox delete, after an effect before the ack). A supervisor restarts
whatever died, as Kubernetes would.

Invariants (judged by tests/faults/verdict.py, pure functions over what the run
collected): every order and every return terminal, in the mix the workload implies (all
orders of the customer without credit rejected, at least 95 % of the others invoiced; as
many returns as asked for, at least 95 % of those with a crediting reason credited);
exactly one invoice per invoiced order and none for the others; exactly one credit memo
per credited return and none for the others, never more than invoiced; no shipment
booked twice; ERP ledger equal to WMS stock over the union of both sides' positions and
no negative stock; the dead-letter stream holds only messages with a stated permanent
reason; every fault seen taking effect at least once (a fault is counted only then: the
victim was alive and went down or stopped, the WMS answered measurably slower, each armed
crash point logged that it fired).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import nats

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, World, make_world
from tests.faults.verdict import (
    RETURN_TERMINAL,
    TERMINAL,
    FaultEffect,
    Observed,
    Verdict,
    judge,
    ledger_drift,
    poor_order,
)

# Restocked, scrapped (both credited) and refused, by the WMS autopilot's default rules.
REASONS = [rpb.RETURN_REASON_NOT_NEEDED, rpb.RETURN_REASON_DEFECTIVE, rpb.RETURN_REASON_OTHER]
ACK_WAIT = 3

CRASH_POINTS = {"after_commit_before_publish": 0.002, "after_publish_before_delete": 0.01,
                "after_effect_before_ack": 0.002}
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
    "CROSSDOCK_CRASH_POINTS": ",".join(f"{k}:{v}" for k, v in CRASH_POINTS.items()),
}
# A slow and flaky WMS: 30 ms on every call and message, 2% of them fail (retried).
WMS_LATENCY_MS = 30
SLOW_WMS = {"CROSSDOCK_FAULT_LATENCY_MS": str(WMS_LATENCY_MS), "CROSSDOCK_FAULT_ERROR_RATE": "0.02"}
# The line a service writes (services/mesh/faults.py) just before a crash point exits it.
CRASH_LINE = re.compile(r'"event": "fault\.crash_point", "point": "(\w+)"')


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
    # The outcome mix against what the workload implies (verdict.order_mix / return_mix).
    mix: dict = field(default_factory=dict)
    # Faults counted once their effect was seen; injections that took no effect apart.
    faults: Counter = field(default_factory=Counter)
    faults_not_seen: Counter = field(default_factory=Counter)
    fault_log: list[dict] = field(default_factory=list)
    crash_exits: int = 0
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

    def take(self, obs: Observed, verdict: Verdict) -> None:
        """The verdict and the figures of what was collected."""
        self.orders = Counter(pb.OrderStatus.Name(v).removeprefix("ORDER_STATUS_")
                              for v in obs.orders.values())
        self.returns = Counter(rpb.ReturnStatus.Name(v).removeprefix("RETURN_STATUS_")
                               for v in obs.returns.values())
        self.mix = verdict.mix
        self.faults, self.faults_not_seen = verdict.faults_seen, verdict.faults_not_seen
        self.fault_log = [asdict(f) for f in obs.faults]
        self.crash_points = sum(obs.crash_points_fired.values())
        self.dead_letters = len(obs.dead_letters)
        self.dead_letters_not_permanent = sum(1 for permanent, _ in obs.dead_letters if not permanent)
        self.invariants = verdict.invariants
        self.problems = verdict.problems + self.problems

    def text(self) -> str:
        o, r = self.mix.get("orders", {}), self.mix.get("returns", {})
        good, poor = o.get("good", {}), o.get("poor", {})
        slow = [f["evidence"] for f in self.fault_log if f["kind"] == "wms_slowed"]
        lines = [
            f"chaos run: {sum(self.orders.values())} orders and {sum(self.returns.values())} returns "
            f"in {self.elapsed:.0f}s",
            "  orders:     " + ", ".join(f"{k} {v}" for k, v in sorted(self.orders.items())),
            f"    expected: good customer {good.get('orders', 0)}, INVOICED {good.get('INVOICED', 0)} "
            f"(>= {good.get('required_invoiced', 0)} required); no credit {poor.get('orders', 0)}, "
            f"REJECTED {poor.get('REJECTED', 0)} (all required)",
            "  returns:    " + ", ".join(f"{k} {v}" for k, v in sorted(self.returns.items())),
            f"    expected: {r.get('created', 0)} of {r.get('requested', 0)} created; "
            f"{r.get('crediting_reason', 0)} with a crediting reason, {r.get('credited', 0)} credited "
            f"(>= {r.get('required_credited', 0)} required); {r.get('refusing_reason', 0)} with a "
            f"refusing reason, {r.get('credited_though_refusing', 0)} credited (0 allowed)",
            "  faults seen: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            "  injected without effect: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.faults_not_seen.items())) or "none"),
            *(f"  {e}" for e in slow[:1]),
            f"  crash points fired {self.crash_points} (exits seen {self.crash_exits}), retries "
            f"{self.retries}, duplicates absorbed {self.duplicates_absorbed}, dead letters "
            f"{self.dead_letters} ({self.dead_letters_not_permanent} without a permanent reason)",
            "  invariants: "
            + ", ".join(f"{k} {'OK' if v else 'FAILED'}" for k, v in self.invariants.items()),
        ]
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        if self.notes:
            lines.append(f"  healed: {len(self.notes)} interrupted restart(s) retried by the supervisor")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({**self.__dict__, "ok": self.ok}, default=dict, indent=2)


def process_state(pid: int) -> str:
    """The state letter of a process (R, S, T for stopped, ...); "" when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text.rsplit(")", 1)[-1].split()[0]


async def until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


class Chaos:
    def __init__(self, mesh: Mesh, size: Size, summary: Summary) -> None:
        self.mesh = mesh
        self.size = size
        self.summary = summary
        self.rnd = random.Random(size.seed)
        self.down: set[str] = set()  # planned outages: the supervisor leaves them alone
        self.effects: list[FaultEffect] = []
        self.faults_over = asyncio.Event()
        self.stop = asyncio.Event()

    async def supervisor(self) -> None:
        """Restart whatever died (crash points, kills), as an orchestrator would."""
        while not self.stop.is_set():
            try:
                for key, proc in list(self.mesh.services.items()):
                    if key not in self.down and not proc.alive:
                        if proc.proc and proc.proc.returncode == 86:
                            self.summary.crash_exits += 1
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
        # Every kind once early on (the ERP outage first of all), then at random; a kind
        # whose injection took no effect is queued again until it has been seen once.
        first = ["erp_outage", *self.rnd.sample(sorted(set(kinds)), len(set(kinds)))]
        seen: set[str] = set()
        while not self.faults_over.is_set():
            await asyncio.sleep(self.size.fault_every * self.rnd.uniform(0.5, 1.5))
            if self.faults_over.is_set():
                return
            kind = first.pop(0) if first else self.rnd.choice(kinds)
            try:
                effect = await self._inject(kind)
            except Exception as exc:  # noqa: BLE001 - recorded; the supervisor heals
                self.summary.problems.append(f"fault {kind}: {exc!r}")
                effect = FaultEffect(kind, False, f"failed: {exc!r}")
            finally:
                self.down.clear()
            self.effects.append(effect)
            if effect.seen:
                seen.add(kind)
            elif kind not in seen and kind not in first:
                first.append(kind)

    def _live(self) -> list[str]:
        return [k for k, p in self.mesh.services.items() if k not in self.down and p.alive]

    async def _inject(self, kind: str) -> FaultEffect:
        if kind in ("sigkill", "sigstop"):
            live = self._live()
            if not live:
                return FaultEffect(kind, False, "no live service to hit")
            key = self.rnd.choice(live)
            popen = self.mesh.services[key].proc
            if kind == "sigkill":
                self.mesh.services[key].kill()  # the supervisor restarts it
                return FaultEffect(kind, popen.returncode == -signal.SIGKILL,
                                   f"{key} pid {popen.pid}: exit {popen.returncode}")
            self.down.add(key)
            try:
                popen.send_signal(signal.SIGSTOP)
                stopped = await until(lambda: process_state(popen.pid) == "T", 5)
                await asyncio.sleep(ACK_WAIT + 1.5)  # its unacked messages go to the others / later
            finally:
                if popen.poll() is None:
                    popen.send_signal(signal.SIGCONT)
                self.down.discard(key)
            return FaultEffect(kind, stopped, f"{key} pid {popen.pid}: "
                               + ("stopped (state T)" if stopped else "never seen stopped"))
        if kind == "nats_restart":
            nats_server = self.mesh.nats
            popen, was_alive = nats_server.proc, self._nats_alive()
            self.down.add("nats")
            try:
                await asyncio.to_thread(nats_server.stop)
                went_down = was_alive and popen.poll() is not None
                await asyncio.sleep(1.0)
                await asyncio.to_thread(nats_server.start)
            finally:
                self.down.discard("nats")
            return FaultEffect(kind, went_down, f"nats-server pid {popen.pid if popen else None}: "
                               f"{'alive' if was_alive else 'not running'}, then exit {popen.poll()}")
        if kind == "erp_outage":
            erp = self.mesh.services["erp"]
            self.down.add("erp")
            try:
                popen, was_alive = erp.proc, erp.alive
                erp.kill()
                killed = was_alive and popen.returncode == -signal.SIGKILL
                await asyncio.sleep(self.size.erp_outage)
                stayed_down = not erp.alive and erp.proc is popen
                await asyncio.to_thread(self._restart, "erp")
            finally:
                self.down.discard("erp")
            return FaultEffect(kind, killed and stayed_down,
                               f"erp pid {popen.pid}: {'killed' if killed else 'was not running'}, "
                               f"{'down' if stayed_down else 'restarted by someone'} for "
                               f"{self.size.erp_outage:.0f}s")
        raise ValueError(kind)


async def fastest_call(call, calls: int, timeout: float) -> tuple[list[float], int]:
    """Latencies (ms) of ``calls`` successful calls, and how many failed as injected faults."""
    took: list[float] = []
    injected = 0
    deadline = time.monotonic() + timeout
    while len(took) < calls and time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            injected += "injected failure" in (err.details() or "")
            await asyncio.sleep(0.1)
            continue
        took.append((time.perf_counter() - t0) * 1000)
    return took, injected


async def probe_wms(stubs: Stubs, calls: int = 10, timeout: float = 60) -> FaultEffect:
    """The WMS is slowed only if every one of its calls took the injected latency at least
    (the fastest of several, so a loaded machine cannot fake it); TMS, not slowed, as a foil."""
    wms, injected = await fastest_call(
        lambda: stubs.wms.ListWarehouses(wms_pb2.ListWarehousesRequest(), timeout=5), calls, timeout)
    tms, _ = await fastest_call(
        lambda: stubs.tms.ListCarriers(tms_pb2.ListCarriersRequest(), timeout=5), calls, timeout)
    fastest = min(wms) if wms else 0.0
    return FaultEffect("wms_slowed", len(wms) == calls and fastest >= WMS_LATENCY_MS,
                       f"WMS: fastest of {len(wms)} calls {fastest:.1f} ms (latency injected "
                       f"{WMS_LATENCY_MS} ms), {injected} injected failures; TMS fastest "
                       f"{min(tms) if tms else 0:.1f} ms")


async def submit_orders(stubs: Stubs, world: World, poor: World, size: Size,
                        rnd: random.Random) -> tuple[list[str], set[str]]:
    """The orders' ids, and those of them that went to the customer without credit."""
    reqs = []
    for i in range(size.orders):
        w = poor if poor_order(i) else world  # a few credit refusals
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

    ids = await asyncio.gather(*(one(r) for r in reqs))
    return ids, {oid for i, oid in enumerate(ids) if poor_order(i)}


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
                         timeout: float) -> dict[str, int]:
    """A return for each of ``size.returns`` orders, as soon as it is invoiced: return id -> reason."""
    pending = rnd.sample(order_ids, len(order_ids))
    created: dict[str, int] = {}
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
                reason = rnd.choice(REASONS)
                req = rpb.CreateReturnRequest(request_id=f"chaos-{oid}", order_id=oid, lines=[rpb.ReturnLine(
                    line_number=line.line_number, quantity=rnd.randint(1, line.quantity), reason=reason)])
                resp = await _unavailable_retry(lambda req=req: rs.CreateReturn(req, timeout=10))
                created[resp.customer_return.return_id] = reason
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


def read_books(mesh: Mesh, obs: Observed) -> None:
    """ERP's invoices, credit memos and ledger, TMS's shipments and WMS's stock into ``obs``."""
    with _db(mesh, "erp") as erp, _db(mesh, "tms") as tms, _db(mesh, "wms") as wms:
        obs.invoices = Counter(oid for (oid,) in erp.execute("SELECT order_id FROM invoices"))
        obs.credit_memos = Counter(rid for (rid,) in erp.execute("SELECT return_id FROM credit_memos"))
        obs.memos_over_invoice = erp.execute(
            "SELECT count(*) FROM credit_memos m JOIN invoices i ON i.order_id = m.order_id "
            "WHERE m.total_minor > i.total_minor").fetchone()[0]
        obs.ledger = {(w, k): h for k, w, h in erp.execute(
            "SELECT sku, warehouse_id, on_hand FROM ledger_positions")}
        obs.shipments = Counter(oid for (oid,) in tms.execute("SELECT order_id FROM shipments"))
        obs.stock = {(w, k): (h, a) for w, k, h, a in wms.execute(
            "SELECT warehouse_id, sku, on_hand, allocated FROM stock")}


async def collect(mesh: Mesh, obs: Observed, s: Summary) -> None:
    """Read the stores, the dead-letter stream and the logs into ``obs`` (the orders, returns
    and faults are in it already)."""
    # The last movements may still be in flight: read the books until ERP's ledger and WMS's
    # stock agree, for a minute at most (what is left then is drift).
    deadline = time.monotonic() + 60
    while True:
        read_books(mesh, obs)
        if not ledger_drift(obs.ledger, {k: h for k, (h, _) in obs.stock.items()}):
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(1)

    nc = await nats.connect(servers=mesh.nats.url.split(","))
    try:
        js = nc.jetstream()
        seq = 1
        while True:
            try:
                raw = await js.get_msg("DLQ", seq, subject="dlq.>", next=True)
            except nats.js.errors.NotFoundError:
                break
            obs.dead_letters.append((raw.headers.get("crossdock-dlq-permanent") == "true",
                                     str(raw.headers.get("crossdock-dlq-reason"))))
            seq = raw.seq + 1
    finally:
        await nc.close()

    for proc in mesh.services.values():
        text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        s.retries += text.count('"message.retry"')
        s.duplicates_absorbed += text.count('"message.duplicate"')
        obs.crash_points_fired.update(CRASH_LINE.findall(text))


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
    obs = Observed(returns_requested=size.returns, crash_points_armed=set(CRASH_POINTS))
    try:
        chaos = Chaos(mesh, size, summary)
        supervisor = asyncio.create_task(chaos.supervisor())
        # Crash points fire from the start: set up as a client would, retrying.
        world = await _retrying(lambda: make_world(stubs, stock=size.orders * 10))
        poor = await _retrying(lambda: make_world(stubs, credit_minor=1_00, stock=0))
        faults = asyncio.create_task(chaos.faults())
        slow_wms = asyncio.create_task(probe_wms(stubs))  # while the orders go in
        ids, obs.poor_orders = await submit_orders(stubs, world, poor, size, random.Random(size.seed))
        obs.good_orders = set(ids) - obs.poor_orders
        chaos.effects.append(await slow_wms)
        returns_channel = grpc.aio.insecure_channel(mesh.addr("returns"))
        rs = returns_pb2_grpc.ReturnsServiceStub(returns_channel)
        obs.return_reasons = await submit_returns(stubs, rs, ids, size, random.Random(size.seed + 1),
                                                  size.quiescence_timeout)
        # Keep the faults going a while after the last submission, then heal:
        # no new faults, but crash points stay armed and the supervisor keeps
        # restarting whatever they take down, to the end.
        await asyncio.sleep(size.fault_every * 3)
        chaos.faults_over.set()
        await faults
        orders = await wait_quiescent(stubs, ids, size.quiescence_timeout)
        obs.orders = {oid: o.status for oid, o in orders.items()}
        returns = await wait_returns(rs, list(obs.return_reasons), size.quiescence_timeout)
        obs.returns = {rid: r.status for rid, r in returns.items()}
        obs.faults = chaos.effects
        await collect(mesh, obs, summary)
        await returns_channel.close()
        chaos.stop.set()
        await supervisor
    finally:
        await stubs.close()
        mesh.stop()
    summary.take(obs, judge(obs))
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(summary.as_json())
    raise SystemExit(0 if summary.ok else 1)


if __name__ == "__main__":
    main()
