"""The security matrix of the gateway's gRPC port, the same as HTTP's: every
method server reflection lists x {no key, unknown key, wrong secret, not a
bearer key, wrong scope, tenant-bound admin key, another tenant's ids (reads,
cancels, list filters, creates), revoked key, quota}, DeadLetterService and the
API-client admin included; and every state-changing method is audited, refusals
too. A method the port serves without a row here fails the matrix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass

import crossdock.admin.v1.admin_pb2  # noqa: F401  (registers the descriptors used by name)
import crossdock.admin.v1.api_clients_pb2  # noqa: F401
import crossdock.admin.v1.users_pb2  # noqa: F401
import crossdock.ordertoship.v1.order_to_ship_pb2  # noqa: F401
import crossdock.returns.v1.returns_pb2  # noqa: F401
from gateway.guard import POLICIES, PUBLIC
from tests.helpers import eventually

from .conftest import Gateway, Records
from .test_grpc_guard import served_methods

pytestmark = pytest.mark.e2e

Code = grpc.StatusCode
ADMITTED = "admitted"  # the guard let it through: whatever the service itself answers
OTS = "/crossdock.ordertoship.v1.OrderToShipService/"
RET = "/crossdock.returns.v1.ReturnsService/"
DLQ = "/crossdock.admin.v1.DeadLetterService/"
CLIENTS = "/crossdock.admin.v1.ApiClientService/"
USERS = "/crossdock.admin.v1.UserService/"


@dataclass
class Ids:
    g: Gateway
    a: Records
    b: Records


@dataclass
class Row:
    """One method: a request the caller may make (``own``), and, for tenant data, the
    requests naming another tenant's records with the code each must get."""

    own: Callable[[Ids], dict]
    admin: bool = False
    foreign: list[tuple[Callable[[Ids], dict], Code]] = field(default_factory=list)


def submit(i: Ids, **kw) -> dict:
    a = i.g.a.world
    return {"request_id": str(uuid.uuid4()), "lines": [{"sku": a.skus[0], "quantity": 1}],
            "warehouse_id": a.warehouse_id, **kw}


def return_line(i: Ids) -> dict:
    return {"sku": i.g.a.world.skus[0], "quantity": 1, "reason": 5}  # RETURN_REASON_OTHER


NOPE = "999999999"
ROWS: dict[str, Row] = {
    OTS + "SubmitOrder": Row(lambda i: submit(i), foreign=[
        (lambda i: submit(i, customer_id=i.g.b.customer_id), Code.INVALID_ARGUMENT)]),
    OTS + "GetOrder": Row(lambda i: {"order_id": i.a.order_id}, foreign=[
        (lambda i: {"order_id": i.b.order_id}, Code.NOT_FOUND)]),
    OTS + "ListOrders": Row(lambda i: {"page_size": 100}, foreign=[
        (lambda i: {"customer_id": i.g.b.customer_id}, Code.INVALID_ARGUMENT)]),
    OTS + "CancelOrder": Row(lambda i: {"order_id": i.a.order_id}, foreign=[
        (lambda i: {"order_id": i.b.order_id}, Code.NOT_FOUND)]),
    OTS + "ListExceptions": Row(lambda i: {}, admin=True),
    OTS + "GetException": Row(lambda i: {"exception_id": "EXC-NOPE"}, admin=True),
    OTS + "ResolveException": Row(lambda i: {"exception_id": "EXC-NOPE", "resolved_by": "t"}, admin=True),
    OTS + "SetExceptionPolicy": Row(lambda i: {"customer_id": i.g.a.customer_id}, admin=True),
    OTS + "ListExceptionPolicies": Row(lambda i: {}, admin=True),
    OTS + "AddTimelineNote": Row(lambda i: {"order_id": i.a.order_id, "actor": "t"}, admin=True),
    RET + "CreateReturn": Row(lambda i: {"request_id": str(uuid.uuid4()), "order_id": i.a.order_id,
                                         "lines": [return_line(i)]}, foreign=[
        (lambda i: {"request_id": str(uuid.uuid4()), "order_id": i.b.order_id, "lines": [return_line(i)]},
         Code.NOT_FOUND)]),
    RET + "GetReturn": Row(lambda i: {"return_id": i.a.return_id}, foreign=[
        (lambda i: {"return_id": i.b.return_id}, Code.NOT_FOUND)]),
    RET + "ListReturns": Row(lambda i: {"page_size": 100}, foreign=[
        (lambda i: {"customer_id": i.g.b.customer_id}, Code.INVALID_ARGUMENT)]),
    RET + "CancelReturn": Row(lambda i: {"return_id": "RET-NOPE"}, foreign=[
        (lambda i: {"return_id": i.b.return_id}, Code.NOT_FOUND)]),
    RET + "AddTimelineNote": Row(lambda i: {"return_id": i.a.return_id, "actor": "t"}, admin=True),
    DLQ + "ListDeadLetters": Row(lambda i: {}, admin=True),
    DLQ + "GetDeadLetter": Row(lambda i: {"dead_letter_id": NOPE}, admin=True),
    DLQ + "ReplayDeadLetter": Row(lambda i: {"dead_letter_id": NOPE}, admin=True),
    DLQ + "DiscardDeadLetter": Row(lambda i: {"dead_letter_id": NOPE}, admin=True),
    CLIENTS + "CreateApiClient": Row(lambda i: {"channel": "matrix", "scopes": ["lookups"]}, admin=True),
    CLIENTS + "ListApiClients": Row(lambda i: {}, admin=True),
    CLIENTS + "RevokeApiClient": Row(lambda i: {"client_id": "cl_nope"}, admin=True),
    USERS + "CreateUser": Row(lambda i: {"username": f"matrix-{uuid.uuid4().hex[:8]}", "role": 1},
                              admin=True),
    USERS + "ListUsers": Row(lambda i: {}, admin=True),
    USERS + "DisableUser": Row(lambda i: {"username": "nobody-here"}, admin=True),
    USERS + "ResetPassword": Row(lambda i: {"username": "nobody-here"}, admin=True),
}


