"""`make bench`'s scenario 8 at the tiny size: Tryton alone (a direct JSON-RPC loop on
a trytond of its own), a mesh whose ERP is Tryton (throughput, a burst of orders, the
ERP backlog and its drain) and the same burst on the built-in ERP. It asserts that
every figure is there and positive, never how fast anything is (about a minute)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import run
from bench.report import targets

# A minute to two of a budget-bound `make test`: run by `make test-slow` (and -m tryton).
pytestmark = [pytest.mark.tryton, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_tryton_scenario_produces_figures(tmp_path):
    results = run("tiny", tmp_path, {"tryton"})
    assert results["errors"] == {}
    t = results["tryton"]

    alone = t["alone"]
    assert alone["sales_per_s"] > 0 and alone["ms_per_sale"] > 0
    assert len(alone["sales_per_s_runs"]) == alone["runs"] >= 2
    assert alone["sale"]["n"] == alone["runs"] * alone["sales_per_run"]
    assert alone["rpc_calls_per_sale"] > 0 and alone["trytond_cpu_ms_per_sale"] > 0
    assert all(v > 0 for v in alone["step_ms_median"].values())
    assert {"confirm", "post"} <= set(alone["step_ms_median"])

    tp = t["throughput"]
    assert tp["invoiced"] == tp["submitted"] > 0
    # A window of a few seconds may see no order invoiced on a loaded machine: present, not fast.
    assert tp["orders_per_s"] is not None
    assert tp["submit_latency"]["p99_ms"] > 0
    assert any(k.startswith("trytond") for k in tp["cpu"]["by_process"])
    assert tp["trytond_requests_per_order"] > 0 and tp["trytond_requests_per_order_less_idle"] is not None
    assert t["idle"]["credit_check"]["p99_ms"] > 0 and t["idle"]["trytond_requests_per_s"] >= 0
    assert t["mesh_over_alone"] is not None
    assert t["trytond_cpu_ms_per_order_in_mesh"] > 0 and t["mesh_over_alone_by_trytond_cpu"] > 0

    for burst in (t["burst"], t["builtin_burst"]):
        assert burst["errors"] == 0 and burst["orders"] > 0
        assert burst["intake"]["n"] == burst["orders"] and burst["intake"]["p99_ms"] > 0
        assert burst["seconds_to_empty"] > 0 and burst["drain_orders_per_s"] is not None
        assert set(burst["backlog_peak_by_consumer"]) >= {"erp-commands", "erp-wms-events"}
    # Tryton is slower than the burst: ERP's commands waited in its stream, then drained.
    assert t["burst"]["backlog_peak"] > 0 and t["burst"]["drain_orders_per_s"] > 0
    assert t["intake_p99_over_builtin"] > 0

    assert json.loads((tmp_path / "results.json").read_text())["tryton"]["alone"]["sales_per_s"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## 8. The mesh on Tryton" in summary
    names = [name for name, *_ in targets(results)]
    assert "Tryton: mesh orders/s / Tryton alone sales/s" in names
    assert "Tryton: order intake p99 / built-in ERP's (same burst)" in names
    for name in names:
        assert name in summary
