"""WMS gRPC servicer: translates requests into use cases, nothing more."""

from __future__ import annotations

from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh.store import Store

from . import fulfilment, returns, stock, stock_commands
from .autopilot import ReturnsAutopilot
from .fulfilment import Delays


class WmsServicer(wms_pb2_grpc.WmsServiceServicer):
    def __init__(self, store: Store, delays: Delays, pilot: ReturnsAutopilot) -> None:
        self.store = store
        self.delays = delays
        self.pilot = pilot

    async def UpsertWarehouse(self, request, context):
        async with self.store.transaction() as tx:
            await stock.upsert_warehouse(tx, request.warehouse)
        return wms_pb2.UpsertWarehouseResponse(warehouse=request.warehouse)

    async def ListWarehouses(self, request, context):
        async with self.store.read() as conn:
            return wms_pb2.ListWarehousesResponse(warehouses=await stock.list_warehouses(conn))

    async def GetAvailability(self, request, context):
        async with self.store.read() as conn:
            positions = await stock.get_availability(conn, request.skus, request.warehouse_id)
        return wms_pb2.GetAvailabilityResponse(positions=positions)

    async def ListInventory(self, request, context):
        async with self.store.read() as conn:
            positions, token = await stock.list_inventory(
                conn, request.page_size, request.page_token, request.warehouse_id)
        return wms_pb2.ListInventoryResponse(positions=positions, next_page_token=token)

    async def ReceiveStock(self, request, context):
        async with self.store.transaction() as tx:
            positions = await stock_commands.receive_stock(tx, request, self.delays)
        return wms_pb2.ReceiveStockResponse(positions=positions)

    async def GetFulfilmentOrder(self, request, context):
        async with self.store.read() as conn:
            order = await fulfilment.fulfilment_pb(conn, request.order_id)
        return wms_pb2.GetFulfilmentOrderResponse(fulfilment_order=order)

    async def ConfirmPick(self, request, context):
        async with self.store.transaction() as tx:
            order = await fulfilment.confirm_pick(tx, request.order_id, self.delays, request.picked_lines)
        return wms_pb2.ConfirmPickResponse(fulfilment_order=order)

    async def ConfirmPack(self, request, context):
        async with self.store.transaction() as tx:
            order = await fulfilment.confirm_pack(tx, request.order_id, self.delays,
                                                  request.package_weight_grams, request.damaged_lines)
        return wms_pb2.ConfirmPackResponse(fulfilment_order=order)

    async def ConfirmShip(self, request, context):
        async with self.store.transaction() as tx:
            order = await fulfilment.confirm_ship(tx, request.order_id, self.delays)
        return wms_pb2.ConfirmShipResponse(fulfilment_order=order)

    async def ReportStockCount(self, request, context):
        async with self.store.transaction() as tx:
            position, affected = await stock_commands.report_stock_count(tx, request, self.delays)
        return wms_pb2.ReportStockCountResponse(position=position, affected_order_ids=affected)

    async def GetReturnReceipt(self, request, context):
        async with self.store.read() as conn:
            receipt = await returns.receipt_pb(conn, request.rma_number)
        return wms_pb2.GetReturnReceiptResponse(return_receipt=receipt)

    async def ReceiveReturn(self, request, context):
        async with self.store.transaction() as tx:
            receipt = await returns.receive_return(tx, request, self.pilot.inspect_in)
        return wms_pb2.ReceiveReturnResponse(return_receipt=receipt)

    async def InspectReturn(self, request, context):
        async with self.store.transaction() as tx:
            receipt = await returns.inspect_return(tx, request)
        return wms_pb2.InspectReturnResponse(return_receipt=receipt)

    async def GetInventoryAsOf(self, request, context):
        async with self.store.read() as conn:
            positions = await stock.inventory_as_of(conn, request.positions)
        return wms_pb2.GetInventoryAsOfResponse(positions=positions)
