"""`crossdock status`: a live view of the mesh; `crossdock trace ORDER_ID`: an order's span tree.

``status`` reads, at every refresh:
- each service's gRPC health (at its configured address, every replica);
- every stream and durable consumer straight from NATS JetStream (queue depth
  = num_pending, in flight = num_ack_pending, redeliveries, seconds since the
  consumer last delivered), and the dead-letter stream per consumer;
- the services' Prometheus endpoints (port files ``<data_dir>/<service>-metrics.port``
  written by the services, or ``CROSSDOCK_<SERVICE>_METRICS_URL``): messages
  handled, retries, dead letters, event processing lag, gRPC latency, business
  exceptions and the business timings.

``trace`` takes the trace id recorded on the order (GetOrder) and prints the
span tree from a Jaeger query API (``CROSSDOCK_JAEGER_QUERY_URL``, e.g.
http://localhost:16686).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from services.mesh.config import SERVICES, load_settings
from services.mesh.launcher import supervisor_state

from .rpc import Stubs

app = typer.Typer()

console = Console()

TIMING_LABELS = {
    "order_release_delay": "order release delay (received → released)",
    "shipment_posting_lag": "shipment posting lag (shipped → posted to ERP)",
    "invoice_timing": "invoice timing (posted → invoiced)",
    "order_completion": "end-to-end completion (created → invoiced)",
    "inventory_update_freshness": "inventory freshness (WMS move → ERP ledger)",
}


@dataclass
class Histogram:
    count: float = 0.0
    sum: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def merge(self, other: Histogram) -> None:
        self.count += other.count
        self.sum += other.sum
        for le, n in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + n

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (Prometheus-style estimate)."""
        if not self.count:
            return None
        rank = q * self.count
        for le in sorted(self.buckets):
            if self.buckets[le] >= rank:
                return le
        return None


@dataclass
class Scrape:
    """What one service's /metrics said (or why it could not be read)."""

    service: str
    url: str = ""
    error: str = ""
    counters: dict[tuple[str, tuple], float] = field(default_factory=dict)
    histograms: dict[tuple[str, tuple], Histogram] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float:
        return sum(v for (n, labels), v in self.counters.items()
                   if n == name and all(dict(labels).get(k) == x for k, x in match.items()))

    def histogram(self, name: str, **match: str) -> Histogram:
        h = Histogram()
        for (n, labels), v in self.histograms.items():
            if n == name and all(dict(labels).get(k) == x for k, x in match.items()):
                h.merge(v)
        return h


def parse_metrics(service: str, text: str) -> Scrape:
    out = Scrape(service)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if family.type == "histogram":
                h = out.histograms.setdefault((family.name, labels), Histogram())
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    h.buckets[le] = h.buckets.get(le, 0.0) + s.value
                elif s.name.endswith("_count"):
                    h.count += s.value
                elif s.name.endswith("_sum"):
                    h.sum += s.value
            elif family.type in ("counter", "gauge") and not s.name.endswith("_created"):
                out.counters[(family.name, labels)] = s.value
    return out


def metrics_urls() -> dict[str, str]:
    """service[instance] -> /metrics URL, from env overrides and the services' port files."""
    s = load_settings()
    urls: dict[str, str] = {}
    for name in SERVICES:
        if url := os.environ.get(f"CROSSDOCK_{name.upper()}_METRICS_URL"):
            urls[name] = url
            continue
        for path in sorted(s.data_dir.glob(f"{name}*-metrics.port")):
            instance = path.name.removesuffix("-metrics.port")
            if instance != name and not instance.removeprefix(name).startswith("-"):
                continue  # another service whose name starts the same
            try:
                urls[instance] = f"http://127.0.0.1:{int(path.read_text())}/metrics"
            except ValueError:
                pass
    return urls


def scrape(service: str, url: str, timeout: float = 2.0) -> Scrape:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local endpoints
            out = parse_metrics(service, resp.read().decode())
    except (OSError, ValueError) as exc:
        out = Scrape(service, error=str(exc))
    out.url = url
    return out


