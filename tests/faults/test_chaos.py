"""A CI-sized fault-injection run (`make chaos` runs the full size)."""

from __future__ import annotations

import pytest

from tests.faults.chaos import Size, run

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
async def test_faults_neither_lose_nor_duplicate_work(tmp_path):
    summary = await run(Size(orders=250, returns=30, erp_outage=8.0, fault_every=2.5), tmp_path)
    print(summary.text())
    assert {"sigkill", "sigstop", "nats_restart", "erp_outage"} <= set(summary.faults)
    assert sum(summary.returns.values()) == 30
    assert summary.ok, summary.text()
