"""The security matrix: every route x {no token, bad token, wrong scope, other
tenant's ids} -> 401/401/403/404 (or 422 for a field the client must not set),
and no data of the other tenant in any body."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import Gateway, order_body, submit

pytestmark = pytest.mark.e2e

ID_FREE = "/v1/availability?sku={sku}", "/v1/shipping-options?country_code=US&weight_grams=700"


def routes(g: Gateway, b_order: str, b_return: str) -> list[tuple]:
    """(method, path, scope, json body, the other-tenant request (path, body) or None, its status)."""
    a, b = g.a, g.b
    ret_line = {"sku": a.world.skus[0], "quantity": 1, "reason": "NOT_NEEDED"}
    return [
        ("POST", "/v1/orders", "orders:write", order_body(a),
         ("/v1/orders", {**order_body(a), "customer_id": b.customer_id}), 422),
        ("GET", "/v1/orders", "orders:read", None, (f"/v1/orders?customer_id={b.customer_id}", None), 422),
        ("GET", f"/v1/orders/{b_order}", "orders:read", None, (f"/v1/orders/{b_order}", None), 404),
        ("POST", f"/v1/orders/{b_order}:cancel", "orders:write", {},
         (f"/v1/orders/{b_order}:cancel", {}), 404),
        ("POST", "/v1/returns", "returns:write", {"order_id": b_order, "lines": [ret_line]},
         ("/v1/returns", {"order_id": b_order, "lines": [ret_line]}), 404),
        ("GET", "/v1/returns", "returns:read", None, (f"/v1/returns?order_id={b_order}", None), 200),
        ("GET", f"/v1/returns/{b_return}", "returns:read", None, (f"/v1/returns/{b_return}", None), 404),
        ("GET", f"/v1/availability?sku={a.world.skus[0]}", "lookups", None, None, None),
        ("GET", "/v1/shipping-options?country_code=US&weight_grams=700", "lookups", None, None, None),
        # Operations: a tenant-bound key never reaches them, even with the admin scope.
        ("GET", "/v1/admin/dead-letters", "admin", None, ("/v1/admin/dead-letters", None), 403),
        ("POST", "/v1/admin/dead-letters/DL-1:replay", "admin", None,
         ("/v1/admin/dead-letters/DL-1:replay", None), 403),
        ("POST", "/v1/admin/reconciliations", "admin", {}, ("/v1/admin/reconciliations", {}), 403),
        ("GET", "/v1/admin/audit", "admin", None, ("/v1/admin/audit", None), 403),
    ]


def assert_no_b_data(g: Gateway, body: str, b_order: str, b_return: str, asked: str = "") -> None:
    """None of B's records in a body (an id the caller itself sent may be echoed)."""
    for secret in (g.b.customer_id, b_order, b_return, g.b.world.warehouse_id, *g.b.world.skus):
        if secret in body and secret not in asked:
            raise AssertionError(f"tenant B's {secret!r} leaked: {body[:500]}")


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://crossdock.dev/problems/")
    assert "Traceback" not in r.text


async def test_matrix(gateway: Gateway, b_records, http: httpx.AsyncClient):
    b_order, b_return = b_records.order_id, b_records.return_id
    a = gateway.a
    checked = 0
    for method, path, scope, body, other, other_status in routes(gateway, b_order, b_return):
        kw = {"json": body} if body is not None else {}
        idem = {"Idempotency-Key": str(uuid.uuid4())}
        # no token
        r = await http.request(method, path, headers=idem, **kw)
        assert_problem(r, 401)
        assert "Bearer" in r.headers.get("www-authenticate", "")
        # bad tokens: garbage, a well-formed but unknown key, a real client id with a wrong secret
        real_id = a.tokens["all"].split(".")[0]
        for bad in ("garbage", "cdk_cl_0000000000000000.nope", f"{real_id}.wrongsecret", "x" * 300):
            r = await http.request(method, path, headers={**idem, "Authorization": f"Bearer {bad}"}, **kw)
            assert_problem(r, 401)
        r = await http.request(method, path, headers={**idem, "Authorization": "Basic dXNlcjpwYXNz"}, **kw)
        assert_problem(r, 401)
        # wrong scope
        r = await http.request(method, path, headers={**idem, **a.auth("none")}, **kw)
        assert_problem(r, 403)
        assert_no_b_data(gateway, r.text, b_order, b_return, asked=str(r.request.url) + str(body))
        # other tenant's ids (as A, with every scope)
        if other is not None:
            opath, obody = other
            okw = {"json": obody} if obody is not None else {}
            label = "admin" if scope == "admin" else "all"
            r = await http.request(method, opath, headers={**idem, **a.auth(label)}, **okw)
            if other_status == 200:
                assert r.status_code == 200, r.text
            else:
                assert_problem(r, other_status)
            assert_no_b_data(gateway, r.text, b_order, b_return, asked=str(r.request.url) + str(obody))
        checked += 1
    assert checked == 13


