"""results.json -> summary.md (the table with the targets) and chart.png."""

from __future__ import annotations

from pathlib import Path


def _get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def targets(r: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, threshold, met) for every target the issue names."""
    out = []
    ratio = _get(r, "floor", "mesh_over_floor")
    out.append(("mesh throughput / building-block floor", _fmt(ratio), "≥ 0.6",
                None if ratio is None else ratio >= 0.6))
    applied = _get(r, "burst", "all_applied_s")
    out.append(("burst: 10,000 events applied to the ERP ledger", f"{_fmt(applied)} s", "< 3 s",
                None if applied is None else applied < 3))
    growth = _get(r, "burst", "intake_p99_during_over_before")
    out.append(("burst: intake p99 during / before", _fmt(growth), "≤ 2×",
                None if growth is None else growth <= 2))
    cx = _get(r, "side_by_side", "crossdock", "acceptance_p99_slowed_over_normal")
    out.append(("slowed WMS: Crossdock acceptance p99 slowed / normal", _fmt(cx), "≤ 2×",
                None if cx is None else cx <= 2))
    bg = _get(r, "side_by_side", "baseline", "acceptance_p99_growth_ms")
    bg50 = _get(r, "side_by_side", "baseline", "acceptance_p50_growth_ms")
    added = _get(r, "side_by_side", "wms_added_latency_ms", default=200)
    out.append(("slowed WMS: baseline acceptance growth p50 / p99", f"{_fmt(bg50)} / {_fmt(bg)} ms",
                f"≥ {added} ms (expected)", None if bg is None else max(bg, bg50 or 0) >= added))
    lost = [_get(r, "side_by_side", s, "totals", "lost") for s in ("crossdock", "baseline")]
    out.append(("slowed WMS: orders lost (Crossdock, baseline)", f"{_fmt(lost[0])}, {_fmt(lost[1])}", "0, 0",
                None if None in lost else lost == [0, 0]))
    ratios = _get(r, "lookups", "grpc_p99_over_echo") or {}
    worst = max(ratios.values()) if ratios else None
    out.append(("lookups: gRPC p99 / raw echo p99 (worst)", _fmt(worst), "≤ 2×",
                None if worst is None else worst <= 2))
    rss = _get(r, "throughput", "rss") or {}
    peak = max((v["peak_rss_mb"] for v in rss.values()), default=None)
    out.append(("peak RSS per service (largest)", f"{_fmt(peak)} MB", "< 150 MB",
                None if peak is None else peak < 150))
    if r.get("tryton"):
        mesh = _get(r, "tryton", "throughput", "orders_per_s")
        alone = _get(r, "tryton", "alone", "sales_per_s")
        share = _get(r, "tryton", "mesh_over_alone")
        out.append(("Tryton: mesh orders/s / Tryton alone sales/s",
                    f"{_fmt(mesh)} / {_fmt(alone)} = {_fmt(share)}", "≥ 0.8",
                    None if share is None else share >= 0.8))
        on_t = _get(r, "tryton", "burst", "intake", "p99_ms")
        on_b = _get(r, "tryton", "builtin_burst", "intake", "p99_ms")
        growth = _get(r, "tryton", "intake_p99_over_builtin")
        out.append(("Tryton: order intake p99 / built-in ERP's (same burst)",
                    f"{_fmt(on_t)} / {_fmt(on_b)} ms = {_fmt(growth)}", "≤ 2×",
                    None if growth is None else growth <= 2))
    peers = r.get("peers") or {}
    if peers:
        mine = _get(r, "throughput", "orders_per_s")
        theirs = {k: _get(v, "throughput", "orders_per_s") for k, v in peers.items()}
        best = max((v for v in theirs.values() if v is not None), default=None)
        out.append(("peers: Crossdock orders/s vs the best peer", f"{_fmt(mine)} vs {_fmt(best)}", "ahead",
                    None if mine is None or best is None else mine > best))
        mine = _get(r, "throughput", "cpu", "cpu_ms_per_order")
        theirs = {k: _get(v, "throughput", "cpu_ms_per_order") for k, v in peers.items()}
        least = min((v for v in theirs.values() if v is not None), default=None)
        out.append(("peers: Crossdock CPU ms per order vs the leanest peer", f"{_fmt(mine)} vs {_fmt(least)}",
                    "less", None if mine is None or least is None else mine < least))
    return out


def peer_rows(r: dict) -> list[dict]:
    """Crossdock (scenario 2) and every peer (scenario 7), with the same figures."""
    rows = []
    tp = r.get("throughput")
    if tp:
        rss = tp.get("rss") or {}
        rows.append({"system": "crossdock", "settings": "SQLite WAL + synchronous NORMAL per service",
                     "orders_per_s": tp.get("orders_per_s"),
                     "completion": _get(r, "completion", "completion") or {},
                     "completion_rate": _get(r, "completion", "offered_orders_per_s"),
                     "cpu_ms_per_order": _get(tp, "cpu", "cpu_ms_per_order"),
                     "peak_rss_mb": max((v["peak_rss_mb"] for v in rss.values()), default=None),
                     "kill": r.get("crossdock_kill")})
    for name, p in (r.get("peers") or {}).items():
        t = p.get("throughput") or {}
        procs = t.get("by_process") or {}
        orchestrator = {n: v for n, v in procs.items() if n.startswith(("temporal", "dbos"))}
        rows.append({"system": name, "settings": p.get("settings", ""), "orders_per_s": t.get("orders_per_s"),
                     "completion": _get(p, "completion", "completion") or {},
                     "completion_rate": _get(p, "completion", "offered_orders_per_s"),
                     "cpu_ms_per_order": t.get("cpu_ms_per_order"),
                     "orchestrator_cpu_ms_per_order": round(sum(v["cpu_ms_per_order"] or 0
                                                               for v in orchestrator.values()), 1),
                     "peak_rss_mb": t.get("peak_rss_mb"), "kill": p.get("kill")})
    return rows


def markdown(r: dict) -> str:
    m = r.get("meta", {})
    lines = [f"# Crossdock benchmark ({m.get('size', '?')})", "",
             f"{m.get('started', '')} · {m.get('cpus', '?')} CPUs · `{m.get('command', '')}` · "
             f"{m.get('elapsed_s', '?')} s", ""]
    lines += ["## Targets", "", "| target | measured | target | met |", "|---|---|---|---|"]
    for name, measured, threshold, met in targets(r):
        met_cell = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {threshold} | {met_cell} |")

    b = r.get("building_blocks") or {}
    f = r.get("floor") or {}
    po = _get(r, "throughput", "per_order") or {}
    if b:
        js = b.get("jetstream", {})
        lines += ["", "## 1. Building-block floor (same run)", "", "| block | figure |", "|---|---|",
                  "| raw gRPC echo, one at a time | "
                  f"p50 {_fmt(_get(b, 'grpc_echo_one_at_a_time', 'p50_ms'))} ms, "
                  f"p99 {_fmt(_get(b, 'grpc_echo_one_at_a_time', 'p99_ms'))} ms |",
                  "| raw gRPC echo, 32 in flight | "
                  f"{_fmt(b.get('grpc_echo_saturated_calls_per_s'))} calls/s |",
                  "| JetStream publish, one acked at a time | "
                  f"{_fmt(js.get('publish_one_at_a_time_per_s'))} msg/s |",
                  f"| JetStream publish, pipelined | {_fmt(js.get('publish_pipelined_per_s'))} msg/s |",
                  "| JetStream durable pull fetch(256) + ack | "
                  f"{_fmt(js.get('pull_consume_ack_per_s'))} msg/s |",
                  f"| store transaction (row + outbox row, SQLite WAL) | "
                  f"{_fmt(_get(b, 'store', 'transactions_per_s'))} tx/s |"]
    if po:
        lines += ["", "Per order (from the mesh's own metrics, all services): "
                  f"{_fmt(po.get('rpcs'))} RPCs, {_fmt(po.get('messages'))} messages handled, "
                  f"{_fmt(po.get('transactions'))} store transactions.", "",
                  "| service | RPCs | messages | transactions |", "|---|---|---|---|"]
        for name, v in (po.get("by_service") or {}).items():
            lines.append(f"| {name} | {_fmt(v['rpcs'])} | {_fmt(v['messages'])} | "
                         f"{_fmt(v['transactions'])} |")
    if f:
        lines += ["", f"Floor: {_fmt(f.get('rpc_ms_per_order'))} ms RPC + "
                  f"{_fmt(f.get('messaging_ms_per_order'))} ms messaging + "
                  f"{_fmt(f.get('store_ms_per_order'))} ms store = {_fmt(f.get('total_ms_per_order'))} ms "
                  f"per order → **{_fmt(f.get('floor_orders_per_s'))} orders/s**; mesh "
                  f"{_fmt(f.get('mesh_orders_per_s'))} orders/s → "
                  f"**ratio {_fmt(f.get('mesh_over_floor'))}**."]
    t = r.get("throughput")
    if t:
        c = r.get("completion") or {}
        lines += ["", "## 2. End-to-end order-to-ship (submission → INVOICED)", "",
                  "| figure | value |", "|---|---|",
                  f"| sustained throughput ({_fmt(t['duration_s'] - t['warmup_s'])} s window) | "
                  f"**{_fmt(t['orders_per_s'])} orders/s** |",
                  f"| orders submitted / invoiced | {_fmt(t['submitted'])} / {_fmt(t['invoiced'])} |",
                  f"| submit latency under load p50 / p99 | {_fmt(t['submit_latency']['p50_ms'])} / "
                  f"{_fmt(t['submit_latency']['p99_ms'])} ms |"]
        u = r.get("throughput_unbatched")
        if u:
            lines.append("| the same on a second mesh, one transaction per message "
                         "(`CROSSDOCK_CONSUMER_TX_BATCH=1`, "
                         f"{_fmt(u['duration_s'] - u['warmup_s'])} s window) | "
                         f"{_fmt(u['orders_per_s'])} orders/s, "
                         f"{_fmt(u['per_order']['transactions'])} store transactions per order (batched: "
                         f"{_fmt(t['per_order']['transactions'])}) |")
        if c:
            lines.append(f"| completion latency at {_fmt(c['offered_orders_per_s'])} orders/s p50 / p99 | "
                         f"{_fmt(c['completion']['p50_ms'])} / {_fmt(c['completion']['p99_ms'])} ms |")
    bu = r.get("burst")
    if bu:
        lines += ["", "## 3. Burst of inventory movements", "", "| figure | value |", "|---|---|",
                  f"| events ({bu['receipts']} receipts, two at a time) | {_fmt(bu['events'])} |",
                  f"| WMS committed them all in | {_fmt(bu['wms_commit_s'])} s |",
                  "| ERP ledger applied them all in (from the first receipt sent) | "
                  f"**{_fmt(bu['all_applied_s'])} s** |",
                  f"| ledger freshness lag p50 / p99 | {_fmt(bu['freshness_lag']['p50_ms'])} / "
                  f"{_fmt(bu['freshness_lag']['p99_ms'])} ms |",
                  f"| order intake p99 before / during ({_fmt(bu['intake_rate_per_s'])} orders/s) | "
                  f"{_fmt(bu['intake_before']['p99_ms'])} / {_fmt(bu['intake_during']['p99_ms'])} ms "
                  f"(×{_fmt(bu['intake_p99_during_over_before'])}) |"]
    s = r.get("side_by_side")
    if s:
        lines += ["", "## 4. Crossdock vs direct synchronous integration "
                  f"({_fmt(s['offered_orders_per_s'])} orders/s "
                  f"each, WMS +{s['wms_added_latency_ms']} ms for {_fmt(s['phases_s']['slowed'])} s)", "",
                  "| | phase | acceptance p50 | acceptance p99 | accepted/s |", "|---|---|---|---|---|"]
        for system in ("crossdock", "baseline"):
            for ph in ("normal", "slowed", "after"):
                v = s[system][ph]
                lines.append(f"| {system} | {ph} | {_fmt(v['acceptance']['p50_ms'])} ms | "
                             f"{_fmt(v['acceptance']['p99_ms'])} ms | {_fmt(v['accepted_per_s'])} |")
        lines += ["", "| | offered | accepted | completed | completed after the spike | lost "
                  "| backlog cleared after the spike |",
                  "|---|---|---|---|---|---|---|"]
        for system in ("crossdock", "baseline"):
            v = s[system]["totals"]
            lines.append(f"| {system} | {_fmt(v['offered'])} | {_fmt(v['accepted'])} | "
                         f"{_fmt(v['completed'])} | "
                         f"{_fmt(v['completed_after_spike'])} | {_fmt(v['lost'])} | "
                         f"{_fmt(v['backlog_cleared_s_after_spike'])} s |")
    lk = r.get("lookups")
    if lk:
        lines += ["", "## 5. Lookups (one at a time, interleaved)", "",
                  "| call | p50 | p99 | p99 / echo p99 |", "|---|---|---|---|"]
        e99 = lk["echo"]["p99_ms"]
        for name, v in lk.items():
            if isinstance(v, dict) and "p50_ms" in v:
                lines.append(f"| {name.replace('_', ' ')} | {_fmt(v['p50_ms'])} ms | "
                             f"{_fmt(v['p99_ms'])} ms | "
                             f"{_fmt(round(v['p99_ms'] / e99, 2) if e99 else None)} |")
        lines.append("| gateway credit check | not exposed by the gateway | | |")
    if r.get("tryton"):
        lines += _tryton_section(r["tryton"])
    rows = peer_rows(r)
    if r.get("peers") and rows:
        lines += _peer_section(rows)
    rss = _get(r, "throughput", "rss")
    if rss:
        lines += ["", "## 6. Peak RSS per service during run 2", "",
                  "| service | peak RSS (sampled) | VmHWM |", "|---|---|---|"]
        for name, v in rss.items():
            lines.append(f"| {name} | {_fmt(v['peak_rss_mb'])} MB | {_fmt(v['vm_hwm_mb'])} MB |")
    if r.get("drain_s_before"):
        drains = ", ".join(f"{k} {v}" for k, v in r["drain_s_before"].items())
        lines += ["", "Before each scenario the harness waited until every durable consumer "
                  f"had nothing pending (seconds): {drains}."]
    if r.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()]
    return "\n".join(lines) + "\n"


PEER_COLUMNS = ("| system | runs with | orders/s | completion p50 / p99 (at orders/s) | "
                "CPU ms per order (orchestrator) | peak RSS (largest process) |")
KILL_COLUMNS = ("| system | killed | accepted | in flight | lost | duplicated | steps run again | restart | "
                "first completion after the kill | in-flight orders all completed |")


KILL_TITLE = "SIGKILL of the orchestrator half-way through an open loop at half rate, restarted at once:"
PEER_NOTE = ("CPU from /proc (utime + stime) of every process involved (Crossdock: nats-server and every "
             "service; a peer: its server and worker, or its process, and ERP, WMS, TMS, nats-server) over "
             "the throughput run, divided by the orders completed. How each peer calls the system services, "
             "what it persists and with which settings: bench/peers/README.md.")


def _peer_section(rows: list[dict]) -> list[str]:
    lines = ["", "## 7. Peers side by side: the same workflow on Temporal and DBOS, the same ERP, WMS, TMS",
             "", PEER_COLUMNS, "|---|---|---|---|---|---|"]
    for row in rows:
        c, orch = row["completion"], row.get("orchestrator_cpu_ms_per_order")
        cpu = _fmt(row["cpu_ms_per_order"]) + (f" ({_fmt(orch)})" if orch is not None else "")
        latency = f"{_fmt(c.get('p50_ms'))} / {_fmt(c.get('p99_ms'))} ms ({_fmt(row['completion_rate'])})"
        lines.append(f"| {row['system']} | {row['settings']} | **{_fmt(row['orders_per_s'])}** | {latency} | "
                     f"{cpu} | {_fmt(row['peak_rss_mb'])} MB |")
    lines += ["", KILL_TITLE, "", KILL_COLUMNS, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if k := row["kill"]:
            cells = [row["system"], " + ".join(k["killed"]), _fmt(k["accepted"]),
                     _fmt(k["in_flight_at_kill"]), _fmt(k["lost"]), _fmt(k["duplicated"]),
                     _fmt(k["steps_repeated"]),
                     f"{_fmt(k['restart_s'])} s", f"{_fmt(k['first_completion_after_kill_s'])} s",
                     f"{_fmt(k['in_flight_completed_s'])} s"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", PEER_NOTE]


def _tryton_section(t: dict) -> list[str]:
    a, tp, b, bb = t.get("alone") or {}, t.get("throughput") or {}, t.get("burst") or {}, \
        t.get("builtin_burst") or {}
    steps = ", ".join(f"{k} {_fmt(v)}" for k, v in (a.get("step_ms_median") or {}).items())
    lines = ["", "## 8. The mesh on Tryton (trytond under gunicorn, "
             f"{a.get('workers', '?')} worker(s), {a.get('database', '?')})", "",
             "| figure | value |", "|---|---|",
             f"| Tryton alone: direct JSON-RPC loop, median of {_fmt(a.get('runs'))} runs of "
             f"{_fmt(a.get('sales_per_run'))} sales | **{_fmt(a.get('sales_per_s'))} sales/s**, "
             f"{_fmt(a.get('ms_per_sale'))} ms per sale (runs: "
             f"{', '.join(_fmt(x) for x in a.get('sales_per_s_runs') or [])}) |",
             f"| Tryton alone: JSON-RPC calls / trytond CPU per sale | {_fmt(a.get('rpc_calls_per_sale'))} "
             f"calls, {_fmt(a.get('trytond_cpu_ms_per_sale'))} ms |",
             f"| Tryton alone: median ms per step | {steps} |"]
    if tp:
        cpu = _get(tp, "cpu", "by_process") or {}
        tryton_cpu = sum(v or 0 for k, v in cpu.items() if k.startswith("trytond"))
        lines += [f"| mesh on Tryton: sustained throughput ({_fmt(tp['duration_s'] - tp['warmup_s'])} s "
                  f"window, at most {_fmt(tp['backlog_limit'])} orders in flight) | "
                  f"**{_fmt(tp['orders_per_s'])} orders/s** = {_fmt(t.get('mesh_over_alone'))} × Tryton "
                  "alone |",
                  "| mesh / Tryton alone by trytond's CPU per order (alone / in the mesh) | "
                  f"{_fmt(_get(t, 'alone', 'trytond_cpu_ms_per_sale'))} / "
                  f"{_fmt(t.get('trytond_cpu_ms_per_order_in_mesh'))} ms = "
                  f"{_fmt(t.get('mesh_over_alone_by_trytond_cpu'))} |",
                  f"| mesh on Tryton: orders submitted / invoiced | {_fmt(tp['submitted'])} / "
                  f"{_fmt(tp['invoiced'])} |",
                  f"| mesh on Tryton: CPU per order, all processes / trytond | "
                  f"{_fmt(_get(tp, 'cpu', 'cpu_ms_per_order'))} / {_fmt(round(tryton_cpu, 1))} ms |",
                  f"| mesh on Tryton: trytond requests per order (Tryton alone: "
                  f"{_fmt(a.get('rpc_calls_per_sale'))}) | {_fmt(tp.get('trytond_requests_per_order'))}, "
                  f"{_fmt(tp.get('trytond_requests_per_order_less_idle'))} without the idle rate |"]
    if idle := t.get("idle"):
        c = idle.get("credit_check") or {}
        lines += [f"| mesh on Tryton, no orders: trytond requests/s (change feed, planning) | "
                  f"{_fmt(idle.get('trytond_requests_per_s'))} |",
                  f"| mesh on Tryton, no orders: ERP CheckCredit (intake's precheck) p50 / p99 | "
                  f"{_fmt(c.get('p50_ms'))} / {_fmt(c.get('p99_ms'))} ms |"]
    for name, v in (("Tryton", b), ("built-in ERP", bb)):
        if v:
            lines += [f"| burst on {name}: {_fmt(v['orders'])} orders at "
                      f"{_fmt(v['offered_orders_per_s'])}/s, intake p50 / p99 | "
                      f"{_fmt(v['intake']['p50_ms'])} / {_fmt(v['intake']['p99_ms'])} ms |",
                      f"| burst on {name}: ERP backlog peak / at the last submission (messages) | "
                      f"{_fmt(v['backlog_peak'])} / {_fmt(v['backlog_at_last_submission'])} |",
                      f"| burst on {name}: drained in (from the last submission) | "
                      f"**{_fmt(v['seconds_to_empty'])} s** at {_fmt(v['drain_orders_per_s'])} orders/s |"]
    lines += ["", "Tryton alone makes the adapter's calls for one order (sale: look up, create, quote, "
              "confirm, read; invoice: look up, create, post, read), one sale after another; the "
              "ledger's stock booking of the shipment is left out (the mesh books movements in "
              "batches). The backlog is pending + unacknowledged messages of ERP's durable consumers "
              "(JetStream consumer info, every 0.25 s)."]
    return lines


def chart(r: dict, path: Path) -> bool:
    """Acceptance p50/p99 per phase, Crossdock vs the baseline, and mesh vs floor."""
    s, f = r.get("side_by_side"), r.get("floor")
    rows = [row for row in peer_rows(r) if row["orders_per_s"] is not None] if r.get("peers") else []
    if not s and not f and not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if rows else 2, figsize=(17 if rows else 11, 4))
    for ax, shown in zip(axes, (s, f), strict=False):
        if not shown:
            ax.axis("off")
    if s:
        ax = axes[0]
        phases = ["normal", "slowed", "after"]
        width = 0.2
        series = [(x, y) for x in ("crossdock", "baseline") for y in ("p50_ms", "p99_ms")]
        for k, (system, q) in enumerate(series):
            vals = [s[system][ph]["acceptance"][q] or 0 for ph in phases]
            ax.bar([i + (k - 1.5) * width for i in range(3)], vals, width, label=f"{system} {q[:3]}")
        ax.set_xticks(range(3), [f"{p}" for p in phases])
        ax.set_ylabel("order acceptance latency (ms)")
        ax.set_title(f"WMS +{s['wms_added_latency_ms']} ms during 'slowed'")
        ax.legend(fontsize=8)
    if f:
        ax = axes[1]
        ax.bar(["floor", "mesh"], [f.get("floor_orders_per_s") or 0, f.get("mesh_orders_per_s") or 0],
               color=["#999", "#2a7"])
        ax.set_ylabel("orders/s")
        ax.set_title(f"end-to-end throughput (ratio {f.get('mesh_over_floor')})")
    if rows:
        ax = axes[2]
        names = [row["system"] for row in rows]
        bars = ax.bar(names, [row["orders_per_s"] for row in rows],
                      color=["#2a7" if n == "crossdock" else "#79b" for n in names])
        for bar, row in zip(bars, rows, strict=True):
            ax.annotate(f"{_fmt(row['cpu_ms_per_order'])} ms CPU", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("orders/s (submission → invoiced)")
        ax.set_title("the same workflow: Crossdock vs Temporal, DBOS")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
