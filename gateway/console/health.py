"""Flow health: service health, consumer backlog per stream, dead letters, retry volume and
the business timings over the last hour, from the samples of the services' own metrics."""

from __future__ import annotations

from fastapi import FastAPI, Request

from services.mesh.config import SERVICES

from . import sampler
from .web import Web


def add(app: FastAPI, web: Web) -> None:
    s: sampler.Sampler = web.core.sampler

    @app.get("/health")
    async def health(request: Request):
        await web.reader(request, "health.view")
        if not s.samples:
            await s.sample_once()
        samples = list(s.samples)
        last = samples[-1]
        services = []
        for name in SERVICES:
            ready = last.gauges.get((name, "crossdock_service_ready", ()))
            services.append({"name": name, "answered": last.up.get(name), "ready": ready == 1.0,
                             "nats": last.gauges.get((name, "crossdock_nats_connected", ())) == 1.0})
        backlog: dict[tuple[str, str], dict] = {}
        dead: dict[str, float] = {}
        for (_service, name, labels), value in last.gauges.items():
            ls = dict(labels)
            if name in ("crossdock_consumer_pending_messages", "crossdock_consumer_ack_pending_messages"):
                row = backlog.setdefault((ls.get("stream", ""), ls.get("consumer", "")),
                                         {"pending": 0, "ack": 0})
                row["pending" if name == "crossdock_consumer_pending_messages" else "ack"] = max(
                    row["pending" if name == "crossdock_consumer_pending_messages" else "ack"], int(value))
            elif name == "crossdock_dead_letters":
                dead[ls.get("consumer", "")] = max(dead.get(ls.get("consumer", ""), 0), value)
        charts = []
        for metric, title in sampler.TIMINGS.items():
            points = sampler.series(samples, metric)
            values = [v for _, v in points if v is not None]
            charts.append({"title": title, "points": sampler.sparkline(points),
                           "last": values[-1] if values else None, "peak": max(values) if values else None})
        retries = sampler.rate(samples, "crossdock_message_retries_total")
        dlq_rate = sampler.rate(samples, "crossdock_messages_dead_lettered_total")
        return web.page(request, "health.html", services=services, backlog=sorted(backlog.items()),
                        dead={k: int(v) for k, v in sorted(dead.items()) if v}, charts=charts,
                        retries={"points": sampler.sparkline(retries),
                                 "total": int(sum(v or 0 for _, v in retries))},
                        dead_lettered=int(sum(v or 0 for _, v in dlq_rate)),
                        minutes=int((samples[-1].at - samples[0].at) / 60) if len(samples) > 1 else 0,
                        interval=web.settings.console_metrics_interval)
