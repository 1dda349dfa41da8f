"""The guard of the gateway's gRPC port: every method it serves has a policy, and
operations (the runtime's DeadLetterService) need an operator's key."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from crossdock.admin.v1 import admin_pb2, admin_pb2_grpc
from gateway.guard import POLICIES, PUBLIC

from .conftest import Gateway

pytestmark = pytest.mark.e2e


def served_methods(addr: str) -> dict[str, str]:
    """Every method of every service the port lists by reflection: '/pkg.Service/Method' -> kind."""
    from google.protobuf.descriptor_pool import DescriptorPool

    with grpc.insecure_channel(addr) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(db)
        out = {}
        for service in db.get_services():
            for m in pool.FindServiceByName(service).methods:
                kind = {(False, False): "unary", (False, True): "server-streaming",
                        (True, False): "client-streaming", (True, True): "bidi"}[
                    (m.client_streaming, m.server_streaming)]
                out[f"/{service}/{m.name}"] = kind
    return out


def test_every_method_the_port_serves_has_a_policy(gateway: Gateway):
    methods = served_methods(gateway.grpc_addr)
    # The port serves at least the edge, the runtime's dead letters, health and reflection.
    services = {m.split("/")[1] for m in methods}
    assert {"crossdock.ordertoship.v1.OrderToShipService", "crossdock.returns.v1.ReturnsService",
            "crossdock.admin.v1.DeadLetterService", "crossdock.admin.v1.ApiClientService",
            "grpc.health.v1.Health"} <= services, services
    missing = sorted(set(methods) - set(POLICIES))
    assert not missing, f"served without an access policy: {missing}"
    # Public means probes and schema only.
    public = {m for m, p in POLICIES.items() if p == PUBLIC}
    assert all(m.startswith(("/grpc.health.", "/grpc.reflection.")) for m in public), public


async def test_a_method_without_a_policy_is_refused_before_it_runs():
    """Deny by default: a real server whose guard table does not name the method."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from gateway.guard import Guard

    ran = []

    class Health(health.aio.HealthServicer):
        async def Check(self, request, context):
            ran.append(request)
            return await super().Check(request, context)

    server = grpc.aio.server(interceptors=[Guard(policies={})])
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no access policy" in e.value.details()
        assert ran == []
    finally:
        await server.stop(0)


def _dlq_calls(stub):
    return {
        "ListDeadLetters": lambda md: stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest(), metadata=md),
        "GetDeadLetter": lambda md: stub.GetDeadLetter(
            admin_pb2.GetDeadLetterRequest(dead_letter_id="999999999"), metadata=md),
        "ReplayDeadLetter": lambda md: stub.ReplayDeadLetter(
            admin_pb2.ReplayDeadLetterRequest(dead_letter_id="999999999"), metadata=md),
        "DiscardDeadLetter": lambda md: stub.DiscardDeadLetter(
            admin_pb2.DiscardDeadLetterRequest(dead_letter_id="999999999"), metadata=md),
    }


async def test_dead_letters_on_the_gateway_need_an_operator_key(gateway: Gateway):
    a = gateway.a
    refused = {
        "no key": ((), grpc.StatusCode.UNAUTHENTICATED),
        "unknown key": ((("authorization", "Bearer cdk_cl_0000000000000000.nope"),),
                        grpc.StatusCode.UNAUTHENTICATED),
        "a tenant's key": ((("authorization", f"Bearer {a.tokens['all']}"),),
                           grpc.StatusCode.PERMISSION_DENIED),
        "a tenant-bound key with the admin scope": (
            (("authorization", f"Bearer {a.tokens['admin']}"),), grpc.StatusCode.PERMISSION_DENIED),
    }
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = admin_pb2_grpc.DeadLetterServiceStub(ch)
        for method, call in _dlq_calls(stub).items():
            for who, (md, code) in refused.items():
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(md)
                assert e.value.code() == code, (method, who, e.value)
        # An operator (unbound, admin scope) gets through to the service itself.
        admin = (("authorization", f"Bearer {gateway.admin_token}"),)
        listed = await stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest(), metadata=admin)
        assert listed.total >= 0
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ReplayDeadLetter(admin_pb2.ReplayDeadLetterRequest(dead_letter_id="999999999"),
                                        metadata=admin)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
