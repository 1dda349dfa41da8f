"""Scenarios 2, 3, 5 and 6 against one running mesh."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from gateway.governance import create_client
from gateway.store import metadata as gateway_metadata
from services.mesh.launcher import Mesh
from services.mesh.store import Store
from tests.e2e.conftest import Stubs, usd

from . import meshrun
from .building_blocks import EchoServer, echo_stub
from .stats import latency_ms, open_loop, pct, wait_for


async def wait_invoiced(metrics: meshrun.Metrics, target: float, timeout: float) -> None:
    async def done():
        return await metrics.invoiced() >= target
    await wait_for(done, timeout, f"{target:.0f} orders invoiced", interval=0.5)


# ---- 2. throughput (and the per-order counts of scenario 1, and RSS of 6) ----

async def throughput(mesh: Mesh, stubs: Stubs, metrics: meshrun.Metrics, *, duration: float,
                     warmup: float, backlog: int = 150, submitters: int = 8) -> dict:
    """Closed loop over the whole workflow: keep at most ``backlog`` orders between
    submission and INVOICED, for ``duration`` s. Sustained rate = orders invoiced
    (ERP's invoice reached order-to-ship) per second after ``warmup``."""
    w = await meshrun.world(stubs)
    before = await metrics.scrape()
    base = await metrics.invoiced()
    invoiced = base
    submitted = 0
    stop_at = time.monotonic() + duration
    window_start = meshrun.now().timestamp() + warmup
    accept: list[float] = []

    async def watch():
        nonlocal invoiced
        while time.monotonic() < stop_at:
            invoiced = await metrics.invoiced()
            await asyncio.sleep(0.25)  # the metrics poll interval (a scrape costs the service CPU)

    async def submitter(k: int):
        nonlocal submitted
        i = k
        while time.monotonic() < stop_at:
            if submitted - (invoiced - base) >= backlog:
                await asyncio.sleep(0.02)  # back-pressure: wait for the workflow to catch up
                continue
            submitted += 1
            t = time.perf_counter()
            await stubs.ots.SubmitOrder(meshrun.order(w, i), timeout=30)
            accept.append(time.perf_counter() - t)
            i += submitters

    with meshrun.RssSampler(mesh) as rss:
        await asyncio.gather(watch(), *(submitter(k) for k in range(submitters)))
        window_end = meshrun.now().timestamp()
        await wait_invoiced(metrics, base + submitted, timeout=120 + submitted / 5)
    after = await metrics.scrape()
    orders = await meshrun.orders_of(stubs, w.customer_id)
    done = [o for o in orders if o.status == pb.ORDER_STATUS_INVOICED]
    in_window = [o for o in done if window_start <= meshrun.ts(o.update_time).timestamp() <= window_end]
    span = window_end - window_start
    return {
        "submitted": submitted, "invoiced": len(done), "duration_s": duration, "warmup_s": warmup,
        "backlog_limit": backlog,
        "orders_per_s": round(len(in_window) / span, 2) if span > 0 else None,
        "submit_latency": latency_ms(accept),
        "per_order": meshrun.per_order(before, after, len(done) or 1),
        "rss": rss.result(),
    }


async def completion_latency(stubs: Stubs, metrics: meshrun.Metrics, *, rate: float, duration: float) -> dict:
    """Open loop at ``rate`` orders/s; completion = created -> INVOICED (order-to-ship's clock)."""
    w = await meshrun.world(stubs)
    base = await metrics.invoiced()
    errors = 0

    async def submit(i: int):
        nonlocal errors
        try:
            await stubs.ots.SubmitOrder(meshrun.order(w, i), timeout=30)
        except grpc.aio.AioRpcError:
            errors += 1

    n = await open_loop(rate, duration, submit)
    await wait_invoiced(metrics, base + n - errors, timeout=120 + n / 5)
    done = [o for o in await meshrun.orders_of(stubs, w.customer_id, pb.ORDER_STATUS_INVOICED)]
    lat = [(meshrun.ts(o.update_time) - meshrun.ts(o.create_time)).total_seconds() for o in done]
    return {"offered_orders_per_s": round(rate, 2), "duration_s": duration, "submitted": n,
            "errors": errors, "completion": latency_ms(lat)}


# ---- 3. burst ----

def _wms_movement_times(mesh: Mesh, warehouse_id: str) -> dict[str, datetime]:
    """When WMS recorded each movement of the warehouse (its store, read-only)."""
    db = mesh.data_dir / "wms.db"
    out = {}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        for sku, at in conn.execute("SELECT sku, at FROM stock_movements WHERE warehouse_id = ?",
                                    (warehouse_id,)):
            t = datetime.fromisoformat(str(at))
            out[sku] = t if t.tzinfo else t.replace(tzinfo=UTC)
    return out


def _ledger_count(mesh: Mesh, warehouse_id: str) -> int:
    with closing(sqlite3.connect(f"file:{mesh.data_dir / 'erp.db'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM ledger_positions "
                            "WHERE warehouse_id = ? AND last_sequence >= 1",
                            (warehouse_id,)).fetchone()[0]


async def _ledger(stubs: Stubs, warehouse_id: str) -> list[erp_pb2.LedgerPosition]:
    out, token = [], ""
    while True:
        r = await stubs.erp.ListLedgerPositions(erp_pb2.ListLedgerPositionsRequest(
            warehouse_id=warehouse_id, page_size=500, page_token=token))
        out += r.positions
        token = r.next_page_token
        if not token:
            return out


async def burst(mesh: Mesh, stubs: Stubs, *, events: int, receipts: int, intake_rate: float,
                before_s: float, timeout: float = 600) -> dict:
    """``receipts`` ReceiveStock calls (two at a time) of ``events / receipts`` new SKUs each
    (one inventory movement event per line) into a fresh warehouse, while orders are
    submitted at ``intake_rate``; how long until the ERP ledger holds them all."""
    w = await meshrun.world(stubs)
    sfx = uuid.uuid4().hex[:6].upper()
    wh = f"WH-BURST-{sfx}"
    await stubs.wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(
        warehouse_id=wh, name="burst DC", address=Address(country_code="US"))))
    per = events // receipts
    batches = [[SkuQuantity(sku=f"SKU-B{sfx}-{r}-{i}", quantity=10) for i in range(per)]
               for r in range(receipts)]
    total = per * receipts
    intake: list[tuple[float, float]] = []  # (started, latency)
    phase = {"burst_at": None, "applied_at": None}
    stop = asyncio.Event()

    async def submit(i: int):
        t = time.perf_counter()
        await stubs.ots.SubmitOrder(meshrun.order(w, i), timeout=30)
        intake.append((t, time.perf_counter() - t))

    async def intake_loop():
        i = 0
        start = time.perf_counter()
        tasks = set()
        while not stop.is_set():
            due = start + i / intake_rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            task = asyncio.create_task(submit(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks, return_exceptions=True)

    intake_task = asyncio.create_task(intake_loop())
    await asyncio.sleep(before_s)  # the "before" window of order intake
    t0_wall = meshrun.now()
    phase["burst_at"] = time.perf_counter()
    # Two receipts in flight at a time: WMS commits them one after the other on its
    # single write connection anyway, and 20 queued at once would wait there
    # longer than its pool allows (60 s) on a loaded machine.
    gate = asyncio.Semaphore(2)

    async def receive(r: int, lines: list[SkuQuantity]):
        async with gate:
            await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
                receipt_id=f"R-BURST-{sfx}-{r}", warehouse_id=wh, lines=lines), timeout=300)

    await asyncio.gather(*(receive(r, lines) for r, lines in enumerate(batches)))
    committed_s = time.perf_counter() - phase["burst_at"]

    async def all_applied():
        # Progress from ERP's store itself (read-only, outside ERP's process): paging
        # 10,000 positions over gRPC twice a second would load the very service measured.
        return _ledger_count(mesh, wh) >= total

    await wait_for(all_applied, timeout, "the ERP ledger to apply the burst", interval=0.05)
    phase["applied_at"] = time.perf_counter()
    positions = [p for p in await _ledger(stubs, wh) if p.last_sequence >= 1]  # the figures: over gRPC
    stop.set()
    await intake_task
    last_applied = max(meshrun.ts(p.update_time) for p in positions)
    moved = _wms_movement_times(mesh, wh)
    lags = [(meshrun.ts(p.update_time) - moved[p.sku]).total_seconds() for p in positions if p.sku in moved]
    before = [lat for t, lat in intake if t < phase["burst_at"]]
    # "During": submissions started between the burst and the moment the ledger had it all.
    last = phase["burst_at"] + (last_applied - t0_wall).total_seconds()
    during = [lat for t, lat in intake if phase["burst_at"] <= t <= max(last, phase["burst_at"] + 1)]
    b99, d99 = pct(before, 99), pct(during, 99)
    return {
        "events": total, "receipts": receipts, "wms_commit_s": round(committed_s, 3),
        "all_applied_s": round((last_applied - t0_wall).total_seconds(), 3),
        "freshness_lag": latency_ms(lags),
        "intake_rate_per_s": intake_rate,
        "intake_before": latency_ms(before), "intake_during": latency_ms(during),
        "intake_p99_during_over_before": round(d99 / b99, 2) if b99 and d99 else None,
    }


