"""A mesh for the benchmark: every service its own process (SQLite, real
nats-server), WMS autopilot delays at zero, the WMS slowable at run time through
a fault file; plus its metrics (scraped from each service's /metrics) and
memory (/proc)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from services.mesh import metrics as mesh_metrics
from services.mesh.config import SERVICES
from services.mesh.launcher import Mesh
from tests.e2e.conftest import Stubs, World, make_world

ENV = {
    "CROSSDOCK_WMS_PICK_DELAY": "0",
    "CROSSDOCK_WMS_PACK_DELAY": "0",
    "CROSSDOCK_WMS_SHIP_DELAY": "0",
    "CROSSDOCK_LOG_LEVEL": "WARNING",
}
# RPCs the benchmark itself makes to watch orders: not part of the workflow.
WATCHING = ("/GetOrder", "/ListOrders", "/ListLedgerPositions", "/grpc.")


def start_mesh(work: Path, name: str = "mesh", env: dict[str, str] | None = None) -> tuple[Mesh, Path]:
    fault_file = work / f"{name}-wms.fault"
    fault_file.unlink(missing_ok=True)
    mesh = Mesh(work / name, env={**ENV, **(env or {})},
                service_env={"wms": {"CROSSDOCK_FAULT_FILE": str(fault_file)}})
    try:
        mesh.start()
    except BaseException:
        mesh.stop()
        raise
    return mesh, fault_file


async def world(stubs: Stubs, n_skus: int = 4) -> World:
    """A customer with room for any number of orders and stock that never runs out."""
    return await make_world(stubs, credit_minor=10**15, stock=10_000_000, n_skus=n_skus)


def order(w: World, i: int) -> pb.SubmitOrderRequest:
    return w.order({w.skus[i % len(w.skus)]: 1})


def now() -> datetime:
    return datetime.now(UTC)


def ts(t) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


async def orders_of(stubs: Stubs, customer_id: str, status: int = 0) -> list[pb.Order]:
    out, token = [], ""
    while True:
        r = await stubs.ots.ListOrders(pb.ListOrdersRequest(customer_id=customer_id, status=status,
                                                            page_size=500, page_token=token))
        out += r.orders
        token = r.next_page_token
        if not token:
            return out


class Metrics:
    """Each service's Prometheus endpoint, found by its port file."""

    def __init__(self, mesh: Mesh) -> None:
        self.urls = {}
        for name in SERVICES:
            f = mesh_metrics.port_file(mesh.data_dir, name)
            if f.exists():
                self.urls[name] = f"http://127.0.0.1:{int(f.read_text())}/metrics"
        # Plain text: gzip would cost the scraped service more CPU than the scrape is worth.
        self.http = httpx.AsyncClient(timeout=10, headers={"Accept-Encoding": "identity"})

    async def scrape(self) -> dict[str, dict]:
        out = {}
        for name, url in self.urls.items():
            r = await self.http.get(url)
            rpcs = messages = transactions = invoiced = 0.0
            by_method: dict[str, float] = defaultdict(float)
            for fam in text_string_to_metric_families(r.text):
                for s in fam.samples:
                    if s.name == "crossdock_grpc_server_handling_seconds_count":
                        method = s.labels.get("method", "")
                        if not any(w in method for w in WATCHING):
                            rpcs += s.value
                            by_method[method.rsplit("/", 1)[-1]] += s.value
                    elif s.name in ("crossdock_messages_handled_total", "crossdock_messages_duplicate_total"):
                        messages += s.value
                    elif s.name == "crossdock_store_transactions_total":
                        transactions += s.value
                    elif s.name == "crossdock_orders_finished_total" and s.labels.get("status") == "INVOICED":
                        invoiced += s.value
            out[name] = {"rpcs": rpcs, "messages": messages, "transactions": transactions,
                         "invoiced": invoiced, "by_method": dict(by_method)}
        return out

    async def invoiced(self) -> float:
        r = await self.http.get(self.urls["ordertoship"])
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                if s.name == "crossdock_orders_finished_total" and s.labels.get("status") == "INVOICED":
                    return s.value
        return 0.0

    async def close(self) -> None:
        await self.http.aclose()


def per_order(before: dict, after: dict, orders: int) -> dict:
    """Workflow cost per order from two scrapes: RPCs served, messages handled,
    store transactions committed (all services), and by service."""
    services = {}
    totals = {"rpcs": 0.0, "messages": 0.0, "transactions": 0.0}
    for name in after:
        d = {k: after[name][k] - before.get(name, {}).get(k, 0.0) for k in totals}
        services[name] = {k: round(v / orders, 2) for k, v in d.items()}
        for k in totals:
            totals[k] += d[k]
    return {**{k: round(v / orders, 2) for k, v in totals.items()}, "orders": orders, "by_service": services}


async def quiesce(mesh: Mesh, timeout: float = 900) -> float:
    """Wait until every durable consumer of the mesh has nothing pending or
    unacknowledged (what one scenario left behind must not slow the next);
    returns the seconds it took."""
    import nats

    start = time.monotonic()
    nc = await nats.connect(mesh.nats.url)
    try:
        js = nc.jetstream()

        async def idle() -> bool:
            for stream in await js.streams_info():
                for info in await js.consumers_info(stream.config.name):
                    if (info.num_pending or 0) + (info.num_ack_pending or 0) > 0:
                        return False
            return True

        deadline = start + timeout
        while not await idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the mesh did not drain in {timeout:.0f} s")
            await asyncio.sleep(0.5)  # poll interval of the broker's consumer info
    finally:
        await nc.close()
    return round(time.monotonic() - start, 1)


def _proc_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples every service's resident set (VmRSS) twice a second; ``result``
    gives the peak per service (and the kernel's own high-water mark, VmHWM)."""

    def __init__(self, mesh: Mesh) -> None:
        self.pids = {name: p.proc.pid for name, p in mesh.services.items() if p.proc}
        self.peak: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                if (kb := _proc_kb(pid, "VmRSS")) is not None:
                    self.peak[name] = max(self.peak[name], kb)
            self._stop.wait(0.5)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        out = {}
        for name, pid in self.pids.items():
            hwm = _proc_kb(pid, "VmHWM")
            out[name] = {"peak_rss_mb": round(self.peak.get(name, 0) / 1024, 1),
                         "vm_hwm_mb": round(hwm / 1024, 1) if hwm else None}
        return out


def request_id() -> str:
    return str(uuid.uuid4())


def monotonic() -> float:
    return time.monotonic()
