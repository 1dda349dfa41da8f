"""Scenario 1 (the floor): what the raw building blocks cost on this machine,
measured in the same run as the mesh.

- a raw ``grpc.aio`` unary echo in another process (no interceptors): one at a
  time (latency) and saturated (calls/s, 32 in flight);
- JetStream, 300-byte messages, on a nats-server configured like the mesh's
  (file storage, ``sync_interval: always``): pipelined publishes
  (``publish_async``) and a durable pull consumer (``fetch(256)`` + ``ack``);
- the mesh's own store transaction (``services.mesh.store``: SQLite WAL,
  BEGIN IMMEDIATE, one row plus one outbox row via ``Tx.emit``).

``floor()`` turns those rates and the per-order counts read from the mesh's
metrics into the orders/s the raw operations alone would allow.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from services.mesh import contracts
from services.mesh.launcher import NatsServer, terminate, wait_until
from services.mesh.store import Store, runtime_tables, sync_url

from .echo_server import METHOD
from .stats import latency_ms

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"x" * 300


class EchoServer:
    """The raw echo server as its own process."""

    def __init__(self, work: Path) -> None:
        self.port_file = work / "echo.port"
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def __enter__(self) -> EchoServer:
        self.port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(self.port_file)],
                                     cwd=ROOT)

        def bound():
            if self.proc.poll() is not None:
                raise RuntimeError(f"echo server exited with {self.proc.returncode}")
            return self.port_file.exists() and int(self.port_file.read_text())

        self.addr = f"127.0.0.1:{wait_until(bound, 30, 'the echo server to bind')}"
        return self

    def __exit__(self, *exc) -> None:
        terminate(self.proc, 5)


def echo_stub(channel: grpc.aio.Channel):
    return channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)


async def echo_latencies(addr: str, n: int, payload: bytes = b"x" * 64) -> list[float]:
    """``n`` echo calls one at a time (after a warm-up); latencies in seconds."""
    async with grpc.aio.insecure_channel(addr) as ch:
        echo = echo_stub(ch)
        for _ in range(min(50, n)):
            await echo(payload)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await echo(payload)
            out.append(time.perf_counter() - t)
        return out


async def grpc_rate(addr: str, n: int, concurrency: int = 32) -> float:
    async with grpc.aio.insecure_channel(addr) as ch:
        echo = echo_stub(ch)
        for _ in range(50):
            await echo(b"x" * 64)
        left = n

        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                await echo(b"x" * 64)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t)


async def jetstream_rates(url: str, n: int) -> dict:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE))
        # One acked publish at a time (what an unpipelined relay would do).
        single = min(n, 500)
        t = time.perf_counter()
        for i in range(single):
            await js.publish("bench.single", PAYLOAD, headers={"Nats-Msg-Id": f"s{i}"})
        single_rate = single / (time.perf_counter() - t)
        # Pipelined publishes: publish many, await the acks together.
        t = time.perf_counter()
        futures = [await js.publish_async("bench.x", PAYLOAD, headers={"Nats-Msg-Id": f"p{i}"})
                   for i in range(n)]
        await asyncio.gather(*futures)
        publish_rate = n / (time.perf_counter() - t)
        await js.add_consumer("BENCH", ConsumerConfig(durable_name="bench", filter_subject="bench.x",
                                                      ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000))
        sub = await js.pull_subscribe_bind("bench", "BENCH")
        got = 0
        t = time.perf_counter()
        while got < n:
            for msg in await sub.fetch(256, timeout=5):
                await msg.ack()
                got += 1
        await nc.flush()
        consume_rate = n / (time.perf_counter() - t)
        await js.delete_stream("BENCH")
        return {"publish_one_at_a_time_per_s": round(single_rate),
                "publish_pipelined_per_s": round(publish_rate),
                "pull_consume_ack_per_s": round(consume_rate), "messages": n, "payload_bytes": len(PAYLOAD)}
    finally:
        await nc.close()


async def store_rate(work: Path, n: int) -> dict:
    """The mesh's own transaction: one row and one outbox row (``Tx.emit``), committed."""
    metadata = MetaData()
    runtime_tables(metadata)
    rows = Table("rows", metadata, Column("id", Integer, primary_key=True), Column("value", String(64)))
    url = f"sqlite:///{work / 'bench-store.db'}"
    engine = create_engine(sync_url(url))
    metadata.create_all(engine)
    engine.dispose()
    store = Store("bench", url, metadata)
    subject = "wms.inventory.adjusted"
    message = contracts.message_type(subject)(sku="SKU-BENCH", warehouse_id="WH", delta=1, sequence=1)
    try:
        for i in range(20):  # warm up
            async with store.transaction() as tx:
                await tx.conn.execute(rows.insert().values(value=f"w{i}"))
                await tx.emit(subject, message)
        t = time.perf_counter()
        for i in range(n):
            async with store.transaction() as tx:
                await tx.conn.execute(rows.insert().values(value=f"v{i}"))
                await tx.emit(subject, message)
        rate = n / (time.perf_counter() - t)
    finally:
        await store.close()
    return {"transactions_per_s": round(rate), "transactions": n}


async def measure(work: Path, *, grpc_calls: int, messages: int, transactions: int) -> dict:
    out: dict = {}
    with EchoServer(work) as echo:
        out["grpc_echo_one_at_a_time"] = latency_ms(await echo_latencies(echo.addr, grpc_calls))
        out["grpc_echo_saturated_calls_per_s"] = round(await grpc_rate(echo.addr, grpc_calls * 4))
    broker = NatsServer(work, name="nats-blocks")
    try:
        url = await asyncio.to_thread(broker.start)
        out["jetstream"] = await jetstream_rates(url, messages)
    finally:
        broker.stop()
    out["store"] = await store_rate(work, transactions)
    return out


def floor(blocks: dict, per_order: dict) -> dict:
    """Seconds of raw work per order, and the orders/s that allows (one core's worth,
    every operation at its measured saturated rate)."""
    js = blocks["jetstream"]
    rpc_s = per_order["rpcs"] / blocks["grpc_echo_saturated_calls_per_s"]
    msg_s = per_order["messages"] * (1 / js["publish_pipelined_per_s"] + 1 / js["pull_consume_ack_per_s"])
    tx_s = per_order["transactions"] / blocks["store"]["transactions_per_s"]
    total = rpc_s + msg_s + tx_s
    return {"rpc_ms_per_order": round(rpc_s * 1e3, 3), "messaging_ms_per_order": round(msg_s * 1e3, 3),
            "store_ms_per_order": round(tx_s * 1e3, 3), "total_ms_per_order": round(total * 1e3, 3),
            "floor_orders_per_s": round(1 / total, 1) if total else None}
