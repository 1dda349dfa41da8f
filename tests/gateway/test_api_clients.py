"""crossdock.admin.v1.ApiClientService: operators manage the channels' keys through
the gateway's API (never its database), starting from the operator token."""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from crossdock.admin.v1 import api_clients_pb2 as pb
from crossdock.admin.v1 import api_clients_pb2_grpc
from tests.helpers import eventually

from .conftest import Gateway
from .status_shape import detail

pytestmark = pytest.mark.e2e


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


async def test_an_operator_creates_lists_and_revokes_a_client(gateway: Gateway, http: httpx.AsyncClient):
    op = bearer(gateway.operator_token)
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = api_clients_pb2_grpc.ApiClientServiceStub(ch)
        made = await stub.CreateApiClient(pb.CreateApiClientRequest(
            channel="returns-portal", customer_id=gateway.a.customer_id,
            scopes=["returns:read", "orders:read"], rate_limit=5), metadata=op)
        c = made.api_client
        assert made.token.startswith(f"cdk_{c.client_id}.")
        assert (c.name, c.channel, c.customer_id, sorted(c.scopes), c.rate_limit) == (
            "returns-portal", "returns-portal", gateway.a.customer_id, ["orders:read", "returns:read"], 5)
        assert c.create_time.seconds and not c.HasField("revoke_time")
        # The token works at once, with exactly its scopes and tenant.
        key = {"Authorization": f"Bearer {made.token}"}
        assert (await http.get("/v1/orders", headers=key)).status_code == 200
        assert (await http.get("/v1/availability?sku=X", headers=key)).status_code == 403
        # Listed, page by page, never with its key.
        seen, token = {}, ""
        while True:
            page = await stub.ListApiClients(pb.ListApiClientsRequest(page_size=2, page_token=token),
                                             metadata=op)
            seen.update({x.client_id: x for x in page.api_clients})
            if not (token := page.next_page_token):
                break
        assert seen[c.client_id] == c and len(seen) >= 8  # the fixtures' clients too
        assert made.token.split(".")[1] not in str(seen)
        # Revoked: refused within seconds; a second revocation and an unknown id are refused.
        revoked = (await stub.RevokeApiClient(pb.RevokeApiClientRequest(client_id=c.client_id),
                                              metadata=op)).api_client
        assert revoked.HasField("revoke_time")

        async def refused():
            return (await http.get("/v1/orders", headers=key)).status_code == 401

        await eventually(refused, timeout=10, what="the revocation to take effect")
        err = await failure(stub.RevokeApiClient(pb.RevokeApiClientRequest(client_id=c.client_id),
                                                 metadata=op))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert detail(err, error_details_pb2.ErrorInfo).reason == "API_CLIENT_REVOKED"
        err = await failure(stub.RevokeApiClient(pb.RevokeApiClientRequest(client_id="cl_nope"), metadata=op))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    # Every change is in the audit log, by the operator.
    entries = (await http.get("/v1/admin/audit", params={"limit": 100, "client_id": "operator"},
                              headers=gateway.admin())).json()["entries"]
    routes = {(e["route"].rsplit("/", 1)[1], e["resource"], e["outcome"]) for e in entries}
    assert {("CreateApiClient", c.client_id, "ok"), ("RevokeApiClient", c.client_id, "ok"),
            ("RevokeApiClient", c.client_id, "failed_precondition")} <= routes


async def test_a_bad_request_names_its_fields(gateway: Gateway):
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = api_clients_pb2_grpc.ApiClientServiceStub(ch)
        err = await failure(stub.CreateApiClient(pb.CreateApiClientRequest(
            channel="", customer_id="bad id!", scopes=["orders:read", "root"], rate_limit=-1),
            metadata=bearer(gateway.operator_token)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in detail(err, error_details_pb2.BadRequest).field_violations}
    assert fields == {"channel", "customer_id", "scopes[1]", "rate_limit"}


async def test_the_operator_token_is_the_only_way_in_without_a_client(gateway: Gateway):
    forged = "cdk_operator." + "x" * 43
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = api_clients_pb2_grpc.ApiClientServiceStub(ch)
        err = await failure(stub.ListApiClients(pb.ListApiClientsRequest(), metadata=bearer(forged)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = await stub.ListApiClients(pb.ListApiClientsRequest(),
                                           metadata=bearer(gateway.operator_token))
        assert listed.api_clients
        # The operator token is no API client: it cannot be revoked through the API.
        err = await failure(stub.RevokeApiClient(pb.RevokeApiClientRequest(client_id="operator"),
                                                 metadata=bearer(gateway.operator_token)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
