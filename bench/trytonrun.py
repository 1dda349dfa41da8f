"""Scenario 8: the mesh on Tryton (issue 14, "Measured").

- ``alone``: Tryton's own cost per sale. A loop that calls trytond directly over its
  JSON-RPC (the adapter's client, ``services/erp/tryton/rpc.py``, as the integration
  user), no mesh: the calls the adapter makes for one order, one sale after the
  other — look the sale up by its reference, create it with its line, ``quote``,
  ``confirm`` (Tryton's credit-limit rule), read it back; look the invoice up by the
  shipment id, create it with the shipped quantity at the line's price, ``post`` it,
  read it back. Sales/s and ms per sale, the median of a few runs, and the ms of
  each step. Left out: the ledger's stock booking of the shipment's movement (the
  mesh books movements in batches, a ``stock.inventory`` per batch), so the mesh
  does somewhat more Tryton work per order than this loop.
- ``throughput``: scenario 2's closed loop on a second mesh whose ERP is the Tryton
  adapter (trytond under gunicorn, on a copy of the prepared template), with a
  backlog bound that fits Tryton's pace.
- ``order_burst``: a burst of orders at a fixed rate (on Tryton, and on the built-in
  ERP of the first mesh for comparison): order intake latency, and the ERP backlog
  (pending + unacknowledged messages of ERP's durable consumers, from JetStream's
  consumer info) until it is empty, with how fast it drained.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc

from services.erp.tryton.rpc import Tryton
from services.erp.tryton.server import TrytonServer
from services.mesh import contracts
from services.mesh.launcher import Mesh

from . import meshrun
from .peerrun import ProcWatch, with_cpu
from .stats import latency_ms, open_loop, ratio, wait_for

USER, PASSWORD, CREDIT_USER = "crossdock", "crossdock-erp", "crossdock-credit"
SALE_STEPS = ("lookup", "create", "quote", "confirm", "read", "invoice_lookup", "invoice_create",
              "post", "invoice_read")


@dataclass(frozen=True)
class TrytonSize:
    runs: int  # runs of the direct loop (the median is reported)
    sales: int  # sales per run
    throughput_s: float
    warmup_s: float
    backlog: int  # the closed loop's bound on orders between submission and INVOICED
    burst_orders: int
    burst_rate: float  # orders/s offered during the burst (above what Tryton sustains)


SIZES = {
    "full": TrytonSize(runs=5, sales=12, throughput_s=90, warmup_s=15, backlog=8, burst_orders=40,
                       burst_rate=5),
    "small": TrytonSize(runs=3, sales=6, throughput_s=40, warmup_s=10, backlog=6, burst_orders=16,
                        burst_rate=4),
    "tiny": TrytonSize(runs=2, sales=2, throughput_s=6, warmup_s=1, backlog=3, burst_orders=4,
                       burst_rate=4),
}


def template() -> Path:
    """The prepared Tryton database the tests use (made once, then copied)."""
    from tests.tryton_support import tryton_template

    return tryton_template()


def tryton_pids(server: TrytonServer) -> dict[str, int]:
    """gunicorn's master and its workers (the workers do the ORM work)."""
    pid = server.proc.pid
    out = {"trytond": pid}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for k, child in enumerate(children):
        out[f"trytond-worker-{k + 1}"] = int(child)
    return out


# ---- Tryton alone ----

