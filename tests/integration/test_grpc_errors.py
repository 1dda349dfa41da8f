"""The runtime's error interceptor maps streaming RPCs as it maps unary ones: a
DomainError raised in a stream is its rich status (after the responses already
sent), anything else a bare INTERNAL that leaks nothing. Checked on a real
server with the runtime's interceptor, and on ERP's ExportSettlement in a real
ERP process whose store fails under it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from services.mesh.errors import FailedPrecondition, status_details
from services.mesh.grpcutil import ErrorInterceptor
from tests.helpers import eventually


class GeneratorStyle(erp_pb2_grpc.ErpServiceServicer):
    async def ExportSettlement(self, request, context):
        yield erp_pb2.ExportSettlementResponse(record_count=2)
        raise FailedPrecondition("the period is being closed", reason="PERIOD_CLOSING", subject="2026-11")


class WriterStyle(erp_pb2_grpc.ErpServiceServicer):
    async def ExportSettlement(self, request, context):
        await context.write(erp_pb2.ExportSettlementResponse(record_count=2))
        raise FailedPrecondition("the period is being closed", reason="PERIOD_CLOSING", subject="2026-11")


class Crashing(erp_pb2_grpc.ErpServiceServicer):
    async def ExportSettlement(self, request, context):
        yield erp_pb2.ExportSettlementResponse(record_count=2)
        raise RuntimeError("secret internals: /var/lib/db password=hunter2")


async def exported(stub) -> tuple[list, grpc.aio.AioRpcError]:
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for message in stub.ExportSettlement(erp_pb2.ExportSettlementRequest()):
            received.append(message)
    return received, e.value


@pytest.mark.parametrize("servicer", [GeneratorStyle, WriterStyle])
async def test_a_domain_error_in_a_stream_is_its_rich_status_after_what_was_sent(servicer):
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    erp_pb2_grpc.add_ErpServiceServicer_to_server(servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            received, err = await exported(erp_pb2_grpc.ErpServiceStub(ch))
    finally:
        await server.stop(0)
    assert [m.record_count for m in received] == [2]
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details() == "the period is being closed"
    status = status_details(err)
    kinds = {}
    for any_ in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.PreconditionFailure):
            msg = cls()
            if any_.Unpack(msg):
                kinds[cls] = msg
    assert kinds[error_details_pb2.ErrorInfo].reason == "PERIOD_CLOSING"
    assert kinds[error_details_pb2.PreconditionFailure].violations[0].subject == "2026-11"


async def test_anything_else_in_a_stream_is_a_bare_internal():
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    erp_pb2_grpc.add_ErpServiceServicer_to_server(Crashing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            received, err = await exported(erp_pb2_grpc.ErpServiceStub(ch))
    finally:
        await server.stop(0)
    assert len(received) == 1
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "hunter2" not in (err.debug_error_string() or "")


def ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


async def test_export_settlement_of_a_failing_store_is_internal_and_logged(start_service, data_dir):
    erp = start_service("erp")
    now = datetime.now(UTC)
    request = erp_pb2.ExportSettlementRequest(start_time=ts(now - timedelta(days=1)), end_time=ts(now))
    async with grpc.aio.insecure_channel(erp.addr) as ch:
        stub = erp_pb2_grpc.ErpServiceStub(ch)
        # It works first: one message with the (empty) totals.
        assert [m.record_count async for m in stub.ExportSettlement(request)] == [0]
        # The store loses a table under the running service (what a broken migration or disk does).
        with sqlite3.connect(data_dir / "erp.db") as db:
            db.execute("DROP TABLE credit_memos")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in stub.ExportSettlement(request):
                pass
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "credit_memos" not in (e.value.debug_error_string() or "")
    await eventually(lambda: "rpc.internal_error" in erp.log_path.read_text()
                     and "ExportSettlement" in erp.log_path.read_text(), timeout=10, what="the error logged")


async def test_a_method_the_servicer_leaves_to_the_generated_base_is_unimplemented():
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    erp_pb2_grpc.add_ErpServiceServicer_to_server(erp_pb2_grpc.ErpServiceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = erp_pb2_grpc.ErpServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.GetCustomer(erp_pb2.GetCustomerRequest(customer_id="C-1"))
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            _, err = await exported(stub)
            assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
