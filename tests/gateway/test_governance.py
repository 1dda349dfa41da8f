"""Idempotency, quotas, problem details, audit and the gRPC edge, with real HTTP
and gRPC against the gateway in front of the running mesh."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from services.mesh.errors import status_details

from .conftest import Gateway, Records, order_body, submit

pytestmark = pytest.mark.e2e


async def order_count(http: httpx.AsyncClient, g: Gateway) -> int:
    r = await http.get("/v1/orders?page_size=100", headers=g.a.auth())
    assert r.status_code == 200, r.text
    return len(r.json()["orders"])


async def test_idempotency_key_semantics(gateway: Gateway, http: httpx.AsyncClient):
    a = gateway.a
    before = await order_count(http, gateway)
    # missing key -> 400
    r = await http.post("/v1/orders", json=order_body(a), headers=a.auth())
    assert r.status_code == 400 and r.json()["type"].endswith("/idempotency-key-missing")
    # same key, same body -> the same response, one order
    key = str(uuid.uuid4())
    first = await submit(http, a, qty=2, key=key)
    again = await submit(http, a, qty=2, key=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    # same key, another body -> 422
    other = await submit(http, a, qty=3, key=key)
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    assert await order_count(http, gateway) == before + 1
    # The same key from another client is another request (keys are per client).
    b = await submit(http, gateway.b, qty=2, key=key)
    assert b.status_code == 201 and b.json()["order_id"] != first.json()["order_id"]


async def test_concurrent_duplicates_make_one_order(gateway: Gateway, http: httpx.AsyncClient):
    before = await order_count(http, gateway)
    key = str(uuid.uuid4())
    responses = await asyncio.gather(*(submit(http, gateway.a, qty=4, key=key) for _ in range(12)))
    ok = [r for r in responses if r.status_code == 201]
    assert ok, [r.text for r in responses]
    assert {r.json()["order_id"] for r in ok} == {ok[0].json()["order_id"]}
    # A duplicate still in flight after the wait would be a 409, never a second order.
    assert all(r.status_code in (201, 409) for r in responses), [r.status_code for r in responses]
    assert await order_count(http, gateway) == before + 1


async def test_rate_limit_is_per_client(gateway: Gateway, http: httpx.AsyncClient):
    slow = {"Authorization": f"Bearer {await gateway.new_client(['lookups'], rate=2)}"}
    path = f"/v1/availability?sku={gateway.a.world.skus[0]}"
    answers = await asyncio.gather(*(http.get(path, headers=slow) for _ in range(10)))
    codes = [r.status_code for r in answers]
    assert codes.count(429) >= 5 and codes.count(200) >= 1, codes
    limited = next(r for r in answers if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"].startswith("application/problem+json")
    # Another client is not affected by the first one's flood.
    other = await asyncio.gather(*(http.get(path, headers=gateway.a.auth()) for _ in range(10)))
    assert [r.status_code for r in other] == [200] * 10
    # After Retry-After the slow client gets through again.
    await asyncio.sleep(int(limited.headers["retry-after"]))
    assert (await http.get(path, headers=slow)).status_code == 200


async def test_quotas_and_bad_input_are_problems_not_crashes(gateway: Gateway, http: httpx.AsyncClient):
    a = gateway.a
    h = {**a.auth(), "Idempotency-Key": str(uuid.uuid4())}
    big = {"lines": [{"sku": "X", "quantity": 1}], "note": "x" * 200_000}
    r = await http.post("/v1/orders", json=big, headers=h)
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    r = await http.get("/v1/orders?page_size=10000", headers=a.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith("page_size")
    r = await http.post("/v1/orders", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400
    r = await http.get("/v1/orders?page_token=%%%garbage", headers=a.auth())
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "query.page_token", r.text
    r = await http.post("/v1/orders", json={"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]},
                        headers={**a.auth(), "Idempotency-Key": str(uuid.uuid4())})
    assert 400 <= r.status_code < 500, r.text
    assert "Traceback" not in r.text
    assert (await http.get("/v1/nope", headers=a.auth())).status_code == 404
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200


async def test_state_changes_are_audited(gateway: Gateway, http: httpx.AsyncClient):
    r = await submit(http, gateway.a)
    order_id = r.json()["order_id"]
    await http.post(f"/v1/orders/{order_id}:cancel", json={"reason": "test"}, headers=gateway.a.auth())
    await http.post("/v1/orders", json=order_body(gateway.a), headers={"Idempotency-Key": "x"})  # 401
    entries = (await http.get("/v1/admin/audit?limit=50", headers=gateway.admin())).json()["entries"]
    mine = [e for e in entries if e["resource"] == order_id]
    assert {(e["route"], e["status"]) for e in mine} >= {("/v1/orders", 201)}
    cancel = [e for e in mine if e["route"] == "/v1/orders/{order_id}:cancel"]
    assert cancel and cancel[0]["status"] in (200, 409) and len(cancel[0]["trace_id"]) == 32
    assert any(e["status"] == 401 and e["client_id"] == "" for e in entries)


async def test_grpc_edge(gateway: Gateway, b_records: Records):
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = order_to_ship_pb2_grpc.OrderToShipServiceStub(ch)
        a, b = gateway.a, gateway.b
        req = ots.SubmitOrderRequest(request_id=str(uuid.uuid4()),
                                     lines=[ots.OrderLine(sku=a.world.skus[0], quantity=1)],
                                     warehouse_id=a.world.warehouse_id)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SubmitOrder(req)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth_a = (("authorization", f"Bearer {a.tokens['all']}"),)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SubmitOrder(req, metadata=(("authorization", f"Bearer {a.tokens['none']}"),))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # malformed: INVALID_ARGUMENT with a field violation per problem
        bad = ots.SubmitOrderRequest(request_id="", lines=[ots.OrderLine(sku="", quantity=0)])
        bad.lines[0].unit_price.amount_minor = 1
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SubmitOrder(bad, metadata=auth_a)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = set()
        for d in status_details(e.value).details:
            br = error_details_pb2.BadRequest()
            if d.Unpack(br):
                fields |= {v.field for v in br.field_violations}
        assert {"request_id", "lines[0].sku", "lines[0].quantity", "lines[0].unit_price"} <= fields
        # a good one, twice: one order (idempotent on the client's request_id)
        first = await stub.SubmitOrder(req, metadata=auth_a)
        again = await stub.SubmitOrder(req, metadata=auth_a)
        assert first.order.order_id == again.order.order_id
        assert first.order.customer_id == a.customer_id and first.order.request_id == req.request_id
        # another tenant's order: NOT_FOUND, like a missing one
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetOrder(ots.GetOrderRequest(order_id=first.order.order_id),
                                metadata=(("authorization", f"Bearer {b.tokens['all']}"),))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListOrders(ots.ListOrdersRequest(page_size=100),
                                       metadata=(("authorization", f"Bearer {b.tokens['all']}"),))
        # B's own order is listed (made for this check, not left by another test), A's is not.
        ids = {o.order_id for o in listed.orders}
        assert b_records.order_id in ids and first.order.order_id not in ids
        assert {o.customer_id for o in listed.orders} == {b.customer_id}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        entries = (await http.get("/v1/admin/audit?limit=100", headers=gateway.admin())).json()["entries"]
    grpc_entries = [e for e in entries if e["transport"] == "grpc"]
    assert {e["outcome"] for e in grpc_entries} >= {"ok", "unauthenticated", "invalid_argument"}