async def health(stubs: Stubs, service: str, addr: str) -> str:
    """One replica's health (its own channel: the view shows every replica)."""
    try:
        r = await stubs.health(service, addr).Check(health_pb2.HealthCheckRequest(), timeout=1.5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    except grpc.aio.AioRpcError as err:
        return "DOWN" if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
            else err.code().name


@dataclass
class Snapshot:
    health: dict[str, str]
    streams: list[tuple]  # (stream, messages, bytes, consumers)
    consumers: list[tuple]  # (stream, consumer, pending, ack_pending, redelivered, idle_s)
    dead_letters: dict[str, int]
    scrapes: list[Scrape]
    nats_error: str = ""
    taken: datetime = field(default_factory=lambda: datetime.now(UTC))
    # What `crossdock up`'s supervisor last wrote: restarts per process ({} when none runs).
    supervised: dict[str, dict] = field(default_factory=dict)


async def _nats(url: str) -> tuple[list, list, dict, str]:
    import nats

    streams, consumers, dlq = [], [], {}
    try:
        async def quiet(_exc: Exception) -> None:  # the failure is shown in the view instead
            pass

        nc = await asyncio.wait_for(nats.connect(
            servers=[u.strip() for u in url.split(",")], connect_timeout=2, max_reconnect_attempts=1,
            reconnect_time_wait=0.2, error_cb=quiet), timeout=4)
    except Exception as exc:  # noqa: BLE001
        return streams, consumers, dlq, f"NATS at {url}: {exc!r}"
    try:
        js = nc.jsm()
        now = datetime.now(UTC)
        for info in await js.streams_info():
            name = info.config.name
            streams.append((name, info.state.messages, info.state.bytes, info.state.consumer_count))
            if name == "DLQ":
                if info.state.messages:
                    detail = await js.stream_info("DLQ", subjects_filter="dlq.>")
                    for subject, n in (detail.state.subjects or {}).items():
                        dlq[subject.removeprefix("dlq.")] = n
                continue
            for c in await js.consumers_info(name):
                last = getattr(c.delivered, "last_active", None)
                idle = None
                if isinstance(last, datetime):
                    idle = (now - (last if last.tzinfo else last.replace(tzinfo=UTC))).total_seconds()
                consumers.append((name, c.name, c.num_pending or 0, c.num_ack_pending or 0,
                                  c.num_redelivered or 0, idle))
    except Exception as exc:  # noqa: BLE001
        return streams, consumers, dlq, f"NATS: {exc!r}"
    finally:
        await nc.close()
    return streams, consumers, dlq, ""


async def snapshot() -> Snapshot:
    s = load_settings()
    targets = {}
    for name in SERVICES:
        addrs = [a.strip() for a in s.addr(name).split(",") if a.strip()]
        for i, addr in enumerate(addrs):
            targets[name if len(addrs) == 1 else f"{name}#{i + 1}"] = (name, addr)
    async with Stubs(s) as stubs:
        states = await asyncio.gather(*(health(stubs, n, a) for n, a in targets.values()))
    (streams, consumers, dlq, nats_error) = await _nats(s.nats_url)
    urls = metrics_urls()
    scrapes = await asyncio.gather(*(asyncio.to_thread(scrape, svc, url) for svc, url in urls.items()))
    supervised = supervisor_state(s.resolved_data_dir).get("processes", {})
    return Snapshot(dict(zip(targets, states, strict=True)), streams, consumers, dlq, list(scrapes),
                    nats_error, supervised=supervised)


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min"


def render(snap: Snapshot) -> Group:
    by_service = {sc.service: sc for sc in snap.scrapes}
    services = Table(title="services", title_justify="left")
    for col in ("service", "health", "restarts", "metrics", "handled", "retries", "dead-lettered",
                "event lag p95", "gRPC calls", "gRPC p95"):
        services.add_column(col, justify="left" if col in ("service", "health", "metrics") else "right")
    for name, state in snap.health.items():
        sc = by_service.get(name.split("#")[0])
        colour = {"SERVING": "green", "DOWN": "red"}.get(state, "yellow")
        sup = snap.supervised.get(name.removesuffix("#1"))
        restarts = "-" if sup is None else str(sup.get("restarts", 0)) + (
            " [yellow](restarting)[/yellow]" if sup.get("state") == "restarting" else "")
        row = [name, f"[{colour}]{state}[/{colour}]", restarts]
        if sc is None or sc.error:
            row += ["[dim]-[/dim]" if sc is None else "[red]unreachable[/red]", *["-"] * 6]
        else:
            rpc = sc.histogram("crossdock_grpc_server_handling_seconds")
            row += ["ok", f"{sc.total('crossdock_messages_handled'):.0f}",
                    f"{sc.total('crossdock_message_retries'):.0f}",
                    f"{sc.total('crossdock_messages_dead_lettered'):.0f}",
                    _secs(sc.histogram("crossdock_event_processing_lag_seconds").quantile(0.95)),
                    f"{rpc.count:.0f}", _secs(rpc.quantile(0.95))]
        services.add_row(*row)

    queues = Table(title="consumers (JetStream)", title_justify="left")
    for col in ("stream", "consumer", "pending", "in flight", "redelivered", "last delivery", "dead letters"):
        queues.add_column(col, justify="left" if col in ("stream", "consumer") else "right")
    for stream, consumer, pending, ack_pending, redelivered, idle in sorted(snap.consumers):
        dead = snap.dead_letters.get(consumer, 0)
        queues.add_row(stream, consumer, f"[yellow]{pending}[/yellow]" if pending else "0", str(ack_pending),
                       str(redelivered), "-" if idle is None else f"{_secs(idle)} ago",
                       f"[red]{dead}[/red]" if dead else "0")
    for consumer, n in sorted(snap.dead_letters.items()):
        if not any(c[1] == consumer for c in snap.consumers):
            queues.add_row("DLQ", consumer, "-", "-", "-", "-", f"[red]{n}[/red]")

    business = Table(title="business timings", title_justify="left")
    for col in ("timing", "count", "mean", "p50 ≤", "p95 ≤"):
        business.add_column(col, justify="left" if col == "timing" else "right")
    for name, label in TIMING_LABELS.items():
        h = Histogram()
        for sc in snap.scrapes:
            h.merge(sc.histogram(f"crossdock_{name}_seconds"))
        business.add_row(label, f"{h.count:.0f}", _secs(h.mean), _secs(h.quantile(0.5)),
                         _secs(h.quantile(0.95)))
    exceptions: dict[str, float] = {}
    finished: dict[str, float] = {}
    for sc in snap.scrapes:
        for (n, labels), v in sc.counters.items():
            if n == "crossdock_business_exceptions":
                exceptions[dict(labels)["kind"]] = exceptions.get(dict(labels)["kind"], 0) + v
            elif n == "crossdock_orders_finished":
                finished[dict(labels)["status"]] = finished.get(dict(labels)["status"], 0) + v
    done = sum(finished.values())
    footer = ("orders finished: " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(finished.items())) or "none")
              + (f" (success rate {finished.get('INVOICED', 0) / done:.0%})" if done else "")
              + " · business exceptions: "
              + (", ".join(f"{k} {v:.0f}" for k, v in sorted(exceptions.items())) or "none"))
    parts = [f"[bold]crossdock status[/bold] {snap.taken:%H:%M:%S} UTC", services, queues, business, footer]
    if snap.nats_error:
        parts.insert(1, f"[red]{snap.nats_error}[/red]")
    if not snap.scrapes:
        parts.append("[dim]no metrics endpoints found (port files in the data folder, or "
                     "CROSSDOCK_<SERVICE>_METRICS_URL)[/dim]")
    return Group(*parts)