class _Books:
    """What one sale needs from a fresh Tryton: a party with room on credit, a product,
    and Tryton's fixed ids (the ones the adapter reads once)."""

    def __init__(self, rpc: Tryton) -> None:
        self.rpc = rpc

    async def prepare(self, credit: Tryton) -> None:
        rpc = self.rpc
        sfx = uuid.uuid4().hex[:6].upper()
        (unit,) = await rpc.search_read("product.uom", [("symbol", "=", "u")], ["id"], limit=1)
        (category,) = await rpc.search_read("product.category", [("accounting", "=", True)],
                                            ["account_revenue"], limit=1)
        (wh,) = await rpc.search_read("stock.location", [("type", "=", "warehouse")], ["id"], limit=1,
                                      order=[("id", "ASC")])
        (receivable,) = await rpc.search_read("account.account", [("type.receivable", "=", True)], ["id"],
                                              limit=1)
        (journal,) = await rpc.search_read("account.journal", [("type", "=", "revenue")], ["id"], limit=1)
        company = rpc.context["company"]
        (comp,) = await rpc.model("company.company", "read", [company], ["currency"])
        (party,) = await rpc.model("party.party", "create", [{
            "code": f"CUST-ALONE-{sfx}", "name": f"bench {sfx}",
            "addresses": [["create", [{"street": "1 Bench Street", "city": "Springfield"}]]]}])
        await credit.model("party.party", "write", [party], {"credit_limit_amount": Decimal(10**13)})
        (addr,) = await rpc.model("party.party", "read", [party], ["addresses"])
        await rpc.model("product.template", "create", [{
            "name": f"SKU-ALONE-{sfx}", "code": f"SKU-ALONE-{sfx}", "type": "goods",
            "default_uom": unit["id"], "sale_uom": unit["id"], "purchase_uom": unit["id"],
            "salable": True, "purchasable": True, "account_category": category["id"],
            "list_price": Decimal("12.50"), "products": [["create", [{}]]]}])
        (product,) = await rpc.model("product.product", "search", [("code", "=", f"SKU-ALONE-{sfx}")],
                                     0, 1, None)
        self.sfx, self.party, self.address = sfx, party, addr["addresses"][0]
        self.product, self.unit, self.warehouse = product, unit["id"], wh["id"]
        self.receivable, self.revenue, self.journal = (receivable["id"], category["account_revenue"],
                                                       journal["id"])
        self.company, self.currency = company, comp["currency"]

    async def sale(self, i: int, steps: dict[str, list[float]]) -> None:
        """One order's Tryton calls, as the adapter makes them (sales.py)."""
        rpc = self.rpc
        ref, shipment = f"ORD-ALONE-{self.sfx}-{i}", f"SHP-ALONE-{self.sfx}-{i}"
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            steps[name].append(now - clock)
            clock = now

        await rpc.model("sale.sale", "search", [("reference", "=", ref)], 0, 1, None)
        lap("lookup")
        (sale_id,) = await rpc.model("sale.sale", "create", [{
            "party": self.party, "invoice_address": self.address, "shipment_address": self.address,
            "reference": ref, "warehouse": self.warehouse, "invoice_method": "manual",
            "shipment_method": "manual",
            "lines": [["create", [{"type": "line", "sequence": 1, "product": self.product, "quantity": 1,
                                   "unit_price": Decimal("12.50"), "unit": self.unit}]]]}])
        lap("create")
        await rpc.model("sale.sale", "quote", [sale_id])
        lap("quote")
        await rpc.model("sale.sale", "confirm", [sale_id])
        lap("confirm")
        (sale,) = await rpc.model("sale.sale", "read", [sale_id], ["state", "lines", "invoices"])
        (line,) = await rpc.model("sale.line", "read", sale["lines"], ["product", "quantity", "unit_price"])
        lap("read")
        await rpc.search_read("account.invoice", [("reference", "=", shipment), ("type", "=", "out")],
                              ["state"], limit=1)
        lap("invoice_lookup")
        (invoice_id,) = await rpc.model("account.invoice", "create", [{
            "type": "out", "party": self.party, "invoice_address": self.address,
            "account": self.receivable, "journal": self.journal, "currency": self.currency,
            "company": self.company, "reference": shipment, "description": f"INV-{ref}-1",
            "lines": [["create", [{"type": "line", "product": line["product"], "quantity": 1,
                                   "unit_price": line["unit_price"], "unit": self.unit,
                                   "account": self.revenue, "origin": f"sale.line,{line['id']}"}]]]}])
        lap("invoice_create")
        await rpc.model("account.invoice", "post", [invoice_id])
        lap("post")
        (inv,) = await rpc.model("account.invoice", "read", [invoice_id], ["state", "total_amount"])
        lap("invoice_read")
        if sale["state"] not in ("confirmed", "processing") or inv["state"] != "posted":
            raise RuntimeError(f"sale {ref}: {sale['state']}, invoice {inv['state']}")


async def _alone(server: TrytonServer, runs: int, sales: int) -> dict:
    rpc = Tryton(server.url, server.database, USER, PASSWORD, max_concurrency=1)
    credit = Tryton(server.url, server.database, CREDIT_USER, PASSWORD, max_concurrency=1)
    try:
        await rpc.call("model.res.user.get_preferences", True)
        books = _Books(rpc)
        await books.prepare(credit)
        scratch = {s: [] for s in SALE_STEPS}
        await books.sale(0, scratch)  # warm-up: Tryton's caches, the first posting of the period
        steps: dict[str, list[float]] = {s: [] for s in SALE_STEPS}
        per_run, per_sale, cpu = [], [], []
        calls0 = rpc.calls
        i = 1
        for _ in range(runs):
            async with ProcWatch(tryton_pids(server)) as watch:
                t0 = time.perf_counter()
                for _ in range(sales):
                    t = time.perf_counter()
                    await books.sale(i, steps)
                    per_sale.append(time.perf_counter() - t)
                    i += 1
                elapsed = time.perf_counter() - t0
            per_run.append(sales / elapsed)
            cpu.append(watch.result(sales)["cpu_ms_per_order"])
        median_rate = statistics.median(per_run)
        return {
            "runs": runs, "sales_per_run": sales, "lines_per_sale": 1,
            "workers": server.workers, "database": "postgresql" if server.database_url else "sqlite",
            "sales_per_s_runs": [round(x, 3) for x in per_run],
            "sales_per_s": round(median_rate, 3),
            "ms_per_sale": round(1e3 / median_rate, 1),
            "sale": latency_ms(per_sale),
            "rpc_calls_per_sale": round((rpc.calls - calls0) / (runs * sales), 1),
            "trytond_cpu_ms_per_sale": statistics.median(c for c in cpu if c is not None) if any(cpu)
            else None,
            "step_ms_median": {s: round(statistics.median(v) * 1e3, 1) for s, v in steps.items() if v},
        }
    finally:
        await rpc.close()
        await credit.close()