async def test_other_tenant_id_answers_exactly_like_a_missing_one(gateway, b_records, http):
    b_order, b_return = b_records.order_id, b_records.return_id
    for kind, real in (("orders", b_order), ("returns", b_return)):
        other = await http.get(f"/v1/{kind}/{real}", headers=gateway.a.auth())
        missing = await http.get(f"/v1/{kind}/NOPE-{uuid.uuid4().hex[:8]}", headers=gateway.a.auth())
        assert other.status_code == missing.status_code == 404
        assert set(other.json()) == set(missing.json())
        assert other.json()["type"] == missing.json()["type"]
        # B itself sees it.
        assert (await http.get(f"/v1/{kind}/{real}", headers=gateway.b.auth())).status_code == 200


async def test_listings_hold_only_the_callers_records(gateway, b_records, http):
    b_order, b_return = b_records.order_id, b_records.return_id
    await submit(http, gateway.a)
    orders = (await http.get("/v1/orders?page_size=100", headers=gateway.a.auth())).json()["orders"]
    assert orders and {o["customer_id"] for o in orders} == {gateway.a.customer_id}
    returns = (await http.get("/v1/returns", headers=gateway.a.auth())).json()["returns"]
    assert all(x["customer_id"] == gateway.a.customer_id for x in returns)
    assert_no_b_data(gateway, str(orders) + str(returns), b_order, b_return)


async def test_fields_a_client_must_not_set_are_refused(gateway, http):
    a = gateway.a
    for extra in ({"status": "INVOICED"}, {"total": {"amount_minor": 1}}):
        r = await http.post("/v1/orders", json={**order_body(a), **extra},
                            headers={**a.auth(), "Idempotency-Key": str(uuid.uuid4())})
        assert_problem(r, 422)
    line = {"sku": a.world.skus[0], "quantity": 1, "unit_price": {"currency_code": "USD", "amount_minor": 1}}
    r = await http.post("/v1/orders", json={**order_body(a), "lines": [line]},
                        headers={**a.auth(), "Idempotency-Key": str(uuid.uuid4())})
    assert_problem(r, 422)
    assert any("unit_price" in e["field"] for e in r.json()["errors"])


async def test_revoked_key_is_refused(gateway, http):
    from gateway.governance import revoke_client
    from gateway.store import metadata
    from services.mesh.store import Store
    from tests.helpers import eventually as ev

    token = await gateway.new_client(["orders:read"], customer=gateway.a.customer_id)
    h = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/v1/orders", headers=h)).status_code == 200
    store = Store("gateway", gateway.store_url, metadata)
    try:
        assert await revoke_client(store, token.split(".")[0].removeprefix("cdk_"))
    finally:
        await store.close()

    async def refused():
        return (await http.get("/v1/orders", headers=h)).status_code == 401

    await ev(refused, timeout=10, what="revocation to take effect")


async def test_grpc_edge_returns_keeps_tenants_apart(gateway: Gateway, b_records):
    import grpc

    from crossdock.returns.v1 import returns_pb2 as rpb
    from crossdock.returns.v1 import returns_pb2_grpc

    b_order, b_return = b_records.order_id, b_records.return_id
    as_a = (("authorization", f"Bearer {gateway.a.tokens['all']}"),)
    as_b = (("authorization", f"Bearer {gateway.b.tokens['all']}"),)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = returns_pb2_grpc.ReturnsServiceStub(ch)
        assert (await stub.GetReturn(rpb.GetReturnRequest(return_id=b_return), metadata=as_b)
                ).customer_return.customer_id == gateway.b.customer_id
        for call in (stub.GetReturn(rpb.GetReturnRequest(return_id=b_return), metadata=as_a),
                     stub.CancelReturn(rpb.CancelReturnRequest(return_id=b_return), metadata=as_a),
                     stub.CreateReturn(rpb.CreateReturnRequest(
                         request_id="x", order_id=b_order, lines=[rpb.ReturnLine(
                             sku=gateway.a.world.skus[0], quantity=1, reason=rpb.RETURN_REASON_OTHER)]),
                         metadata=as_a)):
            try:
                await call
                raise AssertionError("another tenant's return was reachable")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND, err
        listed = await stub.ListReturns(rpb.ListReturnsRequest(customer_id="", page_size=100), metadata=as_a)
        assert all(r.customer_id == gateway.a.customer_id for r in listed.returns)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ListReturns(rpb.ListReturnsRequest(page_size=100), metadata=(("authorization", "Bearer x"),))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
