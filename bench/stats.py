"""Percentiles and small helpers shared by the scenarios."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def pct(xs: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank on the sorted sample); None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))]


def latency_ms(xs: list[float]) -> dict:
    """p50/p99/max in milliseconds of latencies given in seconds, and the count."""
    def ms(v):
        return None if v is None else round(v * 1e3, 3)
    return {"n": len(xs), "p50_ms": ms(pct(xs, 50)), "p99_ms": ms(pct(xs, 99)),
            "max_ms": ms(max(xs) if xs else None)}


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, digits)


async def wait_for(predicate: Callable[[], Awaitable[object]], timeout: float, what: str,
                   interval: float = 0.1):
    """Poll an async predicate until it is truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def open_loop(rate: float, duration: float, call: Callable[[int], Awaitable[None]],
                    max_in_flight: int = 2000) -> int:
    """Start ``call(i)`` at a fixed rate (not waiting for earlier ones) for
    ``duration`` s; returns how many were started, after all finished."""
    tasks: set[asyncio.Task] = set()
    start = time.monotonic()
    i = 0
    while True:
        due = start + i / rate
        if due - start >= duration:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        if len(tasks) < max_in_flight:
            t = asyncio.create_task(call(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return i
