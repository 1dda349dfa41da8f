"""Scenario 7: the peers, side by side with Crossdock in one run.

Crossdock's ERP, WMS and TMS run as the mesh's own processes on their own
SQLite stores with the mesh's nats-server (``sync_interval: always``), without
order-to-ship, returns or the gateway: a peer (``bench/peers/``) is the
orchestrator instead. For each peer, with the definitions of scenario 2:

- throughput: closed loop (at most ``backlog`` orders between submission and
  invoiced) for ``throughput_s``; orders/s completed in the window after
  ``warmup_s``; CPU ms per order from /proc (utime + stime) of every process
  involved (the peer's server and worker, or the DBOS process; ERP, WMS, TMS
  and nats-server) over the run, and peak RSS of each;
- completion latency p50/p99 (submission accepted -> workflow completed, the
  peer's own clock) at half that rate, open loop, for ``completion_s``;
- a SIGKILL of the orchestrator half-way through an open-loop run at half
  rate (Temporal: worker and server; DBOS: its process), restarted at once as
  a supervisor would: orders lost (accepted, never invoiced), duplicated (more
  than one ERP invoice), steps run again (commands the broker already had),
  time until the first order completes after the kill and until every order
  in flight at the kill has completed.

The peers run with the peers' venv (``bench/peers/venv.py``), installed on
first use.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from crossdock.erp.v1 import erp_pb2_grpc
from crossdock.tms.v1 import tms_pb2_grpc
from crossdock.wms.v1 import wms_pb2_grpc
from services.mesh.config import SYSTEM_SERVICES
from services.mesh.launcher import (
    NatsServer,
    ServiceProcess,
    free_port,
    guarded,
    terminate,
    wait_until,
)

from . import meshrun
from .peers import venv
from .stats import latency_ms, open_loop

ROOT = Path(__file__).resolve().parents[1]
KILL_TIMEOUT_S = 240


# ---- what /proc says about a set of processes ----

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) and of its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(x) for x in fields[11:15]) / _TICK


class ProcWatch:
    """CPU seconds between ``start`` and ``stop`` and peak RSS (VmRSS sampled twice a
    second, and VmHWM) of named processes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak: dict[str, int] = defaultdict(int)
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                if (kb := meshrun._proc_kb(pid, "VmRSS")) is not None:
                    self.peak[name] = max(self.peak[name], kb)
            await asyncio.sleep(0.5)

    async def __aenter__(self) -> ProcWatch:
        self.cpu0 = {n: cpu_seconds(p) or 0.0 for n, p in self.pids.items()}
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        self.cpu = {n: (cpu_seconds(p) or 0.0) - self.cpu0[n] for n, p in self.pids.items()}

    def result(self, orders: int) -> dict:
        total = sum(self.cpu.values())
        return {
            "cpu_ms_per_order": round(total * 1e3 / orders, 1) if orders else None,
            "cpu_s": round(total, 2),
            "by_process": {
                n: {
                    "cpu_ms_per_order": round(c * 1e3 / orders, 1) if orders else None,
                    "peak_rss_mb": round(self.peak.get(n, 0) / 1024, 1),
                    "vm_hwm_mb": round((meshrun._proc_kb(self.pids[n], "VmHWM") or 0) / 1024, 1),
                }
                for n, c in self.cpu.items()
            },
            "peak_rss_mb": round(max(self.peak.values(), default=0) / 1024, 1),
        }


# ---- the system services, alone ----


class SystemMesh:
    """nats-server plus ERP, WMS and TMS, each its own process (the launcher's parts)."""

    def __init__(self, work: Path) -> None:
        self.data_dir = (work / "systems").resolve()
        self.nats = NatsServer(self.data_dir)
        self.services: dict[str, ServiceProcess] = {}

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        for name in SYSTEM_SERVICES:
            env = {
                **meshrun.ENV,
                "CROSSDOCK_NATS_URL": self.nats.url,
                "CROSSDOCK_DATA_DIR": str(self.data_dir),
                **{f"CROSSDOCK_{o.upper()}_ADDR": p.addr for o, p in self.services.items()},
            }
            proc = ServiceProcess(name, self.data_dir, env)
            proc.start()
            self.services[name] = proc
        for proc in self.services.values():
            proc.wait_healthy()

    def addr(self, name: str) -> str:
        return self.services[name].addr

    def pids(self) -> dict[str, int]:
        return {"nats-server": self.nats.proc.pid, **{n: p.proc.pid for n, p in self.services.items()}}

    def stop(self) -> None:
        for proc in self.services.values():
            proc.stop()
        self.nats.stop()

    def __enter__(self) -> SystemMesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Stubs:
    """gRPC stubs of the system services (what ``make_world`` needs)."""

    def __init__(self, systems: SystemMesh) -> None:
        self.channels = [grpc.aio.insecure_channel(systems.addr(n)) for n in ("erp", "wms", "tms")]
        self.erp = erp_pb2_grpc.ErpServiceStub(self.channels[0])
        self.wms = wms_pb2_grpc.WmsServiceStub(self.channels[1])
        self.tms = tms_pb2_grpc.TmsServiceStub(self.channels[2])

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