def rpc(channel: grpc.aio.Channel, method: str):
    """A unary callable for '/pkg.Service/Method' from the generated descriptors."""
    service, name = method.strip("/").split("/")
    desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    request_cls, response_cls = GetMessageClass(desc.input_type), GetMessageClass(desc.output_type)
    call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_cls.FromString)
    return request_cls, call


async def outcome(channel, method: str, fields: dict, token: str | None, scheme: str = "Bearer"):
    """(code, response or error) of one call."""
    request_cls, call = rpc(channel, method)
    request = request_cls(**fields)
    md = () if token is None else (("authorization", f"{scheme} {token}"),)
    try:
        return Code.OK, await call(request, metadata=md, timeout=30)
    except grpc.aio.AioRpcError as err:
        return err.code(), err


def admitted(code: Code) -> bool:
    return code not in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED,
                        Code.INTERNAL, Code.UNKNOWN)


@pytest.fixture(scope="module")
def ids(gateway, a_records, b_records) -> Ids:
    return Ids(gateway, a_records, b_records)


def test_every_served_method_has_a_row_and_a_policy(gateway: Gateway):
    served = {m for m in served_methods(gateway.grpc_addr) if POLICIES.get(m) != PUBLIC}
    assert served, "the port serves nothing?"
    assert served <= set(ROWS), f"no security-matrix row for {sorted(served - set(ROWS))}"
    for method, row in ROWS.items():
        assert POLICIES[method].internal == row.admin, method


async def test_credentials_scopes_and_operations(gateway: Gateway, ids: Ids):
    a = gateway.a
    real_id = a.tokens["all"].split(".")[0]
    no_access = {
        "no key": (None, "Bearer", Code.UNAUTHENTICATED),
        "unknown key": ("cdk_cl_0000000000000000.nope", "Bearer", Code.UNAUTHENTICATED),
        "wrong secret": (f"{real_id}.wrongsecret", "Bearer", Code.UNAUTHENTICATED),
        "garbage": ("x" * 300, "Bearer", Code.UNAUTHENTICATED),
        "not a bearer key": (a.tokens["all"], "Basic", Code.UNAUTHENTICATED),
        "wrong scope": (a.tokens["none"], "Bearer", Code.PERMISSION_DENIED),
    }
    checked = 0
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        for method, row in ROWS.items():
            fields = row.own(ids)
            for who, (token, scheme, expected) in no_access.items():
                code, err = await outcome(ch, method, fields, token, scheme)
                assert code == expected, (method, who, err)
            # A tenant-bound key, even holding the admin scope, never reaches operations.
            code, err = await outcome(ch, method, fields, a.tokens["admin"])
            if row.admin:
                assert code == Code.PERMISSION_DENIED, (method, err)
                code, err = await outcome(ch, method, fields, gateway.admin_token)
            assert admitted(code), (method, code, err)  # the caller entitled to it gets through
            checked += 1
    assert checked == len(ROWS)


