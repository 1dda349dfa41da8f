"""`crossdock up` supervises its processes: a service that crashes is restarted
with back-off (and `crossdock status` says so), and nothing it started
outlives a launcher killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.mesh.config import SERVICES
from services.mesh.launcher import free_port
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by the dead launcher's init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _state(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "supervisor.json").read_text())["processes"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}


async def _serving(addr: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return r.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        return False


async def test_a_crashed_service_is_restarted_and_every_child_dies_with_its_launcher(tmp_path: Path):
    data = tmp_path / "mesh"
    addrs = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
    env = {**os.environ, "CROSSDOCK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
           "CROSSDOCK_GATEWAY_HTTP_PORT": str(free_port()), "CROSSDOCK_DATA_DIR": str(data),
           **{f"CROSSDOCK_{name.upper()}_ADDR": addr for name, addr in addrs.items()}}
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    launcher = subprocess.Popen(  # noqa: ASYNC220 - started, not waited for
        [sys.executable, "-m", "services.cli", "up", "--demo", "0"], env=env, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        await eventually(lambda: b"serving" in (tmp_path / "up.log").read_bytes(), timeout=120,
                         what=f"the mesh up and seeded (see {tmp_path / 'up.log'})")
        started = _state(data)
        assert all(started.get(n, {}).get("alive") for n in SERVICES), started
        pids = {key: p["pid"] for key, p in started.items()}
        assert set(SERVICES) | {"nats"} <= set(pids)

        os.kill(pids["tms"], signal.SIGKILL)
        restarted = await eventually(
            lambda: (p := _state(data).get("tms", {})) and p["restarts"] == 1 and p["alive"] and p,
            timeout=60, what="tms restarted by the supervisor")
        assert restarted["pid"] != pids["tms"] and restarted["last_exit"] == -signal.SIGKILL
        await eventually(lambda: _serving(addrs["tms"]), timeout=60, what="the restarted tms serving")

        status = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.cli", "status", "--once"], env=env,
            capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:]]
                for line in status.stdout.splitlines() if line.count("│") > 3}
        assert rows["tms"][2] == "1" and rows["erp"][2] == "0", status.stdout

        children = {key: p["pid"] for key, p in _state(data).items()}
        launcher.kill()
        launcher.wait(10)
        await eventually(lambda: not any(_alive(pid) for pid in children.values()), timeout=60,
                         what=f"every child of the killed launcher gone: {children}")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        log.close()
        for p in _state(data).values():  # never leave a process behind, whatever failed
            if p.get("pid") and _alive(p["pid"]):
                os.kill(p["pid"], signal.SIGKILL)
