"""Flow health from the services' own metrics: every CROSSDOCK_CONSOLE_METRICS_INTERVAL
seconds the gateway reads each service's /metrics (found as `crossdock status` finds them:
<data dir>/<service>-metrics.port, or CROSSDOCK_<SERVICE>_METRICS_URL) and keeps an hour
of samples in memory; the health page draws the last hour from them."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.mesh.config import SERVICES, Settings

# The business timings (histograms, seconds) and who exports them.
TIMINGS = {
    "crossdock_order_release_delay_seconds": "Order release delay (received → released to the warehouse)",
    "crossdock_shipment_posting_lag_seconds": "Shipment posting lag (shipped in WMS → posted to ERP)",
    "crossdock_inventory_update_freshness_seconds": "Inventory freshness (WMS movement → ERP ledger)",
    "crossdock_invoice_timing_seconds": "Invoice timing (posted to ERP → invoiced)",
    "crossdock_order_completion_seconds": "End-to-end completion (created → invoiced)",
}
GAUGES = ("crossdock_service_ready", "crossdock_nats_connected", "crossdock_consumer_pending_messages",
          "crossdock_consumer_ack_pending_messages", "crossdock_dead_letters")
COUNTERS = ("crossdock_message_retries_total", "crossdock_messages_dead_lettered_total",
            "crossdock_messages_handled_total")


@dataclass
class Sample:
    at: float
    up: dict[str, bool] = field(default_factory=dict)  # service -> its /metrics answered
    gauges: dict[tuple[str, str, tuple], float] = field(default_factory=dict)  # (service, name, labels)
    counters: dict[str, float] = field(default_factory=dict)  # name -> sum over every service
    histograms: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (sum, count)


def parse(service: str, text: str, sample: Sample) -> None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted(s.labels.items()))
            if family.name in GAUGES or s.name in GAUGES:
                sample.gauges[(service, s.name, labels)] = s.value
            elif s.name in COUNTERS:
                sample.counters[s.name] = sample.counters.get(s.name, 0.0) + s.value
            elif family.name + "_seconds" in TIMINGS or family.name in TIMINGS:
                name = family.name if family.name in TIMINGS else family.name + "_seconds"
                total, count = sample.histograms.get(name, (0.0, 0.0))
                if s.name.endswith("_sum"):
                    total += s.value
                elif s.name.endswith("_count"):
                    count += s.value
                sample.histograms[name] = (total, count)


def series(samples: list[Sample], metric: str) -> list[tuple[float, float | None]]:
    """The mean of a timing between consecutive samples ((Δsum / Δcount), None when nothing
    was observed in between): one point per interval, over the samples kept."""
    out = []
    for a, b in zip(samples, samples[1:], strict=False):
        sa, ca = a.histograms.get(metric, (0.0, 0.0))
        sb, cb = b.histograms.get(metric, (0.0, 0.0))
        out.append((b.at, (sb - sa) / (cb - ca) if cb > ca else None))
    return out


def rate(samples: list[Sample], counter: str) -> list[tuple[float, float | None]]:
    """Per-interval increase of a counter summed over the services (a restart's reset counts 0)."""
    out = []
    for a, b in zip(samples, samples[1:], strict=False):
        out.append((b.at, max(0.0, b.counters.get(counter, 0.0) - a.counters.get(counter, 0.0))))
    return out


def sparkline(points: list[tuple[float, float | None]], width: int = 300, height: int = 60) -> str:
    """SVG polyline points for values over the last hour ('' with fewer than two values)."""
    values = [(t, v) for t, v in points if v is not None]
    if len(values) < 2:
        return ""
    t0, t1 = values[0][0], values[-1][0]
    top = max(v for _, v in values) or 1.0
    span = (t1 - t0) or 1.0
    return " ".join(f"{(t - t0) / span * width:.1f},{height - 4 - v / top * (height - 8):.1f}"
                    for t, v in values)


class Sampler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: deque[Sample] = deque(maxlen=int(3600 / settings.console_metrics_interval) + 1)

    def urls(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        for name in SERVICES:
            if url := os.environ.get(f"CROSSDOCK_{name.upper()}_METRICS_URL"):
                urls[name] = url
                continue
            path = self.settings.data_dir / f"{name}-metrics.port"
            try:
                urls[name] = f"http://127.0.0.1:{int(path.read_text())}/metrics"
            except (FileNotFoundError, ValueError):
                pass
        return urls

    async def sample_once(self) -> Sample:
        sample = Sample(time.time())
        async with httpx.AsyncClient(timeout=2.0) as http:
            async def one(service: str, url: str) -> None:
                try:
                    r = await http.get(url)
                    r.raise_for_status()
                    parse(service, r.text, sample)
                    sample.up[service] = True
                except (httpx.HTTPError, ValueError):
                    sample.up[service] = False

            await asyncio.gather(*(one(s, u) for s, u in self.urls().items()))
        self.samples.append(sample)
        return sample

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.sample_once()
            try:
                await asyncio.wait_for(stopping.wait(), self.settings.console_metrics_interval)
            except TimeoutError:
                pass
