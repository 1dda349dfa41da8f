"""The security matrix of the HTTP API: every route x {no token, bad tokens, not
a bearer token, wrong scope, tenant-bound admin key, other tenant's ids, revoked
key, quota} -> 401/401/401/403/403 or tenant rules/404 or 422/401/429, and no
data of the other tenant in any body. The gRPC port runs the same matrix
(test_grpc_security.py)."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from gateway.governance import SCOPES
from tests.helpers import eventually

from .conftest import Gateway, order_body

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
        ("GET", "/v1/admin/exceptions", "admin", None, ("/v1/admin/exceptions", None), 403),
        ("GET", "/v1/admin/exceptions/EXC-NOPE", "admin", None, ("/v1/admin/exceptions/EXC-NOPE", None), 403),
        ("POST", "/v1/admin/exceptions/EXC-NOPE:resolve", "admin", {"action": "RETRY"},
         ("/v1/admin/exceptions/EXC-NOPE:resolve", {"action": "RETRY"}), 403),
        ("POST", "/v1/admin/exceptions:resolve", "admin", {"action": "RETRY"},
         ("/v1/admin/exceptions:resolve", {"action": "RETRY"}), 403),
        ("GET", "/v1/admin/exception-policies", "admin", None, ("/v1/admin/exception-policies", None), 403),
        ("PUT", "/v1/admin/exception-policies", "admin", {"scope": "customer", "key": a.customer_id},
         ("/v1/admin/exception-policies", {"scope": "customer", "key": a.customer_id}), 403),
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
    table = routes(gateway, b_order, b_return)
    # The matrix covers every route the gateway documents under /v1 (not a count kept by hand).
    spec = (await http.get("/openapi.json")).json()
    served = {(m.upper(), re.sub(r"\{[^}]+\}", "{}", p)) for p, ops in spec["paths"].items()
              if p.startswith("/v1/") for m in ops}
    ids = (b_order, b_return, "DL-1", "EXC-NOPE")
    covered = {(m, re.sub("|".join(map(re.escape, ids)), "{}", path.split("?")[0])) for m, path, *_ in table}
    assert served and served == covered, (served - covered, covered - served)
    checked = 0
    for method, path, scope, body, other, other_status in table:
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
        # other tenant's ids, as A with every tenant scope and as A's tenant-bound admin key
        # (which, for operations, is refused outright)
        if other is not None:
            opath, obody = other
            okw = {"json": obody} if obody is not None else {}
            for label in (("admin",) if scope == "admin" else ("all", "admin")):
                r = await http.request(method, opath, headers={**idem, **a.auth(label)}, **okw)
                if other_status == 200:
                    assert r.status_code == 200, r.text
                else:
                    assert_problem(r, other_status)
                assert_no_b_data(gateway, r.text, b_order, b_return, asked=str(r.request.url) + str(obody))
        checked += 1
    assert checked == len(served)


async def test_listings_hold_only_the_callers_records(gateway, a_records, b_records, http):
    b_order, b_return = b_records.order_id, b_records.return_id
    a = gateway.a
    for label in ("all", "admin"):  # a tenant-bound admin key is still a tenant
        orders = (await http.get("/v1/orders?page_size=100", headers=a.auth(label))).json()["orders"]
        returns = (await http.get("/v1/returns?page_size=100", headers=a.auth(label))).json()["returns"]
        # A's own records are listed (so the checks below compare something)...
        assert a_records.order_id in {o["order_id"] for o in orders}, label
        assert a_records.return_id in {x["return_id"] for x in returns}, label
        # ... and nothing else.
        assert {o["customer_id"] for o in orders} == {x["customer_id"] for x in returns} == {a.customer_id}
        assert_no_b_data(gateway, str(orders) + str(returns), b_order, b_return)
    # A filter naming B's order finds nothing for A, B's return for B.
    mine = (await http.get(f"/v1/returns?order_id={b_order}", headers=a.auth())).json()["returns"]
    theirs = (await http.get(f"/v1/returns?order_id={b_order}", headers=gateway.b.auth())).json()["returns"]
    assert mine == [] and b_return in {x["return_id"] for x in theirs}


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


TENANT_SCOPES = [x for x in SCOPES if x != "admin"]


def admitted(status: int) -> bool:
    """The gateway let the call through to the route (whatever the route then answered)."""
    return status not in (401, 403, 429) and status < 500


async def send(http: httpx.AsyncClient, route: tuple, token: str) -> httpx.Response:
    method, path, _, body, *_ = route
    kw = {"json": body} if body is not None else {}
    return await http.request(method, path, **kw, headers={
        "Idempotency-Key": str(uuid.uuid4()), "Authorization": f"Bearer {token}"})


async def test_a_revoked_key_is_refused_on_every_route(gateway: Gateway, b_records, http: httpx.AsyncClient):
    table = routes(gateway, b_records.order_id, b_records.return_id)
    tenant = await gateway.new_client(TENANT_SCOPES, customer=gateway.a.customer_id)
    operator = await gateway.new_client(["admin"])

    def key(route: tuple) -> str:
        return operator if route[2] == "admin" else tenant

    for route in table:
        r = await send(http, route, key(route))
        assert admitted(r.status_code), (route[:2], r.status_code, r.text)
    await gateway.revoke(tenant)
    await gateway.revoke(operator)

    async def all_refused():
        for route in table:
            assert_problem(await send(http, route, key(route)), 401)
        return True

    await eventually(all_refused, timeout=15, interval=0.5, what="the revocation on every route")


async def test_quota_on_every_route(gateway: Gateway, b_records, http: httpx.AsyncClient):
    tenant = await gateway.new_client(TENANT_SCOPES, customer=gateway.a.customer_id, rate=1)
    operator = await gateway.new_client(["admin"], rate=1)
    for route in routes(gateway, b_records.order_id, b_records.return_id):
        token = operator if route[2] == "admin" else tenant
        answers = await asyncio.gather(*(send(http, route, token) for _ in range(3)))
        limited = [r for r in answers if r.status_code == 429]
        assert limited, (route[:2], [r.status_code for r in answers])
        assert_problem(limited[0], 429)
        assert int(limited[0].headers["retry-after"]) >= 1