def alone(work: Path, runs: int, sales: int) -> dict:
    """A trytond of its own (a copy of the prepared template, nothing else running)."""
    server = TrytonServer(work / "tryton-alone", template=template())
    server.prepare()
    server.start()
    try:
        return asyncio.run(_alone(server, runs, sales))
    finally:
        server.stop()


# ---- ERP backlog (JetStream consumer info) ----

ERP_CONSUMERS = {d: s.stream for d, s in contracts.SUBSCRIPTIONS.items() if s.service == "erp"}


class Backlog:
    """Pending + unacknowledged messages of ERP's durable consumers."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.nc = None

    async def __aenter__(self) -> Backlog:
        import nats

        self.nc = await nats.connect(self.mesh.nats.url)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    async def read(self) -> dict[str, int]:
        out = {}
        for durable, stream in ERP_CONSUMERS.items():
            info = await self.js.consumer_info(stream, durable)
            out[durable] = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return out


async def order_burst(mesh: Mesh, stubs: meshrun.Stubs, metrics: meshrun.Metrics, *, orders: int,
                      rate: float, timeout: float = 900) -> dict:
    """``orders`` orders submitted at ``rate`` orders/s (an open loop); intake latency,
    the ERP backlog sampled every 0.25 s, and the drain from the last submission until
    ERP's consumers have nothing left and every order is invoiced."""
    w = await meshrun.world(stubs)
    base = await metrics.invoiced()
    intake: list[float] = []
    errors = 0
    samples: list[tuple[float, int, float]] = []  # (t since start, backlog, invoiced)
    peak: dict[str, int] = {}
    done = asyncio.Event()
    start = time.perf_counter()

    async with Backlog(mesh) as backlog:
        async def sample():
            while not done.is_set():
                by = await backlog.read()
                for k, v in by.items():
                    peak[k] = max(peak.get(k, 0), v)
                samples.append((time.perf_counter() - start, sum(by.values()),
                                await metrics.invoiced() - base))
                await asyncio.sleep(0.25)

        async def submit(i: int):
            nonlocal errors
            t = time.perf_counter()
            try:
                await stubs.ots.SubmitOrder(meshrun.order(w, i), timeout=30)
                intake.append(time.perf_counter() - t)
            except grpc.aio.AioRpcError:
                errors += 1

        sampler = asyncio.create_task(sample())
        n = await open_loop(rate, orders / rate, submit)
        submitted_at = time.perf_counter() - start
        at_submit = samples[-1] if samples else (submitted_at, 0, 0.0)

        async def empty():
            return bool(samples) and samples[-1][0] > submitted_at and samples[-1][1] == 0 \
                and samples[-1][2] >= n - errors

        try:
            await wait_for(empty, timeout, "the ERP backlog to drain", interval=0.25)
        finally:
            done.set()
            await sampler
    emptied_at = samples[-1][0]
    drain_s = emptied_at - submitted_at
    return {
        "orders": n, "errors": errors, "offered_orders_per_s": rate,
        "submit_s": round(submitted_at, 2), "intake": latency_ms(intake),
        "backlog_peak": max(s[1] for s in samples), "backlog_peak_by_consumer": peak,
        "backlog_at_last_submission": at_submit[1],
        "invoiced_at_last_submission": int(at_submit[2]),
        "seconds_to_empty": round(drain_s, 2),
        "drain_orders_per_s": round((n - errors - at_submit[2]) / drain_s, 3) if drain_s > 0 else None,
        "burst_orders_per_s": round((n - errors) / emptied_at, 3) if emptied_at > 0 else None,
    }


# ---- the mesh on Tryton ----

ENV = {"CROSSDOCK_ERP_BACKEND": "tryton"}


def _requests(access_log: Path) -> int:
    """Requests trytond has served (lines of gunicorn's access log)."""
    try:
        with access_log.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


