"""TMS gRPC servicer: translates requests into use cases, nothing more."""

from __future__ import annotations

from crossdock.tms.v1 import tms_pb2, tms_pb2_grpc
from services.mesh.errors import InvalidArgument
from services.mesh.store import Store

from . import domain, service


class TmsServicer(tms_pb2_grpc.TmsServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def UpsertCarrier(self, request, context):
        async with self.store.transaction() as tx:
            await service.upsert_carrier(tx, request.carrier)
        return tms_pb2.UpsertCarrierResponse(carrier=request.carrier)

    async def ListCarriers(self, request, context):
        async with self.store.read() as conn:
            return tms_pb2.ListCarriersResponse(carriers=await service.list_carriers(conn))

    async def GetShippingOptions(self, request, context):
        problems = []
        if not request.destination.country_code:
            problems.append(("destination.country_code", "required"))
        if request.weight_grams <= 0:
            problems.append(("weight_grams", "must be positive"))
        if problems:
            raise InvalidArgument(problems)
        async with self.store.read() as conn:
            rates = await service.load_rates(conn)
        options = domain.shipping_options(
            rates,
            country_code=request.destination.country_code,
            weight_grams=request.weight_grams,
            currency_code=request.currency_code,
        )
        return tms_pb2.GetShippingOptionsResponse(options=[service.option_pb(o) for o in options])

    async def GetShipment(self, request, context):
        async with self.store.read() as conn:
            row = await service.get_shipment(conn, request.order_id, request.shipment_id)
        return tms_pb2.GetShipmentResponse(shipment=service.shipment_pb(row))