async def test_another_tenants_ids_on_every_read_cancel_list_and_create(gateway: Gateway, ids: Ids):
    a, b = gateway.a, gateway.b
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        for method, row in ROWS.items():
            for make, expected in row.foreign:
                for label in ("all", "admin"):  # a tenant-bound admin key is still a tenant
                    request = make(ids)
                    code, err = await outcome(ch, method, request, a.tokens[label])
                    assert code == expected, (method, label, err)
                    text, asked = f"{err.details()} {err.trailing_metadata()}", str(request)
                    for secret in (b.customer_id, ids.b.order_id, ids.b.return_id, b.world.warehouse_id):
                        assert secret not in text or secret in asked, (method, secret, text)
        # Listings: A's own records are there (the check proves something), B's never.
        for method, key, own_id in ((OTS + "ListOrders", "orders", ids.a.order_id),
                                    (RET + "ListReturns", "returns", ids.a.return_id)):
            for label in ("all", "admin"):
                code, resp = await outcome(ch, method, {"page_size": 100}, a.tokens[label])
                assert code == Code.OK, resp
                listed = list(getattr(resp, key))
                ident = "order_id" if key == "orders" else "return_id"
                assert own_id in {getattr(x, ident) for x in listed}, (method, label)
                assert {x.customer_id for x in listed} == {a.customer_id}, (method, label)
        # A filter naming B's order inside A's listing finds nothing of B's.
        code, resp = await outcome(ch, RET + "ListReturns", {"order_id": ids.b.order_id}, a.tokens["all"])
        assert code == Code.OK and list(resp.returns) == []
        code, resp = await outcome(ch, RET + "ListReturns", {"order_id": ids.b.order_id}, b.tokens["all"])
        assert ids.b.return_id in {r.return_id for r in resp.returns}


async def test_a_revoked_key_is_refused_on_every_method(gateway: Gateway, ids: Ids):
    tenant = await gateway.new_client(["orders:read", "orders:write", "returns:read", "returns:write"],
                                      customer=gateway.a.customer_id)
    operator = await gateway.new_client(["admin"])
    key = {m: operator if row.admin else tenant for m, row in ROWS.items()}
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        for method, row in ROWS.items():
            code, err = await outcome(ch, method, row.own(ids), key[method])
            assert admitted(code), (method, err)
        await gateway.revoke(tenant)
        await gateway.revoke(operator)

        async def all_refused():
            for method, row in ROWS.items():
                code, _ = await outcome(ch, method, row.own(ids), key[method])
                assert code == Code.UNAUTHENTICATED, (method, code)
            return True

        await eventually(all_refused, timeout=15, interval=0.5, what="the revocation on every method")


async def test_quota_on_every_method(gateway: Gateway, ids: Ids):
    tenant = await gateway.new_client(["orders:read", "orders:write", "returns:read", "returns:write"],
                                      customer=gateway.a.customer_id, rate=1)
    operator = await gateway.new_client(["admin"], rate=1)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        for method, row in ROWS.items():
            token = operator if row.admin else tenant
            results = await asyncio.gather(*(outcome(ch, method, row.own(ids), token) for _ in range(3)))
            limited = [err for code, err in results if code == Code.RESOURCE_EXHAUSTED]
            assert limited, (method, [c for c, _ in results])
            trailers = dict(limited[0].trailing_metadata() or ())
            assert int(trailers["retry-after"]) >= 1, (method, trailers)


async def test_every_state_changing_method_is_audited_refusals_too(gateway: Gateway, ids: Ids):
    audited = sorted(m for m, p in POLICIES.items() if p.audited and m in ROWS)
    assert audited
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        for method in audited:
            code, _ = await outcome(ch, method, ROWS[method].own(ids), None)
            assert code == Code.UNAUTHENTICATED
            token = gateway.admin_token if ROWS[method].admin else gateway.a.tokens["all"]
            code, _ = await outcome(ch, method, ROWS[method].own(ids), token)
            assert admitted(code), method
    entries, before = [], None
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        while len(entries) < 3000:
            params = {"limit": 100, **({"before": before} if before else {})}
            page = (await http.get("/v1/admin/audit", params=params, headers=gateway.admin())).json()
            entries += page["entries"]
            if not (before := page["next_before"]):
                break
    for method in audited:
        mine = [e for e in entries if e["transport"] == "grpc" and e["route"] == method]
        outcomes = {e["outcome"] for e in mine}
        assert "unauthenticated" in outcomes and outcomes - {"unauthenticated"}, (method, outcomes)
        assert all(len(e["trace_id"]) == 32 for e in mine)
