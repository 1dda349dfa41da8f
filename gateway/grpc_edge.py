"""The gRPC edge: OrderToShipService and ReturnsService served by the gateway
for internal gRPC clients and forwarded to the process services. Who may call
what (API keys, scopes, quotas, audit) is decided before these servicers run,
by the guard (``guard.py``); they apply what depends on the record: tenant
isolation (another customer's order or return answers exactly like a missing
one) and the fields a client must not set. A downstream error is forwarded
with its code, message and google.rpc.Status details."""

from __future__ import annotations

import hashlib

import grpc

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.errors import InvalidArgument, NotFound

from . import validation
from .governance import ApiClient
from .guard import caller, set_resource

# The trailer that carries a status's google.rpc.Status (code, message, details).
STATUS_DETAILS = "grpc-status-details-bin"


def status_trailers(err: grpc.aio.AioRpcError) -> tuple[tuple[str, bytes], ...]:
    """The rich-status trailer of a downstream error (nothing else of its metadata)."""
    return tuple((k, v) for k, v in (err.trailing_metadata() or ()) if k == STATUS_DETAILS)


async def forward(context: grpc.aio.ServicerContext, call, *, about: tuple[str, str] | None = None):
    """Await a downstream call; its error ends this call with the same code, message and
    details. ``about`` (kind, id): the one record looked up, whose NOT_FOUND is the edge's own
    (so that it reads exactly like the NOT_FOUND of a record of another customer)."""
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        if about and err.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(*about) from None
        await context.abort(err.code(), err.details() or "", status_trailers(err))


class Edge:
    def __init__(self, core) -> None:
        self.core = core

    async def owned_order(self, context, client: ApiClient, order_id: str) -> ots.Order:
        """The order when the client may see it; NotFound, the same for a missing
        order and for another customer's, otherwise."""
        r = await forward(context, self.core.ots.GetOrder(ots.GetOrderRequest(order_id=order_id)),
                          about=("order", order_id))
        if not client.owns(r.order.customer_id):
            raise NotFound("order", order_id)
        return r.order

    async def owned_return(self, context, client: ApiClient, return_id: str) -> rpb.CustomerReturn:
        r = await forward(context, self.core.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id)),
                          about=("return", return_id))
        if not client.owns(r.customer_return.customer_id):
            raise NotFound("return", return_id)
        return r.customer_return


def _check(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _own_customer(client: ApiClient, customer_id: str) -> None:
    if client.customer_id and customer_id not in ("", client.customer_id):
        raise InvalidArgument([("customer_id", "not your customer")])


def _scoped_request_id(client: ApiClient, request_id: str) -> str:
    # Each client has its own request-id space: one client cannot replay another's.
    return "gw-" + hashlib.sha256(f"{client.client_id}\0{request_id}".encode()).hexdigest()[:40]


class OrderToShipEdge(order_to_ship_pb2_grpc.OrderToShipServiceServicer):
    def __init__(self, edge: Edge) -> None:
        self.e = edge
        self.cap = edge.core.settings.gateway_max_page_size

    async def SubmitOrder(self, request, context):
        client = caller()
        _check(validation.submit_order(request))
        _own_customer(client, request.customer_id)
        forwarded = ots.SubmitOrderRequest()
        forwarded.CopyFrom(request)
        forwarded.request_id = _scoped_request_id(client, request.request_id)
        forwarded.customer_id = request.customer_id or client.customer_id
        forwarded.channel = client.channel
        if not forwarded.customer_id:
            raise InvalidArgument([("customer_id", "required")])
        r = await forward(context, self.e.core.ots.SubmitOrder(forwarded))
        r.order.request_id = request.request_id
        set_resource(r.order.order_id)
        return r

    async def GetOrder(self, request, context):
        _check(validation.order_id(request))
        return ots.GetOrderResponse(order=await self.e.owned_order(context, caller(), request.order_id))

    async def ListOrders(self, request, context):
        client = caller()
        _check(validation.list_orders(request, self.cap))
        _own_customer(client, request.customer_id)
        forwarded = ots.ListOrdersRequest()
        forwarded.CopyFrom(request)
        forwarded.customer_id = client.customer_id or request.customer_id
        return await forward(context, self.e.core.ots.ListOrders(forwarded))

    async def CancelOrder(self, request, context):
        _check(validation.order_id(request))
        await self.e.owned_order(context, caller(), request.order_id)
        return await forward(context, self.e.core.ots.CancelOrder(request))


class ReturnsEdge(returns_pb2_grpc.ReturnsServiceServicer):
    def __init__(self, edge: Edge) -> None:
        self.e = edge
        self.cap = edge.core.settings.gateway_max_page_size

    async def CreateReturn(self, request, context):
        client = caller()
        _check(validation.create_return(request))
        await self.e.owned_order(context, client, request.order_id)
        forwarded = rpb.CreateReturnRequest()
        forwarded.CopyFrom(request)
        forwarded.request_id = _scoped_request_id(client, request.request_id)
        r = await forward(context, self.e.core.returns.CreateReturn(forwarded))
        r.customer_return.request_id = request.request_id
        set_resource(r.customer_return.return_id)
        return r

    async def GetReturn(self, request, context):
        _check(validation.return_id(request))
        found = await self.e.owned_return(context, caller(), request.return_id)
        return rpb.GetReturnResponse(customer_return=found)

    async def ListReturns(self, request, context):
        client = caller()
        _check(validation.list_returns(request, self.cap))
        _own_customer(client, request.customer_id)
        forwarded = rpb.ListReturnsRequest()
        forwarded.CopyFrom(request)
        forwarded.customer_id = client.customer_id or request.customer_id
        return await forward(context, self.e.core.returns.ListReturns(forwarded))

    async def CancelReturn(self, request, context):
        _check(validation.return_id(request))
        await self.e.owned_return(context, caller(), request.return_id)
        return await forward(context, self.e.core.returns.CancelReturn(request))
