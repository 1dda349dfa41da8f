"""``python -m bench`` (``make bench``): every scenario in one run, results to
``<out>/results.json``, ``<out>/summary.md`` and ``<out>/chart.png``.

``--size tiny`` is the seconds-long variant the tests run (it proves the harness
produces every figure, it measures nothing worth quoting).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import baseline, building_blocks, meshrun, peerrun, report, scenarios, trytonrun

SCENARIOS = ("blocks", "throughput", "burst", "baseline", "lookups", "unbatched", "peers", "tryton")
# The peers' configurations (scenario 7, bench/peerrun.py), by size; dbos-pg needs
# CROSSDOCK_BENCH_PG_URL or CROSSDOCK_TEST_PG_URL (skipped without either).
PEERS = {"full": ("temporal", "temporal-wal", "dbos", "dbos-pg"), "small": ("temporal", "dbos"),
         "tiny": ("temporal", "dbos")}
# Scenario 7's SIGKILL run (open loop at half the peer's rate), seconds, by size.
PEER_KILL_S = {"full": 40, "small": 10, "tiny": 4}
# At the tiny size (tests/bench) the peers run shorter still: they prove the harness, nothing more.
PEER_SIZE = {"tiny": {"throughput_s": 3, "warmup_s": 0.5, "backlog": 8}}


@dataclass(frozen=True)
class Size:
    grpc_calls: int
    messages: int
    transactions: int
    throughput_s: float
    warmup_s: float
    completion_s: float
    burst_events: int
    burst_receipts: int
    burst_intake_rate: float
    burst_before_s: float
    normal_s: float
    slowed_s: float
    after_s: float
    lookups: int
    backlog: int
    unbatched_s: float


SIZES = {
    "full": Size(grpc_calls=2000, messages=20_000, transactions=2000, throughput_s=75, warmup_s=15,
                 completion_s=30, burst_events=10_000, burst_receipts=20, burst_intake_rate=10,
                 burst_before_s=10, normal_s=20, slowed_s=30, after_s=15, lookups=1000, backlog=150,
                 unbatched_s=50),
    # A few minutes in all: figures to look at, not to quote.
    "small": Size(grpc_calls=500, messages=5000, transactions=500, throughput_s=20, warmup_s=5,
                  completion_s=10, burst_events=2000, burst_receipts=8, burst_intake_rate=5, burst_before_s=3,
                  normal_s=6, slowed_s=8, after_s=4, lookups=200, backlog=60, unbatched_s=15),
    "tiny": Size(grpc_calls=100, messages=500, transactions=100, throughput_s=5, warmup_s=1,
                 completion_s=2, burst_events=200, burst_receipts=4, burst_intake_rate=5, burst_before_s=1,
                 normal_s=2, slowed_s=2, after_s=1, lookups=20, backlog=20, unbatched_s=4),
}


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


async def _mesh_scenarios(mesh, fault_file, work: Path, size: Size, only: set[str], results: dict,
                          kill_s: float = 0, size_name: str = "full") -> None:
    stubs = meshrun.Stubs(mesh)
    metrics = meshrun.Metrics(mesh)
    errors = results["errors"]

    async def step(name: str, key: str, coro_fn):
        try:
            drained = await meshrun.quiesce(mesh)
            results.setdefault("drain_s_before", {})[key] = drained
        except TimeoutError as exc:
            errors[f"{key}_drain"] = str(exc)
        log(f"{name}…")
        t = time.monotonic()
        try:
            results[key] = await coro_fn()
            log(f"{name}: done in {time.monotonic() - t:.0f} s")
        except Exception as exc:  # noqa: BLE001 - the other scenarios still run; reported
            errors[key] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()

    try:
        if "lookups" in only:
            await step("5. lookups", "lookups", lambda: scenarios.lookups(mesh, stubs, work, n=size.lookups))
        if "throughput" in only:
            await step("2+6. throughput (and RSS)", "throughput", lambda: peerrun.with_cpu(
                _mesh_pids(mesh), scenarios.throughput(mesh, stubs, metrics, duration=size.throughput_s,
                                                       warmup=size.warmup_s, backlog=size.backlog)))
            rate = (results.get("throughput") or {}).get("orders_per_s") or 4.0
            await step("2. completion latency at half rate", "completion",
                       lambda: scenarios.completion_latency(
                           stubs, metrics, rate=max(rate / 2, 1.0), duration=size.completion_s))
        if "burst" in only:
            # Order intake well inside what the mesh sustains, so that what changes is the burst.
            rate = (results.get("throughput") or {}).get("orders_per_s") or 6.0
            intake = round(max(min(rate * 0.3, size.burst_intake_rate), 1.0), 1)
            await step("3. burst", "burst", lambda: scenarios.burst(
                mesh, stubs, events=size.burst_events, receipts=size.burst_receipts,
                intake_rate=intake, before_s=size.burst_before_s))
        if "baseline" in only:
            rate = (results.get("throughput") or {}).get("orders_per_s") or 6.0
            # Well inside what the mesh sustains: both systems run at once on 2 cores.
            offered = round(max(min(rate * 0.3, 20.0), 2.0), 1)
            await step("4. Crossdock vs direct integration", "side_by_side", lambda: baseline.side_by_side(
                stubs, metrics, fault_file, rate=offered, normal_s=size.normal_s, slowed_s=size.slowed_s,
                after_s=size.after_s))
        if "tryton" in only:
            # Scenario 8's burst of orders on the built-in ERP, beside the same burst on Tryton.
            t = trytonrun.SIZES[size_name]
            await step("8. burst of orders on the built-in ERP", "tryton_builtin_burst",
                       lambda: trytonrun.order_burst(mesh, stubs, metrics, orders=t.burst_orders,
                                                     rate=t.burst_rate))
        if "peers" in only:
            # Scenario 7's SIGKILL run against Crossdock's own orchestrator; last: it restarts ordertoship.
            rate = (results.get("throughput") or {}).get("orders_per_s") or 4.0
            await step("7. Crossdock: SIGKILL of order-to-ship mid-run", "crossdock_kill",
                       lambda: peerrun.crossdock_kill(mesh, stubs, rate=max(rate / 2, 1.0), duration=kill_s))
    finally:
        await metrics.close()
        await stubs.close()


def _mesh_pids(mesh) -> dict[str, int]:
    """Every process of the mesh (nats-server and each service), for the CPU per order."""
    pids = {name: p.proc.pid for name, p in mesh.services.items() if p.proc}
    return {"nats-server": mesh.nats.proc.pid, **pids}


async def _unbatched(mesh, size: Size, results: dict) -> None:
    stubs = meshrun.Stubs(mesh)
    metrics = meshrun.Metrics(mesh)
    try:
        results["throughput_unbatched"] = await scenarios.throughput(
            mesh, stubs, metrics, duration=size.unbatched_s, warmup=size.warmup_s, backlog=size.backlog)
    except Exception as exc:  # noqa: BLE001 - reported with the results
        results["errors"]["throughput_unbatched"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        await metrics.close()
        await stubs.close()


def run(size_name: str, out: Path, only: set[str], keep: bool = False,
        peers: list[str] | None = None) -> dict:
    size = SIZES[size_name]
    started = time.monotonic()
    results: dict = {"meta": {"size": size_name, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(),
                              "command": " ".join(["python -m bench", *sys.argv[1:]])},
                     "errors": {}}
    work = Path(tempfile.mkdtemp(prefix="crossdock-bench-"))
    try:
        if "blocks" in only:
            log("1. building blocks…")
            (work / "blocks").mkdir()
            try:
                results["building_blocks"] = asyncio.run(building_blocks.measure(
                    work / "blocks", grpc_calls=size.grpc_calls, messages=size.messages,
                    transactions=size.transactions))
            except Exception as exc:  # noqa: BLE001
                results["errors"]["building_blocks"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        if only - {"blocks", "unbatched", "peers"}:
            log("starting the mesh…")
            mesh, fault_file = meshrun.start_mesh(work)
            try:
                asyncio.run(_mesh_scenarios(mesh, fault_file, work, size, only, results,
                                            kill_s=PEER_KILL_S[size_name], size_name=size_name))
            finally:
                mesh.stop()
        if "unbatched" in only:
            # The same throughput run on a second mesh whose consumers commit one
            # transaction per message (the runtime before batching), for comparison.
            log("2'. throughput, one transaction per message (CROSSDOCK_CONSUMER_TX_BATCH=1)…")
            mesh, _ = meshrun.start_mesh(work, "mesh-unbatched", {"CROSSDOCK_CONSUMER_TX_BATCH": "1"})
            try:
                asyncio.run(_unbatched(mesh, size, results))
            finally:
                mesh.stop()
        if "peers" in only:
            # Scenario 7: Temporal and DBOS driving the same system services, after Crossdock's runs.
            names = peers or [n for n in PEERS[size_name] if n != "dbos-pg" or peerrun.pg_url()]
            log(f"7. the peers ({', '.join(names)})…")
            try:
                peer_size = dataclasses.replace(size, **PEER_SIZE.get(size_name, {}))
                peers = peerrun.measure(work, peer_size, names, log, kill_s=PEER_KILL_S[size_name])
                results["peers"] = peers["peers"]
                results["errors"].update({f"peers_{k}": v for k, v in peers["errors"].items()})
            except Exception as exc:  # noqa: BLE001 - reported with the results
                results["errors"]["peers"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        if "tryton" in only:
            # Scenario 8: Tryton alone (direct JSON-RPC), then a mesh whose ERP is Tryton.
            try:
                results["tryton"] = trytonrun.measure(work, size_name, log,
                                                      results.pop("tryton_builtin_burst", None))
            except Exception as exc:  # noqa: BLE001 - reported with the results
                results["errors"]["tryton"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        blocks, tp = results.get("building_blocks"), results.get("throughput")
        if blocks and tp:
            f = building_blocks.floor(blocks, tp["per_order"])
            f["mesh_orders_per_s"] = tp["orders_per_s"]
            f["mesh_over_floor"] = (round(tp["orders_per_s"] / f["floor_orders_per_s"], 3)
                                    if tp["orders_per_s"] and f["floor_orders_per_s"] else None)
            results["floor"] = f
    finally:
        if keep:
            log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "summary.md").write_text(report.markdown(results))
    try:
        if report.chart(results, out / "chart.png"):
            results["meta"]["chart"] = str(out / "chart.png")
    except Exception as exc:  # noqa: BLE001 - a chart is a nicety
        results["errors"]["chart"] = repr(exc)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--out", type=Path, default=Path(".data/bench"))
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    ap.add_argument("--keep", action="store_true", help="keep the mesh's data folder (logs, stores)")
    ap.add_argument("--peers", default="", help="scenario 7's peers, e.g. temporal,temporal-wal,dbos,dbos-pg,"
                    "dbos:0.2 (DBOS polling every 0.2 s); default: " + "; ".join(
                        f"{k}: {','.join(v)}" for k, v in PEERS.items()))
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := only - set(SCENARIOS):
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()] or None
    results = run(args.size, args.out, only, keep=args.keep, peers=peers)
    print((args.out / "summary.md").read_text())
    if results["errors"]:
        print(f"errors: {json.dumps(results['errors'], indent=2)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