# ---- the peers' processes ----


def _peer_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'gen'}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1"}


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    ready_file: Path | None = None
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        if self.ready_file:
            self.ready_file.unlink(missing_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        # guarded: it dies with the bench (the parent-death signal, set by setpriv before exec).
        self.proc = subprocess.Popen(
            guarded(self.args), cwd=ROOT, env=_peer_env(), stdout=out, stderr=subprocess.STDOUT
        )
        if self.ready_file:

            def ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
                return self.ready_file.exists()

            wait_until(ready, timeout, f"{self.name} to be ready", interval=0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        terminate(self.proc, 15)


@dataclass
class Peer:
    """One peer configuration: how to start its processes and how the driver reaches it."""

    label: str  # the run's name, e.g. "temporal-wal"
    kind: str  # "temporal" or "dbos"
    settings: str  # what it runs with (for the report)
    work: Path
    systems: SystemMesh
    target: str = ""
    procs: list[Proc] = field(default_factory=list)
    repeats: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir = (self.work / self.label).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.repeats = self.dir / "repeats.txt"

    def common(self) -> list[str]:
        return [
            "--nats",
            self.systems.nats.url,
            "--erp",
            self.systems.addr("erp"),
            "--wms",
            self.systems.addr("wms"),
            "--label",
            self.label,
            "--repeats-file",
            str(self.repeats),
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def pids(self) -> dict[str, int]:
        return {p.name: p.proc.pid for p in self.procs if p.proc}


def temporal_peer(work: Path, systems: SystemMesh, *, label: str, pragmas: tuple[str, ...] = ()) -> Peer:
    """``temporal server start-dev`` on a SQLite file (its default journal mode, or
    ``pragmas``) and the worker, two processes."""
    py = venv.python()
    settings = (
        ("SQLite " + ", ".join(pragmas))
        if pragmas
        else "SQLite, default journal mode (delete), synchronous FULL"
    )
    peer = Peer(label, "temporal", settings, work, systems)
    port = free_port()
    peer.target = f"127.0.0.1:{port}"
    db = peer.dir / "temporal.db"
    server = [
        str(venv.temporal_cli()),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-filename",
        str(db),
        "--log-level",
        "warn",
    ]
    for p in pragmas:
        server += ["--sqlite-pragma", p]
    peer.procs = [
        Proc("temporal-server", server, peer.dir / "server.log"),
        Proc(
            "temporal-worker",
            [
                str(py),
                "-m",
                "bench.peers.temporal_peer",
                "--temporal",
                peer.target,
                *peer.common(),
                "--ready-file",
                str(peer.dir / "worker.ready"),
            ],
            peer.dir / "worker.log",
            ready_file=peer.dir / "worker.ready",
        ),
    ]
    return peer


def dbos_peer(work: Path, systems: SystemMesh, *, label: str, db_url: str = "", poll: float = 1.0) -> Peer:
    """The DBOS process (workflows, steps, queue, event bridge) on a SQLite file
    pre-set to WAL, or on PostgreSQL."""
    py = venv.python()
    peer = Peer(label, "dbos", "", work, systems)
    url = db_url or f"sqlite:///{peer.dir / 'dbos.sqlite'}"
    peer.target = url
    peer.settings = (
        f"PostgreSQL system database, poll {poll} s"
        if url.startswith("postgres")
        else f"SQLite WAL (file pre-set), synchronous FULL (default), poll {poll} s"
    )
    peer.procs = [
        Proc(
            "dbos",
            [
                str(py),
                "-m",
                "bench.peers.dbos_peer",
                "--db",
                url,
                "--poll",
                str(poll),
                *peer.common(),
                "--ready-file",
                str(peer.dir / "dbos.ready"),
            ],
            peer.dir / "dbos.log",
            ready_file=peer.dir / "dbos.ready",
        )
    ]
    return peer


# ---- reading the results ----


def erp_invoices(systems: SystemMesh, order_ids: set[str]) -> dict[str, list[datetime]]:
    return erp_invoices_at(systems.data_dir, order_ids)


def erp_invoices_at(data_dir: Path, order_ids: set[str]) -> dict[str, list[datetime]]:
    """ERP's invoices per order (posted_at), from its store (read-only)."""
    out: dict[str, list[datetime]] = defaultdict(list)
    with closing(sqlite3.connect(f"file:{data_dir / 'erp.db'}?mode=ro", uri=True)) as conn:
        for order_id, at in conn.execute("SELECT order_id, posted_at FROM invoices"):
            if order_id in order_ids:
                t = datetime.fromisoformat(str(at))
                out[order_id].append(t if t.tzinfo else t.replace(tzinfo=UTC))
    return out


async def world_file(stubs: Stubs, path: Path) -> dict:
    w = await meshrun.world(stubs)
    world = {
        "prefix": f"P{uuid.uuid4().hex[:6].upper()}",
        "customer_id": w.customer_id,
        "warehouse_id": w.warehouse_id,
        "currency_code": "USD",
        "skus": w.skus,
        "prices": w.prices,
    }
    path.write_text(json.dumps(world))  # noqa: ASYNC240 - before the load
    return world


async def drive(peer: Peer, stubs: Stubs, name: str, *args: str, settle: float = 300) -> dict:
    """Run the driver (its own process, the peers' venv) on a fresh world; its report."""
    world = peer.dir / f"{name}.world.json"
    await world_file(stubs, world)
    out = peer.dir / f"{name}.json"
    cmd = [
        str(venv.python()),
        "-m",
        "bench.peers.driver",
        peer.kind,
        "--target",
        peer.target,
        "--world",
        str(world),
        "--erp-db",
        str(peer.systems.data_dir / "erp.db"),
        "--out",
        str(out),
        "--settle",
        str(settle),
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *guarded(cmd), cwd=ROOT, env=_peer_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    log, _ = await proc.communicate()
    (peer.dir / f"{name}.log").write_bytes(log)
    if proc.returncode != 0:
        raise RuntimeError(f"the {peer.label} driver ({name}) failed: {log.decode()[-1500:]}")
    return json.loads(out.read_text())


def _completed(report: dict) -> list[dict]:
    return [o for o in report["orders"].values() if o.get("close") and o.get("status") == "COMPLETED"]


async def throughput(peer: Peer, stubs: Stubs, *, duration: float, warmup: float, backlog: int) -> dict:
    pids = {**peer.pids(), **peer.systems.pids()}
    async with ProcWatch(pids) as watch:
        r = await drive(
            peer,
            stubs,
            "throughput",
            "--mode",
            "closed",
            "--duration",
            str(duration),
            "--backlog",
            str(backlog),
        )
    done = _completed(r)
    start, end = r["load_started"] + warmup, r["load_ended"]
    in_window = [o for o in done if start <= o["close"] <= end]
    return {
        "submitted": r["submitted"],
        "completed": len(done),
        "duration_s": duration,
        "warmup_s": warmup,
        "backlog_limit": backlog,
        "orders_per_s": round(len(in_window) / (end - start), 2) if end > start else None,
        "submit_latency": latency_ms(r["accept_s"]),
        **watch.result(len(done)),
    }


async def completion_latency(peer: Peer, stubs: Stubs, *, rate: float, duration: float) -> dict:
    r = await drive(
        peer, stubs, "completion", "--mode", "open", "--rate", str(rate), "--duration", str(duration)
    )
    done = _completed(r)
    return {
        "offered_orders_per_s": round(rate, 2),
        "duration_s": duration,
        "submitted": r["submitted"],
        "completed": len(done),
        "completion": latency_ms([o["close"] - o["start"] for o in done]),
    }


async def kill_orchestrator(peer: Peer, stubs: Stubs, *, rate: float, duration: float) -> dict:
    """An open loop at ``rate``; half-way, SIGKILL of every orchestrator process,
    restarted at once; then what happened to every accepted order."""
    accepted_file = peer.dir / "kill.accepted"
    accepted_file.unlink(missing_ok=True)
    repeats_before = _lines(peer.repeats)
    run = asyncio.create_task(
        drive(
            peer,
            stubs,
            "kill",
            "--mode",
            "open",
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--accepted",
            str(accepted_file),
            settle=KILL_TIMEOUT_S,
        )
    )
    await asyncio.sleep(duration / 2)
    killed_at = time.time()
    peer.kill()
    await asyncio.to_thread(peer.start)
    up_at = time.time()
    r = await run
    ids = set(accepted_file.read_text().split()) if accepted_file.exists() else set()
    invoices = erp_invoices(peer.systems, ids)
    orders = r["orders"]
    closes = sorted(o["close"] for o in orders.values() if o.get("close") and o["close"] > killed_at)
    in_flight = [
        o
        for o in orders.values()
        if o["submitted_at"] <= killed_at and not (o.get("close") and o["close"] <= killed_at)
    ]
    settled = [o["close"] for o in in_flight if o.get("close")]
    return {
        "offered_orders_per_s": round(rate, 2),
        "duration_s": duration,
        "killed": list(peer.pids()),
        "accepted": len(ids),
        "in_flight_at_kill": len(in_flight),
        "lost": sum(1 for i in ids if not invoices.get(i)),
        "duplicated": sum(1 for i in ids if len(invoices.get(i, [])) > 1),
        "steps_repeated": _lines(peer.repeats) - repeats_before,
        "submission_retries": r["retries"],
        "restart_s": round(up_at - killed_at, 2),
        "first_completion_after_kill_s": round(closes[0] - killed_at, 2) if closes else None,
        "in_flight_completed_s": (
            round(max(settled) - killed_at, 2) if in_flight and len(settled) == len(in_flight) else None
        ),
    }


async def crossdock_kill(mesh, stubs, *, rate: float, duration: float,
                         timeout: float = KILL_TIMEOUT_S) -> dict:
    """The same SIGKILL run against Crossdock's own orchestrator, ``ordertoship``, in the
    full mesh: an open loop at ``rate`` (a submission that fails is sent again with the
    same request_id until accepted), the kill half-way, restarted at once."""
    from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb

    w = await meshrun.world(stubs)
    proc = mesh.services["ordertoship"]
    accepted: dict[str, float] = {}
    retries = 0

    async def submit(i: int) -> None:
        nonlocal retries
        req = meshrun.order(w, i)
        req.request_id = f"kill-{w.suffix}-{i}"
        deadline = time.monotonic() + duration + 120
        while True:
            try:
                r = await stubs.ots.SubmitOrder(req, timeout=5)
                accepted[r.order.order_id] = time.time()
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    return
                retries += 1
                await asyncio.sleep(0.2)

    async def kill_and_restart() -> tuple[float, float]:
        await asyncio.sleep(duration / 2)
        at = time.time()
        proc.kill()

        def restart():
            proc.start()
            proc.wait_healthy()

        await asyncio.to_thread(restart)
        return at, time.time()

    (killed_at, up_at), _ = await asyncio.gather(kill_and_restart(), open_loop(rate, duration, submit))
    deadline = time.monotonic() + timeout
    while True:
        orders = {o.order_id: o for o in await meshrun.orders_of(stubs, w.customer_id)}
        done = {i for i in accepted if i in orders and orders[i].status == pb.ORDER_STATUS_INVOICED}
        if len(done) >= len(accepted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    invoices = erp_invoices_at(mesh.data_dir, set(accepted))
    closes = {i: meshrun.ts(orders[i].update_time).timestamp() for i in done}
    in_flight = [i for i, at in accepted.items() if at <= killed_at and not closes.get(i, 1e18) <= killed_at]
    after = sorted(c for c in closes.values() if c > killed_at)
    settled = [closes[i] for i in in_flight if i in closes]
    return {
        "offered_orders_per_s": round(rate, 2), "duration_s": duration, "killed": ["ordertoship"],
        "accepted": len(accepted), "in_flight_at_kill": len(in_flight),
        "lost": sum(1 for i in accepted if not invoices.get(i)),
        "duplicated": sum(1 for i in accepted if len(invoices.get(i, [])) > 1),
        "steps_repeated": None, "submission_retries": retries, "restart_s": round(up_at - killed_at, 2),
        "first_completion_after_kill_s": round(after[0] - killed_at, 2) if after else None,
        "in_flight_completed_s": (round(max(settled) - killed_at, 2)
                                  if in_flight and len(settled) == len(in_flight) else None),
    }


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _delete_bridge_consumers(systems: SystemMesh, label: str) -> None:
    """A stopped peer's durable consumers would keep collecting the next peer's events."""
    import nats

    nc = await nats.connect(systems.nats.url)
    try:
        js = nc.jetstream()
        for stream in ("ERP", "WMS", "TMS"):
            try:
                await js.delete_consumer(stream, f"peer-{label}-{stream.lower()}")
            except Exception:  # noqa: BLE001 - never created
                pass
    finally:
        await nc.close()


async def run_peer(peer: Peer, size, log, *, kill_s: float) -> dict:
    """Every figure of one peer configuration."""
    stubs = Stubs(peer.systems)
    out: dict = {"kind": peer.kind, "settings": peer.settings}
    try:
        await asyncio.to_thread(peer.start)
        log(f"7. {peer.label}: throughput…")
        out["throughput"] = await throughput(
            peer, stubs, duration=size.throughput_s, warmup=size.warmup_s, backlog=size.backlog
        )
        rate = max((out["throughput"]["orders_per_s"] or 2.0) / 2, 1.0)
        log(f"7. {peer.label}: {out['throughput']['orders_per_s']} orders/s; completion at {rate:.1f}/s…")
        out["completion"] = await completion_latency(peer, stubs, rate=rate, duration=size.completion_s)
        log(f"7. {peer.label}: SIGKILL of the orchestrator mid-run…")
        out["kill"] = await kill_orchestrator(peer, stubs, rate=rate, duration=kill_s)
    finally:
        await stubs.close()
        peer.stop()
        await _delete_bridge_consumers(peer.systems, peer.label)
        if peer.target.startswith("postgres"):
            _drop_pg_database(peer.target)
    return out


def configurations(work: Path, systems: SystemMesh, names: list[str]) -> list[Peer]:
    """The peers by name: temporal (default journal), temporal-wal, dbos (SQLite WAL), dbos-pg."""
    made = []
    for name in names:
        if name == "temporal":
            made.append(temporal_peer(work, systems, label="temporal"))
        elif name == "temporal-wal":
            made.append(
                temporal_peer(
                    work, systems, label="temporal-wal", pragmas=("journal_mode=wal", "synchronous=normal")
                )
            )
        elif name == "dbos" or name.startswith("dbos:"):
            # "dbos:0.25": another polling interval than DBOS's default (1 s)
            poll = float(name.split(":", 1)[1]) if ":" in name else 1.0
            label = f"dbos-poll-{round(poll * 1000)}ms" if ":" in name else "dbos"  # no dots: a consumer name
            made.append(dbos_peer(work, systems, label=label, poll=poll))
        elif name == "dbos-pg":
            made.append(dbos_peer(work, systems, label="dbos-pg", db_url=_pg_database()))
        else:
            raise ValueError(f"unknown peer {name!r}")
    return made


def pg_url() -> str:
    return os.environ.get("CROSSDOCK_BENCH_PG_URL") or os.environ.get("CROSSDOCK_TEST_PG_URL") or ""


async def with_cpu(pids: dict[str, int], scenario) -> dict:
    """Run a Crossdock scenario that reports ``invoiced`` and add its CPU ms per order
    (the same /proc reading as the peers')."""
    async with ProcWatch(pids) as watch:
        out = await scenario
    cpu = watch.result(out.get("invoiced") or 0)
    out["cpu"] = {"cpu_ms_per_order": cpu["cpu_ms_per_order"], "cpu_s": cpu["cpu_s"],
                  "by_process": {n: v["cpu_ms_per_order"] for n, v in cpu["by_process"].items()}}
    return out


def _pg_database() -> str:
    """A fresh database for DBOS's system tables on the PostgreSQL of CROSSDOCK_BENCH_PG_URL
    (or CROSSDOCK_TEST_PG_URL)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = pg_url()
    if not url:
        raise RuntimeError("dbos-pg needs CROSSDOCK_BENCH_PG_URL (or CROSSDOCK_TEST_PG_URL)")
    name = f"bench_dbos_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(url: str) -> None:
    """The run's database goes once the peer has stopped (nothing of it is read later)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(make_url(pg_url()).render_as_string(hide_password=False))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
    conn.close()


def measure(work: Path, size, names: list[str], log, *, kill_s: float) -> dict:
    """Start the system services once and measure each peer configuration in turn."""
    venv.python()  # installed before anything is started (the first time: about a minute)
    results: dict = {"peers": {}, "errors": {}}
    with SystemMesh(work / "peers") as systems:
        for peer in configurations(work / "peers", systems, names):
            try:
                asyncio.run(meshrun.quiesce(systems))
                results["peers"][peer.label] = asyncio.run(run_peer(peer, size, log, kill_s=kill_s))
            except Exception as exc:  # noqa: BLE001 - the other peers still run; reported
                results["errors"][peer.label] = f"{type(exc).__name__}: {exc}"
                import traceback

                traceback.print_exc()
    return results
