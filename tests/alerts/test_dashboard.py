"""deploy/grafana/crossdock.json: a valid dashboard whose every query reads metrics the
services export, covering the metrics the brief names."""

from __future__ import annotations

import json
import re

import pytest

from tests.external_tools import REPO

from .metric_names import PROMETHEUS_SERIES, exported, read_by

DASHBOARD = REPO / "deploy" / "grafana" / "crossdock.json"

# The brief's metrics: API latency, queue depth, event processing lag, success rate,
# retry volume, dead-letter count, business exceptions, end-to-end completion time,
# order release delay, shipment posting lag, inventory update freshness, invoice timing.
BRIEF = {
    "crossdock_grpc_server_handling_seconds_bucket", "crossdock_consumer_pending_messages",
    "crossdock_event_processing_lag_seconds_bucket", "crossdock_messages_handled_total",
    "crossdock_message_retries_total", "crossdock_dead_letters", "crossdock_messages_dead_lettered_total",
    "crossdock_business_exceptions_total", "crossdock_order_completion_seconds_bucket",
    "crossdock_order_release_delay_seconds_bucket", "crossdock_shipment_posting_lag_seconds_bucket",
    "crossdock_inventory_update_freshness_seconds_bucket", "crossdock_invoice_timing_seconds_bucket",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return [p for p in out if p["type"] != "row"]


def test_it_is_a_dashboard_with_panels_that_query_the_chosen_prometheus(dashboard):
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}
    for p in panels(dashboard):
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]


def test_every_query_reads_metrics_the_services_export(dashboard):
    known = exported() | PROMETHEUS_SERIES
    queries = [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]
    queries += [(v["name"], v["definition"]) for v in dashboard["templating"]["list"] if v.get("definition")]
    read = set()
    for title, expr in queries:
        names = read_by(re.sub(r"label_values\((\w+),.*\)", r"\1", expr))
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: {sorted(names - known)} is not exported by any service"
        read |= names
    assert BRIEF <= read, f"the dashboard shows none of {sorted(BRIEF - read)}"
