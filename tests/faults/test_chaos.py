"""A CI-sized fault-injection run (`make chaos` runs the full size).

The run is judged by tests/faults/verdict.py: the outcome mix the workload implies, every fault
seen taking effect, the books in agreement (tests/unit/test_chaos_verdict.py shows each of those
checks failing a vacuous run)."""

from __future__ import annotations

import pytest

from tests.faults.chaos import CRASH_POINTS, Size, run
from tests.faults.verdict import INJECTED

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
async def test_faults_neither_lose_nor_duplicate_work(tmp_path):
    summary = await run(Size(orders=250, returns=30, erp_outage=8.0, fault_every=2.5), tmp_path)
    print(summary.text())
    assert summary.ok, summary.text()
    # What ok rests on, spelled out: every fault kind and crash point seen, the mix as implied.
    assert {*INJECTED, *(f"crash:{p}" for p in CRASH_POINTS)} <= set(summary.faults)
    assert summary.mix["orders"]["poor"].get("REJECTED") == 5
    assert summary.mix["orders"]["good"].get("INVOICED", 0) >= 233
    assert sum(summary.returns.values()) == 30
