"""What the edge takes in (issue 13, defect 5): a chunked body over the limit is a
413, control characters in text fields are refused on HTTP and gRPC with field
violations, a request the server cannot parse gets problem+json, and an order
listing says what it holds (AIP-157 views) instead of `lines: []`."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import Address
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc

from .conftest import Gateway, Records, order_body
from .status_shape import detail

pytestmark = pytest.mark.e2e


def idem(t) -> dict:
    return {**t.auth(), "Idempotency-Key": str(uuid.uuid4())}


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()


async def test_a_chunked_body_over_the_limit_is_a_413(gateway: Gateway, http: httpx.AsyncClient):
    a = gateway.a

    async def chunked(body: bytes, size: int = 4096):
        for i in range(0, len(body), size):
            yield body[i:i + size]

    big = json.dumps({**order_body(a), "ship_to": {"country_code": "US", "name": "x" * 200_000}}).encode()
    r = await http.post("/v1/orders", content=chunked(big),
                        headers={**idem(a), "content-type": "application/json"})
    sent = r.request.headers
    assert sent.get("transfer-encoding") == "chunked" and "content-length" not in sent
    assert problem(r, 413)["type"].endswith("/body-too-large")
    # A chunked body within the limit is read whole and taken.
    small = json.dumps(order_body(a)).encode()
    r = await http.post("/v1/orders", content=chunked(small, 16),
                        headers={**idem(a), "content-type": "application/json"})
    assert r.status_code == 201, r.text


async def test_control_characters_in_text_fields_are_refused_over_http(gateway: Gateway, a_records: Records,
                                                                       http: httpx.AsyncClient):
    a = gateway.a
    cases = [
        ("POST", "/v1/orders", {**order_body(a), "ship_to": {"country_code": "US", "name": "Ann\x00Lee"}},
         "ship_to.name"),
        ("POST", "/v1/orders", {**order_body(a), "ship_to": {"country_code": "US", "city": "\x1b[31mX"}},
         "ship_to.city"),
        ("POST", f"/v1/orders/{a_records.order_id}:cancel", {"reason": "bell\x07"}, "reason"),
        ("POST", "/v1/returns", {"order_id": a_records.order_id, "lines": [
            {"sku": a.world.skus[0], "quantity": 1, "reason": "OTHER", "note": "C1\x85"}]}, "lines.0.note"),
    ]
    for method, path, body, field in cases:
        r = await http.request(method, path, json=body, headers=idem(a))
        fields = [e["field"] for e in problem(r, 422)["errors"]]
        assert field in fields, (path, fields)
    r = await http.get("/v1/shipping-options", params={"country_code": "US", "weight_grams": 700,
                                                       "postal_code": "1\x00"}, headers=a.auth())
    assert any("postal_code" in e["field"] for e in problem(r, 422)["errors"])
    # Tabs and line breaks are text, not control: an order with them is taken.
    r = await http.post("/v1/orders", json={**order_body(a), "ship_to": {
        "country_code": "US", "name": "Ann\tLee", "line1": "Dock 4\nGate B"}}, headers=idem(a))
    assert r.status_code == 201, r.text
    assert r.json()["ship_to"]["line1"] == "Dock 4\nGate B"


async def test_control_characters_in_text_fields_are_refused_over_grpc(gateway: Gateway, a_records: Records):
    a = gateway.a
    md = (("authorization", f"Bearer {a.tokens['all']}"),)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        orders = order_to_ship_pb2_grpc.OrderToShipServiceStub(ch)
        returns = returns_pb2_grpc.ReturnsServiceStub(ch)
        submit = ots.SubmitOrderRequest(request_id=str(uuid.uuid4()), warehouse_id=a.world.warehouse_id,
                                        lines=[ots.OrderLine(sku=a.world.skus[0], quantity=1)],
                                        ship_to=Address(country_code="US", name="Ann\x00Lee"))
        cases = [
            (orders.SubmitOrder(submit, metadata=md), "ship_to.name"),
            (orders.CancelOrder(ots.CancelOrderRequest(order_id=a_records.order_id, reason="bell\x07"),
                                metadata=md), "reason"),
            (returns.CreateReturn(rpb.CreateReturnRequest(
                request_id=str(uuid.uuid4()), order_id=a_records.order_id, lines=[rpb.ReturnLine(
                    sku=a.world.skus[0], quantity=1, reason=rpb.RETURN_REASON_OTHER, note="\x7f")]),
                metadata=md), "lines[0].note"),
        ]
        for call, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            fields = [v.field for v in detail(e.value, error_details_pb2.BadRequest).field_violations]
            assert fields == [field], fields
        # The same order without the NUL is taken.
        submit.ship_to.name = "Ann Lee"
        assert (await orders.SubmitOrder(submit, metadata=md)).order.customer_id == a.customer_id


async def raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after a 400
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/orders HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n",
    b"GET /v1/orders HTTP/1.1\r\nHost: x\r\nX-Bad\x01: 1\r\n\r\n",
    b"GET /v1/orders HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x00b\r\n\r\n",
])
async def test_a_request_the_server_cannot_parse_gets_problem_json(gateway: Gateway, request_bytes):
    status, headers, body = await raw_http(gateway.url, request_bytes)
    assert status == 400, (status, headers, body)
    assert headers["content-type"].startswith("application/problem+json"), headers
    problem_body = json.loads(body)
    assert problem_body["status"] == 400 and problem_body["type"].endswith("/malformed-request")


async def test_an_order_listing_says_what_it_holds(gateway: Gateway, a_records: Records,
                                                   http: httpx.AsyncClient):
    a = gateway.a
    basic = (await http.get("/v1/orders", params={"page_size": 100}, headers=a.auth())).json()["orders"]
    mine = [o for o in basic if o["order_id"] == a_records.order_id]
    assert mine, "A's own order must be listed"
    # BASIC (the default): no lines and no timeline at all, rather than empty lists.
    assert all("lines" not in o and "timeline" not in o for o in basic), basic[0]
    assert mine[0]["status"] and mine[0]["total"]["amount_minor"] > 0
    full = (await http.get("/v1/orders", params={"page_size": 100, "view": "FULL"},
                           headers=a.auth())).json()["orders"]
    assert [o["order_id"] for o in full] == [o["order_id"] for o in basic]
    one = next(o for o in full if o["order_id"] == a_records.order_id)
    single = (await http.get(f"/v1/orders/{a_records.order_id}", headers=a.auth())).json()
    assert one["lines"] == single["lines"] and one["lines"][0]["sku"] == a.world.skus[0]
    assert [e["step"] for e in one["timeline"]][:1] == [e["step"] for e in single["timeline"]][:1]
    problem(await http.get("/v1/orders", params={"view": "EVERYTHING"}, headers=a.auth()), 422)