@app.command()
def status(once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
           interval: Annotated[float, typer.Option(help="seconds between refreshes", min=0.5)] = 2.0) -> None:
    """Live view: services and health, queue depths and lags, dead letters, business timings."""
    if once:
        console.print(render(asyncio.run(snapshot())))
        return

    async def main() -> None:
        with Live(render(await snapshot()), console=console, screen=False, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snapshot()), refresh=True)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# ---- crossdock trace ----

def jaeger_tree(payload: dict, trace_id: str) -> Tree:
    """The span tree of a Jaeger query API answer (GET /api/traces/<id>)."""
    data = (payload.get("data") or [{}])[0]
    processes = {pid: p.get("serviceName", "?") for pid, p in (data.get("processes") or {}).items()}
    spans = {s["spanID"]: s for s in data.get("spans", [])}
    children: dict[str, list[dict]] = {}
    roots = []
    for s in spans.values():
        parent = next((r["spanID"] for r in s.get("references", []) if r.get("refType") == "CHILD_OF"), None)
        if parent and parent in spans:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    start0 = min((s["startTime"] for s in spans.values()), default=0)
    tree = Tree(f"trace {trace_id} ({len(spans)} spans)")

    def add(node: Tree, s: dict) -> None:
        kind = next((t["value"] for t in s.get("tags", []) if t.get("key") == "span.kind"), "")
        label = (f"[cyan]{processes.get(s.get('processID'), '?')}[/cyan] {s['operationName']}"
                 + (f" [dim]{kind}[/dim]" if kind else "")
                 + f"  +{(s['startTime'] - start0) / 1000:.1f} ms, {s.get('duration', 0) / 1000:.1f} ms")
        sub = node.add(label)
        for c in sorted(children.get(s["spanID"], []), key=lambda x: x["startTime"]):
            add(sub, c)

    for r in sorted(roots, key=lambda x: x["startTime"]):
        add(tree, r)
    return tree


@app.command("trace")
def trace_cmd(order_id: str) -> None:
    """Print an order's span tree from Jaeger (CROSSDOCK_JAEGER_QUERY_URL)."""
    async def get() -> pb.Order:
        async with Stubs() as s:
            return (await s.ots.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10)).order

    try:
        order = asyncio.run(get())
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        raise typer.Exit(1) from None
    if not order.trace_id:
        console.print(f"{order_id} has no trace id recorded")
        raise typer.Exit(1)
    base = os.environ.get("CROSSDOCK_JAEGER_QUERY_URL", "").rstrip("/")
    if not base:
        console.print(f"{order_id}: trace {order.trace_id}\nSet CROSSDOCK_JAEGER_QUERY_URL to the Jaeger "
                      "query API (e.g. http://localhost:16686) to print its spans.")
        raise typer.Exit(1)
    url = f"{base}/api/traces/{order.trace_id}"
    payload = None
    # Spans reach Jaeger in batches: a just-finished order may need a moment.
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - operator-given URL
                payload = json.loads(resp.read())
            break
        except urllib.error.HTTPError as err:
            if err.code != 404 or attempt == 2:
                console.print(f"[red]{url}: HTTP {err.code}[/red] (trace not found in Jaeger?)")
                raise typer.Exit(1) from None
        except (OSError, ValueError) as exc:
            console.print(f"[red]{url}: {exc}[/red]")
            raise typer.Exit(1) from None
        time.sleep(1)
    status_name = pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
    console.print(f"[bold]{order.order_id}[/bold] {status_name}")
    console.print(jaeger_tree(payload or {}, order.trace_id))

