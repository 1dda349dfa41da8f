"""ERP gRPC servicers: translate requests into calls of the ERP backend, nothing more."""

from __future__ import annotations

from datetime import UTC

from grpc_status import rpc_status

from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc, replenishment_pb2_grpc
from crossdock.erp.v1 import replenishment_pb2 as repl_pb
from services.mesh.errors import DomainError

from . import contract
from .backend import ErpBackend


def _period(request) -> tuple:
    start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
    end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
    return contract.period(start, end)


class ErpServicer(erp_pb2_grpc.ErpServiceServicer):
    def __init__(self, erp: ErpBackend) -> None:
        self.erp = erp

    async def GetCustomer(self, request, context):
        customer = await self.erp.master_data.get_customer(request.customer_id)
        return erp_pb2.GetCustomerResponse(customer=customer)

    async def ListCustomers(self, request, context):
        found, token = await self.erp.master_data.list_customers(request.page_size, request.page_token)
        return erp_pb2.ListCustomersResponse(customers=found, next_page_token=token)

    async def UpsertCustomer(self, request, context):
        customer = await self.erp.master_data.upsert_customer(request.customer)
        return erp_pb2.UpsertCustomerResponse(customer=customer)

    async def GetItem(self, request, context):
        return erp_pb2.GetItemResponse(item=await self.erp.master_data.get_item(request.sku))

    async def BatchGetItems(self, request, context):
        """The items found, in request order. An unknown SKU is simply absent from the
        answer (no error): the caller compares and decides what a missing item means."""
        found = await self.erp.master_data.batch_get_items(list(request.skus))
        return erp_pb2.BatchGetItemsResponse(items=found)

    async def ListItems(self, request, context):
        found, token = await self.erp.master_data.list_items(request.page_size, request.page_token)
        return erp_pb2.ListItemsResponse(items=found, next_page_token=token)

    async def UpsertItem(self, request, context):
        return erp_pb2.UpsertItemResponse(item=await self.erp.master_data.upsert_item(request.item))

    async def CheckCredit(self, request, context):
        return await self.erp.master_data.check_credit(request.customer_id, request.amount)

    async def GetSalesOrder(self, request, context):
        return erp_pb2.GetSalesOrderResponse(sales_order=await self.erp.sales_orders.get(request.order_id))

    async def ListInvoices(self, request, context):
        found, token = await self.erp.invoicing.list(request.page_size, request.page_token, request.order_id)
        return erp_pb2.ListInvoicesResponse(invoices=found, next_page_token=token)

    async def ListLedgerPositions(self, request, context):
        found, token = await self.erp.ledger.list_positions(request.page_size, request.page_token,
                                                            request.warehouse_id)
        return erp_pb2.ListLedgerPositionsResponse(positions=found, next_page_token=token)

    async def GetReturnAuthorization(self, request, context):
        return erp_pb2.GetReturnAuthorizationResponse(
            return_authorization=await self.erp.returns.get_authorization(request.rma_number))

    async def ListCreditMemos(self, request, context):
        found, token = await self.erp.returns.list_credit_memos(
            request.page_size, request.page_token, request.order_id, request.customer_id)
        return erp_pb2.ListCreditMemosResponse(credit_memos=found, next_page_token=token)

    async def CorrectLedger(self, request, context):
        results = await self.erp.ledger.correct(request.reference, list(request.corrections))
        return erp_pb2.CorrectLedgerResponse(results=results)

    async def ExportSettlement(self, request, context):
        # A streaming handler: the error interceptor maps unary calls only.
        try:
            start, end = _period(request)
        except DomainError as err:
            status = rpc_status.to_status(err.to_status())
            await context.abort(status.code, status.details, status.trailing_metadata)
        async for chunk in self.erp.settlement.export(start, end):
            yield chunk

    async def GetSettlementTotals(self, request, context):
        start, end = _period(request)
        return erp_pb2.GetSettlementTotalsResponse(totals=await self.erp.settlement.totals(start, end))


class ReplenishmentServicer(replenishment_pb2_grpc.ReplenishmentServiceServicer):
    def __init__(self, erp: ErpBackend) -> None:
        self.erp = erp

    async def UpsertReorderPoint(self, request, context):
        point = await self.erp.replenishment.upsert_reorder_point(request.reorder_point)
        return repl_pb.UpsertReorderPointResponse(reorder_point=point)

    async def ListReorderPoints(self, request, context):
        found, token = await self.erp.replenishment.list_reorder_points(
            request.page_size, request.page_token, request.warehouse_id)
        return repl_pb.ListReorderPointsResponse(reorder_points=found, next_page_token=token)

    async def ListReplenishments(self, request, context):
        found, token = await self.erp.replenishment.list(request.page_size, request.page_token,
                                                         request.warehouse_id, request.sku)
        return repl_pb.ListReplenishmentsResponse(replenishments=found, next_page_token=token)

    async def GetReplenishment(self, request, context):
        return repl_pb.GetReplenishmentResponse(
            replenishment=await self.erp.replenishment.get(request.replenishment_id))
