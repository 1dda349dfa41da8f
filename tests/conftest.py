"""Shared fixtures: a real nats-server on a free port, services as real
processes, and helpers that wait on conditions with a deadline."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from services.mesh.launcher import NatsServer, ServiceProcess
from tests.helpers import EventLog


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server):
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture
def start_service(nats_server, tmp_path: Path):
    """Start services as real processes; all are stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(name: str, **env: str) -> ServiceProcess:
        base = {
            "CROSSDOCK_NATS_URL": nats_server.url,
            "CROSSDOCK_DATA_DIR": str(tmp_path),
            "CROSSDOCK_ACK_WAIT": "5",
        }
        proc = ServiceProcess(name, tmp_path, {**base, **env})
        proc.start()
        proc.wait_healthy()
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
async def events(nc):
    """Factory: ``log = await events(["tms.>"])``."""
    logs: list[EventLog] = []

    async def make(subjects: list[str]) -> EventLog:
        log = await EventLog().start(nc, subjects)
        logs.append(log)
        return log

    yield make


