"""Errors through the gateway: a downstream status keeps its code, message and
google.rpc.Status details over gRPC, and another tenant's id reads exactly like
a missing one (same code, message, details) over HTTP and gRPC alike."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc

from .conftest import Gateway, Records
from .status_shape import detail, grpc_shape, http_shape

pytestmark = pytest.mark.e2e


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def missing_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12].upper()}"


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


async def test_a_downstream_error_keeps_its_code_message_and_details_over_grpc(
        gateway: Gateway, a_records: Records):
    md = bearer(gateway.a.tokens["all"])
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = order_to_ship_pb2_grpc.OrderToShipServiceStub(ch)
        nope = missing_id("ORD")
        err = await failure(stub.GetOrder(ots.GetOrderRequest(order_id=nope), metadata=md))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        info = detail(err, error_details_pb2.ResourceInfo)
        assert (info.resource_type, info.resource_name) == ("order", nope)
        assert detail(err, error_details_pb2.ErrorInfo).reason == "NOT_FOUND"
        # A shipped order cannot be cancelled: order-to-ship's FAILED_PRECONDITION, as it said it.
        err = await failure(stub.CancelOrder(ots.CancelOrderRequest(order_id=a_records.order_id),
                                             metadata=md))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert detail(err, error_details_pb2.ErrorInfo).reason == "ORDER_NOT_CANCELLABLE"
        assert detail(err, error_details_pb2.PreconditionFailure).violations[0].subject == a_records.order_id
        # ... and A's own order is there, so the NOT_FOUND above was about the id only.
        got = await stub.GetOrder(ots.GetOrderRequest(order_id=a_records.order_id), metadata=md)
        assert got.order.customer_id == gateway.a.customer_id


async def test_another_tenants_id_reads_exactly_like_a_missing_one_over_grpc(
        gateway: Gateway, b_records: Records):
    a, b = gateway.a, gateway.b
    md = bearer(a.tokens["all"])
    line = rpb.ReturnLine(sku=a.world.skus[0], quantity=1, reason=rpb.RETURN_REASON_OTHER)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        orders = order_to_ship_pb2_grpc.OrderToShipServiceStub(ch)
        returns = returns_pb2_grpc.ReturnsServiceStub(ch)
        calls = {
            "GetOrder": (b_records.order_id, "ORD",
                         lambda i: orders.GetOrder(ots.GetOrderRequest(order_id=i), metadata=md)),
            "CancelOrder": (b_records.order_id, "ORD",
                            lambda i: orders.CancelOrder(ots.CancelOrderRequest(order_id=i), metadata=md)),
            "CreateReturn": (b_records.order_id, "ORD", lambda i: returns.CreateReturn(
                rpb.CreateReturnRequest(request_id=str(uuid.uuid4()), order_id=i, lines=[line]),
                metadata=md)),
            "GetReturn": (b_records.return_id, "RET",
                          lambda i: returns.GetReturn(rpb.GetReturnRequest(return_id=i), metadata=md)),
            "CancelReturn": (b_records.return_id, "RET",
                             lambda i: returns.CancelReturn(rpb.CancelReturnRequest(return_id=i),
                                                            metadata=md)),
        }
        for method, (foreign_id, prefix, call) in calls.items():
            nope = missing_id(prefix)
            foreign = await failure(call(foreign_id))
            missing = await failure(call(nope))
            assert foreign.code() == grpc.StatusCode.NOT_FOUND, (method, foreign)
            assert grpc_shape(foreign, foreign_id) == grpc_shape(missing, nope), method
        # B itself reaches both records (so the NOT_FOUNDs above hid something real).
        as_b = bearer(b.tokens["all"])
        assert (await orders.GetOrder(ots.GetOrderRequest(order_id=b_records.order_id), metadata=as_b)
                ).order.customer_id == b.customer_id
        assert (await returns.GetReturn(rpb.GetReturnRequest(return_id=b_records.return_id), metadata=as_b)
                ).customer_return.customer_id == b.customer_id


async def test_another_tenants_id_reads_exactly_like_a_missing_one_over_http(
        gateway: Gateway, b_records: Records, http: httpx.AsyncClient):
    a, b = gateway.a, gateway.b
    line = {"sku": a.world.skus[0], "quantity": 1, "reason": "NOT_NEEDED"}

    def idem() -> dict:
        return {**a.auth(), "Idempotency-Key": str(uuid.uuid4())}

    calls = {
        "get order": (b_records.order_id, "ORD", lambda i: http.get(f"/v1/orders/{i}", headers=a.auth())),
        "cancel order": (b_records.order_id, "ORD",
                         lambda i: http.post(f"/v1/orders/{i}:cancel", json={}, headers=a.auth())),
        "create return": (b_records.order_id, "ORD", lambda i: http.post(
            "/v1/returns", json={"order_id": i, "lines": [line]}, headers=idem())),
        "get return": (b_records.return_id, "RET", lambda i: http.get(f"/v1/returns/{i}", headers=a.auth())),
    }
    for what, (foreign_id, prefix, call) in calls.items():
        nope = missing_id(prefix)
        foreign, missing = await call(foreign_id), await call(nope)
        assert foreign.status_code == 404, (what, foreign.text)
        assert http_shape(foreign, foreign_id) == http_shape(missing, nope), what
    assert (await http.get(f"/v1/orders/{b_records.order_id}", headers=b.auth())).status_code == 200
    assert (await http.get(f"/v1/returns/{b_records.return_id}", headers=b.auth())).status_code == 200


async def test_an_unknown_sku_or_warehouse_is_named_not_the_customer(
        gateway: Gateway, http: httpx.AsyncClient):
    """Issue 13 defect 4: the refusal names the resource actually missing, on every path."""
    a = gateway.a
    nope_sku, nope_wh = missing_id("SKU"), missing_id("WH")
    cases = {"item": ({"lines": [{"sku": nope_sku, "quantity": 1}], "warehouse_id": a.world.warehouse_id},
                      nope_sku),
             "warehouse": ({"lines": [{"sku": a.world.skus[0], "quantity": 1}], "warehouse_id": nope_wh},
                           nope_wh)}
    for kind, (body, missing) in cases.items():
        r = await http.post("/v1/orders", json=body,
                            headers={**a.auth(), "Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code == 404, (kind, r.text)
        assert missing in r.json()["detail"] and a.customer_id not in r.text, (kind, r.text)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = order_to_ship_pb2_grpc.OrderToShipServiceStub(ch)
        for kind, (body, missing) in cases.items():
            req = ots.SubmitOrderRequest(request_id=str(uuid.uuid4()), warehouse_id=body["warehouse_id"],
                                         lines=[ots.OrderLine(sku=ln["sku"], quantity=ln["quantity"])
                                                for ln in body["lines"]])
            err = await failure(stub.SubmitOrder(req, metadata=bearer(a.tokens["all"])))
            assert err.code() == grpc.StatusCode.NOT_FOUND, (kind, err)
            info = detail(err, error_details_pb2.ResourceInfo)
            assert (info.resource_type, info.resource_name) == (kind, missing), (kind, info)
            assert a.customer_id not in err.details()
    # A known SKU in a known warehouse is taken (the two refusals were about what was named).
    ok = await http.post("/v1/orders", json={"lines": [{"sku": a.world.skus[0], "quantity": 1}],
                                             "warehouse_id": a.world.warehouse_id},
                         headers={**a.auth(), "Idempotency-Key": str(uuid.uuid4())})
    assert ok.status_code == 201, ok.text
