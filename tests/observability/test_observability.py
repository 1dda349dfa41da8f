"""One order, one trace: a real OTLP/gRPC receiver collects the spans of an
end-to-end order run through a real mesh (every service a process, a real
nats-server); the same run checks the Prometheus endpoints, the JSON logs and
the `crossdock status` / `crossdock trace` commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, make_world

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
PATH_SERVICES = {"crossdock-ordertoship", "crossdock-erp", "crossdock-wms", "crossdock-tms"}
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []

    async def Export(self, request, context):
        for rs in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(), "name": s.name, "kind": KINDS.get(s.kind, "?"),
                        "service": attrs.get("service.name", "?"), "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": {a.key: a.value.string_value for a in s.attributes},
                    })
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[dict]:
        return [s for s in self.spans if s["trace_id"] == trace_id]


def span_tree(spans: list[dict]) -> str:
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str, list[dict]] = {}
    for s in spans:
        children.setdefault(s["parent"] if s["parent"] in by_id else "", []).append(s)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x["start"]):
            service = s["service"].removeprefix("crossdock-")
            lines.append(f"{'  ' * depth}{service}: {s['name']} [{s['kind']}]")
            walk(s["span_id"], depth + 1)

    walk("", 0)
    return "\n".join(lines)


def as_jaeger(spans: list[dict], trace_id: str) -> dict:
    """The receiver's spans in the Jaeger query API's shape (for `crossdock trace`)."""
    services = sorted({s["service"] for s in spans})
    pids = {svc: f"p{i}" for i, svc in enumerate(services)}
    return {"data": [{
        "traceID": trace_id,
        "processes": {pids[svc]: {"serviceName": svc} for svc in services},
        "spans": [{
            "traceID": trace_id, "spanID": s["span_id"], "operationName": s["name"],
            "references": ([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": s["parent"]}]
                           if s["parent"] else []),
            "startTime": s["start"] // 1000, "duration": (s["end"] - s["start"]) // 1000,
            "processID": pids[s["service"]], "tags": [{"key": "span.kind", "value": s["kind"].lower()}],
        } for s in spans],
    }]}


def fake_jaeger(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            trace_id = self.path.rsplit("/", 1)[-1]
            spans = receiver.trace(trace_id)
            body = json.dumps(as_jaeger(spans, trace_id)).encode()
            self.send_response(200 if spans else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def wait_for(predicate, timeout: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    return value


def metrics_text(data_dir: Path, service: str) -> str:
    port = int((data_dir / f"{service}-metrics.port").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str) -> float:
    """Sum of the samples called exactly ``name`` (any labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_one_order_is_one_trace_with_metrics_and_logs(tmp_path: Path):
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    trace_file = tmp_path / "spans.jsonl"
    env = {**FAST, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "200",
           "CROSSDOCK_TRACE_FILE": str(trace_file), "CROSSDOCK_METRICS_POLL_INTERVAL": "0.5",
           "CROSSDOCK_LOG_LEVEL": "DEBUG"}
    mesh = Mesh(tmp_path / "mesh", env=env)
    jaeger = fake_jaeger(receiver)
    try:
        await asyncio.to_thread(mesh.start)
        stubs = Stubs(mesh)
        try:
            world = await make_world(stubs)
            order = (await stubs.ots.SubmitOrder(world.order({world.skus[0]: 2}), timeout=30)).order

            async def status() -> int:
                o = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=order.order_id), timeout=5)).order
                return o.status

            deadline = asyncio.get_running_loop().time() + 60
            while await status() != pb.ORDER_STATUS_INVOICED:
                assert asyncio.get_running_loop().time() < deadline, "order not invoiced in 60 s"
                await asyncio.sleep(0.2)
            trace_id = order.trace_id
            assert len(trace_id) == 32

            # ---- the trace: ERP's invoice handling and order-to-ship's reaction reach the receiver ----
            def complete():
                spans = receiver.trace(trace_id)
                names = {(s["service"], s["name"]) for s in spans}
                return spans if {("crossdock-erp", "cmd.erp.invoice.post process"),
                                 ("crossdock-ordertoship", "erp.invoice.posted process")} <= names else None

            await wait_for(complete, 30, "the invoice spans")

            def whole():  # the last batches come later (the acks' spans end after the handler's)
                spans = receiver.trace(trace_id)
                ids = {s["span_id"] for s in spans}
                return spans if all(s["parent"] in ids for s in spans if s["parent"]) else None

            spans = await wait_for(whole, 30, "every span's parent in the trace (one unbroken tree)")
            tree = span_tree(spans)
            print(f"\nspan tree of {order.order_id} (trace {trace_id}, {len(spans)} spans):\n{tree}")
            (tmp_path / "span-tree.txt").write_text(tree)

            assert {s["service"] for s in spans} >= PATH_SERVICES
            by_id = {s["span_id"]: s for s in spans}
            roots = [s for s in spans if not s["parent"]]
            assert len(roots) == 1 and roots[0]["kind"] == "SERVER", roots
            assert roots[0]["name"].endswith("OrderToShipService/SubmitOrder")
            # Every span hangs off a span of the same trace: one tree, no broken links.
            assert all(s["parent"] in by_id for s in spans if s["parent"]), "a span's parent is missing"
            # Across messages: each consumer span's parent is the producer span of that message.
            consumers = [s for s in spans if s["kind"] == "CONSUMER"]
            assert len(consumers) >= 8
            for c in consumers:
                producer = by_id[c["parent"]]
                assert producer["kind"] == "PRODUCER", (c["name"], producer["name"])
                assert producer["name"] == c["name"].replace(" process", " publish")
                assert (producer["attributes"]["messaging.message.id"]
                        == c["attributes"]["messaging.message.id"])
            # gRPC client spans (order-to-ship's lookups) parent the callee's server span.
            clients = [s for s in spans if s["kind"] == "CLIENT"]
            assert clients and all(
                any(x["parent"] == c["span_id"] and x["kind"] == "SERVER" for x in spans) for c in clients)
            steps = {s["name"] for s in spans}
            for subject in ("cmd.erp.salesorder.create", "erp.salesorder.accepted",
                            "cmd.wms.fulfilment.create", "wms.fulfilment.packed",
                            "cmd.tms.shipment.book", "tms.shipment.booked",
                            "wms.fulfilment.shipped", "cmd.erp.invoice.post", "erp.invoice.posted"):
                assert f"{subject} process" in steps, subject

            # ---- the JSON-lines trace file has the same spans ----
            in_file = [json.loads(line) for line in trace_file.read_text().splitlines()]
            assert {s["service"] for s in in_file if s["trace_id"] == trace_id} >= PATH_SERVICES

            # ---- JSON logs: a line written while handling a message carries the order's trace ----
            logs = [json.loads(line) for name in ("erp", "wms", "tms", "ordertoship")
                    for line in (mesh.data_dir / "logs" / f"{name}.log").read_text().splitlines()
                    if line.startswith("{")]
            handled = [r for r in logs
                       if r.get("event") == "message.handled" and r.get("trace_id") == trace_id]
            assert {r["service"] for r in handled} >= {"erp", "wms", "tms", "ordertoship"}
            for r in handled:
                assert r["level"] == "debug" and r["timestamp"] and r["span_id"] in by_id
            invoice_log = [r for r in handled if r["subject"] == "cmd.erp.invoice.post"]
            assert invoice_log and by_id[invoice_log[0]["span_id"]]["name"] == "cmd.erp.invoice.post process"

            # ---- Prometheus metrics ----
            ots = await wait_for(  # after the first consumer-info poll
                lambda: (t := metrics_text(mesh.data_dir, "ordertoship"))
                and "crossdock_consumer_ack_pending_messages{" in t and t, 30, "the consumer-info gauges")
            for name in ("crossdock_order_completion_seconds_count",
                         "crossdock_order_release_delay_seconds_count",
                         "crossdock_shipment_posting_lag_seconds_count",
                         "crossdock_invoice_timing_seconds_count"):
                assert sample(ots, name) >= 1, name
            assert sample(ots, "crossdock_orders_finished_total") >= 1
            assert sample(ots, "crossdock_grpc_server_handling_seconds_count") >= 1
            assert 'code="OK",method="/crossdock.ordertoship.v1.OrderToShipService/SubmitOrder"' in ots
            assert sample(ots, "crossdock_messages_handled_total") >= 8
            assert sample(ots, "crossdock_event_processing_lag_seconds_count") >= 8
            assert "crossdock_consumer_pending_messages{" in ots
            assert "crossdock_consumer_ack_pending_messages{" in ots
            erp = metrics_text(mesh.data_dir, "erp")
            assert sample(erp, "crossdock_inventory_update_freshness_seconds_count") >= 1
            assert "crossdock_messages_dead_lettered_total" in erp

            # ---- the CLI: a status snapshot, and the trace through a (fake) Jaeger query API ----
            cli_env = {**os.environ, "CROSSDOCK_DATA_DIR": str(mesh.data_dir),
                       "CROSSDOCK_NATS_URL": mesh.nats.url,
                       "COLUMNS": "200", **{f"CROSSDOCK_{n.upper()}_ADDR": mesh.addr(n)
                                            for n in mesh.services if "#" not in n},
                       "CROSSDOCK_JAEGER_QUERY_URL": f"http://127.0.0.1:{jaeger.server_port}"}
            out = await asyncio.to_thread(subprocess.run,
                                          [sys.executable, "-m", "services.cli", "status", "--once"],
                                          env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            print(out.stdout[-4000:])
            assert out.returncode == 0, out.stderr
            assert "SERVING" in out.stdout and "CMD_ERP" in out.stdout
            assert "end-to-end completion" in out.stdout
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "trace",
                                                           order.order_id],
                                          env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr + out.stdout
            assert trace_id in out.stdout and "cmd.erp.invoice.post process" in out.stdout
            assert "crossdock-tms" in out.stdout
        finally:
            await stubs.close()
    finally:
        await asyncio.to_thread(mesh.stop)
        jaeger.shutdown()
        await server.stop(None)
