"""The NATS configuration of deploy/k8s, run for real: three local nats-server
nodes started from the rendered ConfigMap (only addresses and paths changed
to local ones) with the dev overlay's users, then every service connects as
its own user and does what it does at start (services.mesh.bus: the streams at
3 replicas, its durable consumers from its own bootstrap) and what its
permissions must allow or refuse: publishing its subjects and not the others',
consuming and acking, no stream deletion.

Who publishes what is the design's rule: a domain's events (`erp.*`) only by
its service, commands (`cmd.*`) only by the process service that sends them."""

from __future__ import annotations

import asyncio
import importlib
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nats
import nats.errors
import nats.js.errors
import pytest

from services.mesh import contracts
from services.mesh.bus import Bus, Consumer
from services.mesh.config import Settings
from tests.helpers import eventually

from .conftest import REPO, Rendered, secret_by_ref, tool


def designated_publishers(subject: str) -> set[str]:
    senders = contracts.publishers(subject)
    assert senders, (
        f"{subject}: which service sends it? Add it to COMMAND_SENDERS in services/mesh/contracts.py "
        "and allow that service to publish it in deploy/k8s/base/nats/nats.conf")
    return senders


def has_module(service: str) -> bool:
    return (REPO / "services" / service / "__main__.py").exists()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def localize(conf: str, node: int, client: int, monitor: int, cluster_ports: list[int],
             folder: Path) -> str:
    """The k8s config with local addresses and paths; each replacement must apply."""
    replacements = [
        (r"^listen: 0\.0\.0\.0:4222$", f"listen: 127.0.0.1:{client}"),
        (r"^http: 0\.0\.0\.0:8222$", f"http: 127.0.0.1:{monitor}"),
        (r"^pid_file: .*$", f"pid_file: {folder}/nats.pid"),
        (r"^(\s+)store_dir: /data/jetstream$", rf"\1store_dir: {folder}/jetstream"),
        (r"^(\s+)listen: 0\.0\.0\.0:6222$", rf"\1listen: 127.0.0.1:{cluster_ports[node]}"),
    ]
    for pattern, repl in replacements:
        conf, count = re.subn(pattern, repl, conf, flags=re.M)
        assert count == 1, f"nats.conf no longer has a line matching {pattern!r}"
    conf, count = re.subn(
        r"nats-route://nats-(\d)\.nats-headless:6222",
        lambda m: f"nats-route://127.0.0.1:{cluster_ports[int(m.group(1))]}",
        conf,
    )
    assert count == 3, "nats.conf should route to nats-0..2.nats-headless:6222"
    return conf