async def _idle(mesh: Mesh, stubs: meshrun.Stubs, access_log: Path, seconds: float = 3) -> dict:
    """With no orders: trytond's requests/s (the adapter's change feed and planning
    loops) and the ERP credit check order intake makes (CheckCredit), one at a time."""
    from crossdock.erp.v1 import erp_pb2
    from tests.e2e.conftest import usd

    w = await meshrun.world(stubs)
    await meshrun.quiesce(mesh)
    n0, t0 = _requests(access_log), time.perf_counter()
    await asyncio.sleep(seconds)
    idle_rate = (_requests(access_log) - n0) / (time.perf_counter() - t0)
    lat = []
    for _ in range(10):
        t = time.perf_counter()
        await stubs.erp.CheckCredit(erp_pb2.CheckCreditRequest(customer_id=w.customer_id, amount=usd(10)))
        lat.append(time.perf_counter() - t)
    return {"trytond_requests_per_s": round(idle_rate, 2), "credit_check": latency_ms(lat)}


async def _on_tryton(mesh: Mesh, size: TrytonSize, log, access_log: Path) -> dict:
    stubs = meshrun.Stubs(mesh)
    metrics = meshrun.Metrics(mesh)
    out: dict = {}
    try:
        await meshrun.quiesce(mesh)
        out["idle"] = await _idle(mesh, stubs, access_log)
        log("8b. throughput on Tryton…")
        pids = {"nats-server": mesh.nats.proc.pid,
                **{name: p.proc.pid for name, p in mesh.services.items() if p.proc},
                **tryton_pids(mesh.tryton)}
        from .scenarios import throughput

        n0, t0 = _requests(access_log), time.perf_counter()
        out["throughput"] = tp = await with_cpu(pids, throughput(
            mesh, stubs, metrics, duration=size.throughput_s, warmup=size.warmup_s, backlog=size.backlog))
        # Every request trytond served from the first submission until the last invoice,
        # per order invoiced; and the same without the idle rate (the feed's polling).
        served, span = _requests(access_log) - n0, time.perf_counter() - t0
        tp["trytond_requests_per_order"] = ratio(served, tp["invoiced"], 1)
        tp["trytond_requests_per_order_less_idle"] = ratio(
            max(served - out["idle"]["trytond_requests_per_s"] * span, 0), tp["invoiced"], 1)
        out["drain_s_before_burst"] = await meshrun.quiesce(mesh)
        log("8c. burst of orders on Tryton, ERP backlog and drain…")
        out["burst"] = await order_burst(mesh, stubs, metrics, orders=size.burst_orders,
                                         rate=size.burst_rate)
    finally:
        await metrics.close()
        await stubs.close()
    return out


def measure(work: Path, size_name: str, log, builtin_burst: dict | None) -> dict:
    """Tryton alone, then a mesh on Tryton; the ratios to the built-in figures."""
    size = SIZES[size_name]
    log("8a. Tryton alone (direct JSON-RPC loop)…")
    out = {"alone": alone(work, size.runs, size.sales)}
    log(f"8a. Tryton alone: {out['alone']['sales_per_s']} sales/s")
    # gunicorn's access log (its GUNICORN_CMD_ARGS), to count trytond's requests per order.
    access_log = work / "trytond-access.log"
    saved = os.environ.get("GUNICORN_CMD_ARGS")
    os.environ["GUNICORN_CMD_ARGS"] = f"--access-logfile {access_log}"
    try:
        mesh, _ = meshrun.start_mesh(work, "mesh-tryton", {
            **ENV, "CROSSDOCK_ERP_TRYTON_TEMPLATE": str(template())})
    finally:
        if saved is None:
            os.environ.pop("GUNICORN_CMD_ARGS", None)
        else:
            os.environ["GUNICORN_CMD_ARGS"] = saved
    try:
        out.update(asyncio.run(_on_tryton(mesh, size, log, access_log)))
    finally:
        mesh.stop()
    out["builtin_burst"] = builtin_burst
    mesh_rate = (out.get("throughput") or {}).get("orders_per_s")
    out["mesh_over_alone"] = ratio(mesh_rate, out["alone"]["sales_per_s"], 3)
    # The same ratio from trytond's CPU per order (alone / in the mesh): what the mesh could
    # reach while trytond is the bottleneck, and far less sensitive to a loaded machine
    # than the two rates, which are measured minutes apart.
    by_process = ((out.get("throughput") or {}).get("cpu") or {}).get("by_process") or {}
    in_mesh = sum(v or 0 for k, v in by_process.items() if k.startswith("trytond"))
    out["trytond_cpu_ms_per_order_in_mesh"] = round(in_mesh, 1) if in_mesh else None
    out["mesh_over_alone_by_trytond_cpu"] = ratio(out["alone"]["trytond_cpu_ms_per_sale"], in_mesh or None, 3)
    p99 = (out.get("burst") or {}).get("intake", {}).get("p99_ms")
    out["intake_p99_over_builtin"] = ratio(p99, ((builtin_burst or {}).get("intake") or {}).get("p99_ms"))
    return out
