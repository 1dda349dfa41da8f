"""The gateway's overhead per lookup: p50/p99 of GetAvailability directly over
gRPC to WMS vs `GET /v1/availability` through the gateway (HTTP/JSON, bearer
key, quota, tenant checks), in one run against one mesh, calls interleaved.

    .venv/bin/python scripts/gateway_overhead.py [-n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc  # noqa: E402
from gateway.governance import create_client  # noqa: E402
from gateway.store import metadata  # noqa: E402
from services.mesh.launcher import Mesh  # noqa: E402
from services.mesh.store import Store  # noqa: E402
from tests.e2e.conftest import FAST, Stubs, make_world  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def measure(mesh: Mesh, n: int) -> dict[str, list[float]]:
    stubs = Stubs(mesh)
    world = await make_world(stubs)
    await stubs.close()
    store = Store("gateway", f"sqlite:///{mesh.data_dir / 'gateway.db'}", metadata)
    _, token = await create_client(store, name="bench", channel="bench", customer_id=world.customer_id,
                                   scopes=["lookups"], rate_limit=100_000)
    await store.close()
    direct: list[float] = []
    gateway: list[float] = []
    async with grpc.aio.insecure_channel(mesh.addr("wms")) as ch, \
            httpx.AsyncClient(base_url=mesh.http_url(), headers={"Authorization": f"Bearer {token}"}) as http:
        wms = wms_pb2_grpc.WmsServiceStub(ch)
        req = wms_pb2.GetAvailabilityRequest(skus=[world.skus[0]], warehouse_id=world.warehouse_id)
        path = f"/v1/availability?sku={world.skus[0]}&warehouse={world.warehouse_id}"
        for _ in range(50):  # warm up both paths
            await wms.GetAvailability(req)
            (await http.get(path)).raise_for_status()
        for _ in range(n):
            t = time.perf_counter()
            await wms.GetAvailability(req)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = await http.get(path)
            gateway.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return {"direct gRPC (WMS)": direct, "through the gateway (HTTP)": gateway}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh(Path(tmp), env={**FAST, "CROSSDOCK_LOG_LEVEL": "WARNING"})
        try:
            mesh.start()
            results = asyncio.run(measure(mesh, args.n))
        finally:
            mesh.stop()
    print(f"GetAvailability, {args.n} calls each, one at a time, interleaved:")
    p = {}
    for name, xs in results.items():
        p[name] = (pct(xs, 50) * 1e3, pct(xs, 99) * 1e3)
        print(f"  {name:28s} p50 {p[name][0]:7.3f} ms   p99 {p[name][1]:7.3f} ms   "
              f"mean {statistics.mean(xs) * 1e3:7.3f} ms")
    (d50, d99), (g50, g99) = p.values()
    print(f"  gateway overhead             p50 {g50 - d50:+7.3f} ms   p99 {g99 - d99:+7.3f} ms")


if __name__ == "__main__":
    main()