@pytest.fixture(scope="module")
def nats_cluster(rendered: dict[str, Rendered], secrets, tmp_path_factory):
    r = rendered["dev"]
    conf = r.get("ConfigMap", "nats-config")["data"]["nats.conf"]
    sts = r.get("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    users_ref = next(s["secret"]["name"]
                     for v in sts["spec"]["template"]["spec"]["volumes"] if "projected" in v
                     for s in v["projected"]["sources"] if "secret" in s)
    users_conf = secret_by_ref(secrets["dev"], users_ref)["users.conf"]

    n = 3
    ports = free_ports(3 * n)
    clients, monitors, cluster_ports = ports[:n], ports[n:2 * n], ports[2 * n:]
    procs = []
    try:
        for i in range(n):
            folder = tmp_path_factory.mktemp(f"nats-{i}")
            (folder / "users.conf").write_text(users_conf)
            (folder / "nats.conf").write_text(
                localize(conf, i, clients[i], monitors[i], cluster_ports, folder))
            log = open(folder / "nats.log", "w")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen(
                [tool("nats-server"), "-c", str(folder / "nats.conf")],
                stdout=log, stderr=subprocess.STDOUT,
                env={"POD_NAME": f"nats-{i}", **env},
            ), folder, log))
        deadline = time.monotonic() + 45
        for i in range(n):
            while True:
                assert procs[i][0].poll() is None, (
                    f"nats-{i} exited:\n{(procs[i][1] / 'nats.log').read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{monitors[i]}/healthz",
                                                timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (
                    f"nats-{i} not healthy:\n{(procs[i][1] / 'nats.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield SimpleNamespace(url=f"nats://127.0.0.1:{clients[0]}",
                              urls=[f"nats://127.0.0.1:{p}" for p in clients])
    finally:
        for proc, _, _log in procs:
            proc.terminate()
        for proc, _, log in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def service_credentials(rendered: dict[str, Rendered], secrets, service: str) -> tuple[str, str]:
    deployment = rendered["dev"].get("Deployment", service)
    ref = next(v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "secret" in v)
    values = secret_by_ref(secrets["dev"], ref)
    return values["CROSSDOCK_NATS_USER"], values["CROSSDOCK_NATS_PASSWORD"]


class _BootstrapRecorder:
    """Stands in for ServiceApp in a service's bootstrap: records its consumers."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.store = None
        self.clients = None
        self.consumers: list[SimpleNamespace] = []

    def add_consumer(self, durable: str, *args, **kwargs) -> None:
        sub = contracts.SUBSCRIPTIONS[durable]
        self.consumers.append(SimpleNamespace(durable=durable, stream=sub.stream, subjects=list(sub.filters)))

    def __getattr__(self, name: str):  # add_servicer, add_loop, ...: nothing to do here
        return lambda *args, **kwargs: None


def consumers_of(service: str) -> list[SimpleNamespace]:
    """The durable consumers a service registers at start (its own bootstrap)."""
    module = importlib.import_module(f"services.{service}.__main__")
    app = _BootstrapRecorder()
    module.bootstrap(app)
    return app.consumers


def with_credentials(url: str, user: str, password: str) -> str:
    return url.replace("nats://", f"nats://{user}:{password}@", 1)


def test_cluster_forms_with_the_k8s_config(nats_cluster):
    assert len(nats_cluster.urls) == 3


async def retry_unavailable(call, attempts: int = 60):
    """Retry "JetStream unavailable" (a leader election on a loaded machine), as a service's start does."""
    for attempt in range(attempts):
        try:
            return await call()
        except nats.js.errors.ServiceUnavailableError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def test_services_work_within_their_nats_permissions(nats_cluster, rendered, secrets):
    services = [d["metadata"]["name"] for d in rendered["dev"].services()]
    violations: dict[str, list[str]] = {s: [] for s in services}
    buses: dict[str, Bus] = {}

    def recorder(service: str):
        async def on_error(exc: Exception) -> None:
            violations[service].append(str(exc))
        return on_error

    try:
        # What every service does at start: connect and provision the streams
        # (3 replicas, as CROSSDOCK_STREAM_REPLICAS=3 in the ConfigMap).
        replicas = int(rendered["dev"].get("ConfigMap", "crossdock-config")["data"][
            "CROSSDOCK_STREAM_REPLICAS"])
        assert replicas == 3
        for service in services:
            user, password = service_credentials(rendered, secrets, service)
            bus = Bus(service, with_credentials(nats_cluster.url, user, password), replicas=replicas)
            await bus.connect()
            bus.nc._error_cb = recorder(service)  # collect permission errors
            # A loaded machine may still be electing the JetStream meta leader:
            # retry "JetStream unavailable" as a service's start does.
            await retry_unavailable(bus.ensure_streams)
            buses[service] = bus
        info = await buses["erp"].js.stream_info("CMD_ERP")
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2

        # Publishing: its own subjects are stored; anyone else's are refused.
        published = 0
        for subject in contracts.SUBJECTS:
            allowed = designated_publishers(subject)
            for service, bus in buses.items():
                if service in allowed:
                    ack = await bus.js.publish(subject, b"", headers={"Nats-Msg-Id": f"{service}-{subject}"},
                                               timeout=5)
                    assert ack.stream == contracts.stream_for(subject)
                    published += 1
                else:
                    await bus.nc.publish(subject, b"")
        for bus in buses.values():
            await bus.nc.flush()
        # The server's -ERR may arrive after the flush's PONG: wait for them.
        def refusals_match() -> bool:
            for service in services:
                refused = {m.group(1) for v in violations[service]
                           if (m := re.search(r'publish to "([^"]+)"', v, re.I))}
                expected = {s for s in contracts.SUBJECTS if service not in designated_publishers(s)}
                assert refused == expected, (
                    f"{service}: NATS refused {sorted(refused)}, the design says {sorted(expected)}: "
                    f"see the publish allow-list of user {service} in deploy/k8s/base/nats/nats.conf")
            return True

        await eventually(refusals_match, timeout=10, what="the publish refusals")
        for service in services:
            violations[service].clear()
        stored = 0
        for stream in contracts.STREAMS:
            stored += (await buses["erp"].js.stream_info(stream)).state.messages
        assert stored == published

        # Consuming: each service's durable consumers, created and bound as at
        # start, receive and ack.
        for service, bus in buses.items():
            if not has_module(service):
                continue  # deployed ahead of its code: nothing registers consumers yet
            for c in consumers_of(service):
                consumer = Consumer(store=None, bus=bus, durable=c.durable, stream=c.stream,
                                    subjects=c.subjects, handlers={}, max_deliver=3, ack_wait=5)
                sub = await retry_unavailable(consumer.subscribe)
                msgs = await retry_unavailable(lambda: sub.fetch(1, timeout=5))  # noqa: B023 - awaited here
                assert msgs, f"{service}/{c.durable}: nothing to consume"
                await msgs[0].ack_sync(timeout=5)
                await sub.unsubscribe()
                # It reads the advisories of the messages it gave up on (nothing yet).
                given_up = await retry_unavailable(consumer.subscribe_given_up)
                with pytest.raises(nats.errors.TimeoutError):
                    await given_up.fetch(1, timeout=0.5)
                await given_up.unsubscribe()
                # Its consumed subjects are in its subscribe allow-list (the design).
                for subject in c.subjects:
                    s = await bus.nc.subscribe(subject)
                    await s.unsubscribe()
            # A sentinel every user is refused: once its -ERR is back, any
            # refusal of the subscriptions above is back too (in order).
            await bus.nc.publish("crossdock.sentinel.forbidden", b"")
            await bus.nc.flush()

        async def sentinels_refused() -> bool:
            # A connection that moved to another node under load may have lost its sentinel
            # (published while it reconnected): publish it again until its refusal is back.
            waiting = [s for s in services
                       if not any("crossdock.sentinel.forbidden" in v.lower() for v in violations[s])]
            for s in waiting:
                await buses[s].nc.publish("crossdock.sentinel.forbidden", b"")
                await buses[s].nc.flush()
            assert not waiting, f"no refusal of the sentinel back yet for {waiting}"
            return True

        await eventually(sentinels_refused, timeout=30, interval=0.5, what="the sentinel refusals")
        for service in services:
            violations[service] = [v for v in violations[service]
                                   if "crossdock.sentinel.forbidden" not in v.lower()]
            assert not violations[service], (
                f"{service}: {violations[service]}: a consumer of the service was added or "
                f"changed; list its subjects in the subscribe allow-list of user {service} in "
                "deploy/k8s/base/nats/nats.conf")

        # No service may delete a stream or consume the world's messages directly.
        js = buses["erp"].nc.jetstream(timeout=1)
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream("WMS")
        await buses["erp"].nc.subscribe("tms.>")
        await buses["erp"].nc.flush()
        # (nats-py lower-cases the server's -ERR text)
        await eventually(lambda: any('permissions violation for publish to "$js.api.stream.delete.wms"'
                                     in v.lower() for v in violations["erp"])
                         and any('permissions violation for subscription to "tms.>"' in v.lower()
                                 for v in violations["erp"]), timeout=10, what="erp's refusals")
        assert (await buses["wms"].js.stream_info("WMS")).config.name == "WMS"
    finally:
        for bus in buses.values():
            await bus.close()


async def test_wrong_password_is_refused(nats_cluster):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(with_credentials(nats_cluster.url, "erp", "not-the-password"),
                           max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2)
