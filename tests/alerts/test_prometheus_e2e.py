"""A real Prometheus (Debian's package, its own binary on a free port) scrapes a running
mesh with the shipped rules and the example configuration (intervals shortened to one
second): a poison message fires CrossdockDeadLetters, and the alert resolves once an
operator has fixed the cause and replayed the dead letter with `crossdock dlq replay`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from crossdock.admin.v1 import admin_pb2, admin_pb2_grpc
from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.wms.v1 import replenishment_pb2 as repl
from crossdock.wms.v1 import wms_pb2
from services.mesh import catalog, monitoring
from services.mesh.config import SERVICES
from services.mesh.launcher import Mesh, free_port, terminate, wait_until
from tests.e2e.conftest import FAST, Stubs
from tests.external_tools import prometheus
from tests.helpers import eventually, publish

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CONFIG = monitoring.RULES.parent / "prometheus.example.yml"


class Prometheus:
    def __init__(self, folder: Path, targets: list[dict]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "targets.json").write_text(json.dumps(targets))
        config = yaml.safe_load(CONFIG.read_text())
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(monitoring.RULES)]
        (job,) = config["scrape_configs"]
        job["file_sd_configs"] = [{"files": [str(folder / "targets.json")], "refresh_interval": "1s"}]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.folder / "prometheus.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [prometheus(), f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; "
                                   f"see {self.folder}/prometheus.log")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False
        wait_until(ready, 30, "prometheus to be ready", interval=0.1)

    def stop(self) -> None:
        terminate(self.proc, 10)

    def api(self, path: str, **params: str) -> object:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple, float]:
        """An instant query: labels (sorted items) -> value."""
        return {tuple(sorted(r["metric"].items())): float(r["value"][1])
                for r in self.api("query", query=expr)["result"]}

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh"), env={**FAST, "CROSSDOCK_METRICS_POLL_INTERVAL": "0.5"})
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def prom(mesh, tmp_path_factory):
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), monitoring.file_sd_targets(mesh.data_dir))
    try:
        p.start()
        yield p
    finally:
        p.stop()


async def test_a_poison_message_fires_the_dead_letter_alert_and_the_replay_resolves_it(mesh, prom, nc_mesh):
    # Every service is scraped, ready and connected.
    up = await eventually(lambda: (q := prom.query('up{job="crossdock"}')) and len(q) == len(SERVICES)
                          and all(v == 1 for v in q.values()) and q, what="every service scraped")
    assert {dict(k)["service"] for k in up} == set(SERVICES)
    ready = await eventually(lambda: (q := prom.query("crossdock_service_ready")) and len(q) == len(SERVICES)
                             and q, what="readiness scraped")
    assert set(ready.values()) == {1.0}
    assert set(prom.query("crossdock_nats_connected").values()) == {1.0}
    assert prom.alerts("CrossdockDeadLetters") == []

    # A delivery for a warehouse WMS does not know yet: a permanent error, dead-lettered.
    warehouse = f"WH-{uuid.uuid4().hex[:8].upper()}"
    receipt = f"RCPT-{warehouse}"
    await publish(nc_mesh, "cmd.wms.stock.receive", repl.ReceiveStock(
        receipt_id=receipt, warehouse_id=warehouse, lines=[SkuQuantity(sku="SKU-ALERT", quantity=7)]),
        key=receipt, source="erp")

    def firing():
        return [a for a in prom.alerts("CrossdockDeadLetters")
                if a["labels"].get("consumer") == "wms-commands" and a["state"] == "firing"]
    (alert,) = await eventually(firing, timeout=60, what="CrossdockDeadLetters firing for wms-commands")
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "1 dead letter(s) waiting for consumer wms-commands"
    assert alert["annotations"]["runbook_url"] == "README.md#crossdockdeadletters"

    stubs = Stubs(mesh)
    try:
        admin = admin_pb2_grpc.DeadLetterServiceStub(stubs.channels[1])
        listed = await admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(consumer="wms-commands"))
        letters = listed.dead_letters
        (letter,) = [d for d in letters if receipt in d.body_json]
        # The headers the catalog documents are the ones a real dead letter carries.
        assert {h for h in letter.headers if h.startswith("crossdock-dlq-")} == set(catalog.DLQ_HEADERS)
        assert letter.permanent and warehouse in letter.reason

        # The cause fixed (the warehouse set up), the operator replays it.
        await stubs.wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(
            warehouse_id=warehouse, name="new DC", address=Address(country_code="US"))))
        cli = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.cli", "dlq", "replay", letter.dead_letter_id],
            env={**os.environ, "CROSSDOCK_ORDERTOSHIP_ADDR": mesh.addr("ordertoship"), "COLUMNS": "200"},
            capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr

        async def received():
            resp = await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
                skus=["SKU-ALERT"], warehouse_id=warehouse))
            return any(p.on_hand == 7 for p in resp.positions)
        await eventually(received, timeout=30, what="the replayed receipt booked")
    finally:
        await stubs.close()

    await eventually(lambda: not prom.alerts("CrossdockDeadLetters"), timeout=60,
                     what="CrossdockDeadLetters resolved after the replay")
    waiting = prom.query('crossdock_dead_letters{consumer="wms-commands"}')
    assert waiting and set(waiting.values()) == {0.0}
