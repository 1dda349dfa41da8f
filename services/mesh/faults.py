"""Fault injection for the fault tests and `make chaos` — all off by default.

- ``CROSSDOCK_CRASH_POINTS="after_commit_before_publish:0.05,after_effect_before_ack:0.05"``:
  the process exits abruptly (``os._exit``, like a SIGKILL) at that point with
  that probability (1.0 when omitted). Points:
    after_commit_before_publish  a transaction that emitted messages committed, nothing published yet
    after_publish_before_delete  the relay published a batch, the outbox rows are not deleted yet
    after_effect_before_ack      a handler's transaction committed, the message is not acked yet
- ``CROSSDOCK_FAULT_LATENCY_MS`` / ``CROSSDOCK_FAULT_ERROR_RATE``: every gRPC
  call served and every message handled waits that long, and fails (gRPC
  UNAVAILABLE / a retryable handler error) with that probability: a slow or
  flaky system.
- ``CROSSDOCK_FAULT_FILE``: a file whose contents (``latency_ms=200``,
  ``error_rate=0.1``, one a line or comma-separated) are added to the two
  above while it exists; it is re-read at most every 0.25 s, so a running
  service can be slowed and restored without a restart (``make bench``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

import grpc

CRASH_EXIT_CODE = 86
POINTS = ("after_commit_before_publish", "after_publish_before_delete", "after_effect_before_ack",
          # the ERP adapter: a system of record committed a posting, the message is not acked
          "tryton_committed_before_ack")


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, prob = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown crash point {name!r} (known: {', '.join(POINTS)})")
        points[name] = float(prob) if prob else 1.0
    return points


_crash_points = _parse(os.environ.get("CROSSDOCK_CRASH_POINTS", ""))
LATENCY_S = float(os.environ.get("CROSSDOCK_FAULT_LATENCY_MS", "0")) / 1000
ERROR_RATE = float(os.environ.get("CROSSDOCK_FAULT_ERROR_RATE", "0"))


FAULT_FILE = os.environ.get("CROSSDOCK_FAULT_FILE", "")
_FILE_CHECK_S = 0.25
_file_state = {"checked": 0.0, "mtime": None, "latency": 0.0, "errors": 0.0}


def _parse_fault_file(text: str) -> tuple[float, float]:
    latency = errors = 0.0
    for part in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        name, _, value = part.partition("=")
        try:
            if name.strip() == "latency_ms":
                latency = float(value) / 1000
            elif name.strip() == "error_rate":
                errors = float(value)
        except ValueError:
            continue
    return latency, errors


def file_faults() -> tuple[float, float]:
    """(latency s, error rate) from CROSSDOCK_FAULT_FILE now; (0, 0) when absent."""
    if not FAULT_FILE:
        return 0.0, 0.0
    st = _file_state
    now = time.monotonic()
    if now - st["checked"] >= _FILE_CHECK_S:
        st["checked"] = now
        try:
            mtime = os.stat(FAULT_FILE).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != st["mtime"]:
            st["mtime"] = mtime
            try:
                with open(FAULT_FILE) as f:
                    st["latency"], st["errors"] = _parse_fault_file(f.read())
            except OSError:
                st["latency"], st["errors"] = 0.0, 0.0
    return st["latency"], st["errors"]


class InjectedFault(Exception):
    """A retryable failure injected on purpose."""


def crash_point(name: str) -> None:
    prob = _crash_points.get(name)
    if prob and random.random() < prob:
        print(f'{{"event": "fault.crash_point", "point": "{name}", "level": "warning"}}',
              file=sys.stdout, flush=True)
        os._exit(CRASH_EXIT_CODE)


async def slow_or_failing(what: str) -> None:
    """Apply the configured latency and error rate (no-op when both are 0)."""
    file_latency, file_errors = file_faults()
    if LATENCY_S or file_latency:
        await asyncio.sleep(LATENCY_S + file_latency)
    error_rate = ERROR_RATE + file_errors
    if error_rate and random.random() < error_rate:
        raise InjectedFault(f"injected failure in {what}")


class FaultInterceptor(grpc.aio.ServerInterceptor):
    """Latency and errors on served calls (health checks excepted)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if (handler is None or handler.unary_unary is None
                or handler_call_details.method.startswith("/grpc.")):
            return handler
        inner = handler.unary_unary

        async def unary(request, context):
            try:
                await slow_or_failing(handler_call_details.method)
            except InjectedFault as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def enabled() -> bool:
    return bool(_crash_points or LATENCY_S or ERROR_RATE or FAULT_FILE)
