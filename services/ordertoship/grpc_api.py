"""Order-to-ship gRPC servicer: translates requests into use cases, nothing more."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from services.mesh import telemetry
from services.mesh.app import Clients
from services.mesh.config import Settings
from services.mesh.errors import InvalidArgument
from services.mesh.store import Store

from . import service
from .placement import Placement


class OrderToShipServicer(order_to_ship_pb2_grpc.OrderToShipServiceServicer):
    def __init__(self, store: Store, clients: Clients, settings: Settings) -> None:
        self.store = store
        self.clients = clients
        self.settings = settings
        self.placement = Placement(clients, settings.ordertoship_wms_lookup_budget)

    async def SubmitOrder(self, request, context):
        # The order's trace starts with this call (the gRPC server span is its
        # parent, or the channel's span when it sent a traceparent).
        with telemetry.tracer().start_as_current_span("ordertoship.submit_order", kind=SpanKind.INTERNAL):
            order = await service.submit_order(
                self.store, self.clients, self.placement, request,
                default_policy=self.settings.default_shortage_policy,
                default_exception_policy=self.settings.default_exception_policy,
            )
        return pb.SubmitOrderResponse(order=order)

    async def GetOrder(self, request, context):
        if not request.order_id:
            raise InvalidArgument([("order_id", "required")])
        return pb.GetOrderResponse(order=await service.get_order(self.store, request.order_id))

    async def ListOrders(self, request, context):
        return await service.list_orders(self.store, request)

    async def CancelOrder(self, request, context):
        if not request.order_id:
            raise InvalidArgument([("order_id", "required")])
        order = await service.cancel_order(self.store, request.order_id, request.reason)
        return pb.CancelOrderResponse(order=order)

    async def ListExceptions(self, request, context):
        return await service.list_exceptions(self.store, request)

    async def GetException(self, request, context):
        exc, order = await service.get_exception(self.store, request.exception_id)
        return pb.GetExceptionResponse(exception=exc, order=order)

    async def ResolveException(self, request, context):
        exc, order = await service.resolve_exception(self.store, request)
        return pb.ResolveExceptionResponse(exception=exc, order=order)

    async def SetExceptionPolicy(self, request, context):
        return pb.SetExceptionPolicyResponse(rule=await service.set_exception_policy(self.store, request))

    async def ListExceptionPolicies(self, request, context):
        rules = await service.list_exception_policies(self.store, self.settings.default_exception_policy)
        return pb.ListExceptionPoliciesResponse(rules=rules)

    async def AddTimelineNote(self, request, context):
        return pb.AddTimelineNoteResponse(entry=await service.add_timeline_note(self.store, request))
