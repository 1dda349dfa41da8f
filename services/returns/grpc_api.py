"""Returns and reconciliation gRPC servicers: translate requests into use cases, nothing more."""

from __future__ import annotations

from datetime import timedelta

from opentelemetry.trace import SpanKind

from crossdock.reconciliation.v1 import reconciliation_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as pb
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh import telemetry
from services.mesh.app import Clients
from services.mesh.config import Settings
from services.mesh.errors import InvalidArgument
from services.mesh.store import Store

from . import reconciliation, service


class ReturnsServicer(returns_pb2_grpc.ReturnsServiceServicer):
    def __init__(self, store: Store, clients: Clients, settings: Settings) -> None:
        self.store = store
        self.clients = clients
        self.settings = settings

    async def CreateReturn(self, request, context):
        # The root of the return's trace: every later step carries it.
        with telemetry.tracer().start_as_current_span("CreateReturn", kind=SpanKind.SERVER):
            r = await service.create_return(self.store, self.clients, request,
                                            default_window_s=self.settings.returns_receive_window)
        return pb.CreateReturnResponse(customer_return=r)

    async def GetReturn(self, request, context):
        if not request.return_id:
            raise InvalidArgument([("return_id", "required")])
        return pb.GetReturnResponse(customer_return=await service.get_return(self.store, request.return_id))

    async def ListReturns(self, request, context):
        return await service.list_returns(self.store, request)

    async def AddTimelineNote(self, request, context):
        return pb.AddTimelineNoteResponse(entry=await service.add_timeline_note(self.store, request))

    async def CancelReturn(self, request, context):
        if not request.return_id:
            raise InvalidArgument([("return_id", "required")])
        r = await service.cancel_return(self.store, request.return_id, request.reason)
        return pb.CancelReturnResponse(customer_return=r)


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, store: Store, clients: Clients, settings: Settings) -> None:
        self.store = store
        self.clients = clients
        self.settings = settings

    async def ReconcileInventory(self, request, context):
        grace = (request.grace_period.ToTimedelta() if request.HasField("grace_period")
                 else timedelta(seconds=self.settings.reconcile_grace))
        if grace < timedelta(0):
            raise InvalidArgument([("grace_period", "must not be negative")])
        return await reconciliation.reconcile(self.store, self.clients, repair=request.repair,
                                              warehouse_id=request.warehouse_id, grace=grace)

    async def ListReconciliationRuns(self, request, context):
        return await reconciliation.list_runs(self.store, request)


