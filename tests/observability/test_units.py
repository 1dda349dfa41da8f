"""Observability pieces without a mesh: exporter choice, the JSON-lines and an
unreachable OTLP exporter, metrics parsing and the Jaeger span tree."""

from __future__ import annotations

import json
import socket
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.cli.status import Histogram as Hist
from services.cli.status import jaeger_tree, parse_metrics
from services.mesh import telemetry


def test_otlp_export_follows_the_standard_variables(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry._otlp_wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    assert telemetry._otlp_wanted()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not telemetry._otlp_wanted()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert telemetry._otlp_wanted()


def test_json_lines_file_and_an_unreachable_collector(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens there
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "crossdock-test"}))
    provider.add_span_processor(BatchSpanProcessor(telemetry.JsonLinesSpanExporter(str(path))))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{dead_port}", insecure=True, timeout=1)))
    tracer = provider.get_tracer("t")
    start = time.monotonic()
    with tracer.start_as_current_span("parent"):
        with tracer.start_as_current_span("cmd.x publish", kind=SpanKind.PRODUCER):
            pass
    assert time.monotonic() - start < 0.5  # export never blocks the caller
    provider.force_flush(3000)  # the dead collector only costs its own spans
    provider.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {s["name"]: s for s in spans}
    assert by_name["cmd.x publish"]["parent_span_id"] == by_name["parent"]["span_id"]
    assert by_name["cmd.x publish"]["kind"] == "PRODUCER" and by_name["parent"]["service"] == "crossdock-test"


def test_metrics_parsing_and_quantiles():
    registry = CollectorRegistry()
    h = Histogram("crossdock_order_completion_seconds", "x", buckets=(0.5, 1, 5), registry=registry)
    for v in (0.2, 0.7, 0.8, 3):
        h.observe(v)
    scrape = parse_metrics("ordertoship", generate_latest(registry).decode())
    got = scrape.histogram("crossdock_order_completion_seconds")
    assert got.count == 4 and abs(got.sum - 4.7) < 1e-9
    assert got.quantile(0.5) == 1 and got.quantile(0.95) == 5
    assert Hist().quantile(0.5) is None


def test_jaeger_span_tree():
    payload = {"data": [{"processes": {"p1": {"serviceName": "crossdock-erp"}},
                         "spans": [
                             {"spanID": "a", "operationName": "root", "startTime": 0, "duration": 10,
                              "processID": "p1", "references": []},
                             {"spanID": "b", "operationName": "child", "startTime": 5, "duration": 2,
                              "processID": "p1", "references": [{"refType": "CHILD_OF", "spanID": "a"}]}]}]}
    tree = jaeger_tree(payload, "t1")
    root = tree.children[0]
    assert "root" in str(root.label) and "child" in str(root.children[0].label)