# ---- 5. lookups ----

async def lookups(mesh: Mesh, stubs: Stubs, work: Path, *, n: int) -> dict:
    """p50/p99 of the lookups over gRPC and through the gateway, calls interleaved
    with a raw gRPC echo (another process, no interceptors)."""
    w = await meshrun.world(stubs)
    store = Store("gateway", f"sqlite:///{mesh.data_dir / 'gateway.db'}", gateway_metadata)
    try:
        _, token = await create_client(store, name=f"bench-{w.suffix}", channel="bench",
                                       customer_id=w.customer_id, scopes=["lookups"], rate_limit=100_000)
    finally:
        await store.close()
    avail = wms_pb2.GetAvailabilityRequest(skus=[w.skus[0]], warehouse_id=w.warehouse_id)
    credit = erp_pb2.CheckCreditRequest(customer_id=w.customer_id, amount=usd(1_000))
    ship = tms_pb2.GetShippingOptionsRequest(destination=Address(country_code="US", postal_code="1"),
                                             weight_grams=700, currency_code="USD")
    paths = {"availability": f"/v1/availability?sku={w.skus[0]}&warehouse={w.warehouse_id}",
             "shipping_options": "/v1/shipping-options?country_code=US&weight_grams=700&currency_code=USD"}
    samples: dict[str, list[float]] = {k: [] for k in (
        "echo", "grpc_availability", "grpc_credit_check", "grpc_shipping_options",
        "gateway_availability", "gateway_shipping_options")}
    with EchoServer(work) as echo_server:
        async with grpc.aio.insecure_channel(echo_server.addr) as ch, httpx.AsyncClient(
                base_url=mesh.http_url(), headers={"Authorization": f"Bearer {token}"}) as http:
            echo = echo_stub(ch)
            calls = {
                "echo": lambda: echo(b"x" * 64),
                "grpc_availability": lambda: stubs.wms.GetAvailability(avail),
                "grpc_credit_check": lambda: stubs.erp.CheckCredit(credit),
                "grpc_shipping_options": lambda: stubs.tms.GetShippingOptions(ship),
            }

            async def get(path):
                r = await http.get(path)
                r.raise_for_status()

            calls["gateway_availability"] = lambda: get(paths["availability"])
            calls["gateway_shipping_options"] = lambda: get(paths["shipping_options"])
            for _ in range(min(50, n)):  # warm up every path
                for call in calls.values():
                    await call()
            for _ in range(n):
                for name, call in calls.items():
                    t = time.perf_counter()
                    await call()
                    samples[name].append(time.perf_counter() - t)
    out = {name: latency_ms(xs) for name, xs in samples.items()}
    out["gateway_credit_check"] = "not exposed by the gateway"
    e99 = out["echo"]["p99_ms"]
    out["grpc_p99_over_echo"] = {k.removeprefix("grpc_"): round(out[k]["p99_ms"] / e99, 2)
                                 for k in samples if k.startswith("grpc_")}
    return out
