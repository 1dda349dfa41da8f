"""ERP gRPC servicer: translates requests into use cases, nothing more."""

from __future__ import annotations

from datetime import UTC

from grpc_status import rpc_status

from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from services.mesh.errors import DomainError
from services.mesh.store import Store

from . import service, settlement


def _period(request) -> tuple:
    start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
    end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
    return settlement.period(start, end)


class ErpServicer(erp_pb2_grpc.ErpServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def GetCustomer(self, request, context):
        async with self.store.read() as conn:
            return erp_pb2.GetCustomerResponse(
                customer=await service.get_customer(conn, request.customer_id))

    async def ListCustomers(self, request, context):
        async with self.store.read() as conn:
            found, token = await service.list_customers(conn, request.page_size, request.page_token)
        return erp_pb2.ListCustomersResponse(customers=found, next_page_token=token)

    async def UpsertCustomer(self, request, context):
        async with self.store.transaction() as tx:
            customer = await service.upsert_customer(tx, request.customer)
        return erp_pb2.UpsertCustomerResponse(customer=customer)

    async def GetItem(self, request, context):
        async with self.store.read() as conn:
            return erp_pb2.GetItemResponse(item=await service.get_item(conn, request.sku))

    async def BatchGetItems(self, request, context):
        """The items found, in request order. An unknown SKU is simply absent from the
        answer (no error): the caller compares and decides what a missing item means."""
        async with self.store.read() as conn:
            return erp_pb2.BatchGetItemsResponse(
                items=await service.batch_get_items(conn, list(request.skus)))

    async def ListItems(self, request, context):
        async with self.store.read() as conn:
            found, token = await service.list_items(conn, request.page_size, request.page_token)
        return erp_pb2.ListItemsResponse(items=found, next_page_token=token)

    async def UpsertItem(self, request, context):
        async with self.store.transaction() as tx:
            item = await service.upsert_item(tx, request.item)
        return erp_pb2.UpsertItemResponse(item=item)

    async def CheckCredit(self, request, context):
        async with self.store.read() as conn:
            return await service.check_credit(conn, request.customer_id, request.amount)

    async def GetSalesOrder(self, request, context):
        async with self.store.read() as conn:
            return erp_pb2.GetSalesOrderResponse(
                sales_order=await service.get_sales_order(conn, request.order_id))

    async def ListInvoices(self, request, context):
        async with self.store.read() as conn:
            found, token = await service.list_invoices(
                conn, request.page_size, request.page_token, request.order_id)
        return erp_pb2.ListInvoicesResponse(invoices=found, next_page_token=token)

    async def ListLedgerPositions(self, request, context):
        async with self.store.read() as conn:
            found, token = await service.list_ledger_positions(
                conn, request.page_size, request.page_token, request.warehouse_id)
        return erp_pb2.ListLedgerPositionsResponse(positions=found, next_page_token=token)

    async def GetReturnAuthorization(self, request, context):
        async with self.store.read() as conn:
            return erp_pb2.GetReturnAuthorizationResponse(
                return_authorization=await service.get_return_authorization(conn, request.rma_number))

    async def ListCreditMemos(self, request, context):
        async with self.store.read() as conn:
            found, token = await service.list_credit_memos(
                conn, request.page_size, request.page_token, request.order_id, request.customer_id)
        return erp_pb2.ListCreditMemosResponse(credit_memos=found, next_page_token=token)

    async def CorrectLedger(self, request, context):
        async with self.store.transaction() as tx:
            results = await service.correct_ledger(tx, request.reference, list(request.corrections))
        return erp_pb2.CorrectLedgerResponse(results=results)

    async def ExportSettlement(self, request, context):
        # A streaming handler: the error interceptor maps unary calls only.
        try:
            start, end = _period(request)
        except DomainError as err:
            status = rpc_status.to_status(err.to_status())
            await context.abort(status.code, status.details, status.trailing_metadata)
        async for chunk in settlement.export(self.store, start, end):
            yield chunk

    async def GetSettlementTotals(self, request, context):
        start, end = _period(request)
        async with settlement.snapshot(self.store) as conn:
            totals = await settlement.totals(conn, start, end)
        return erp_pb2.GetSettlementTotalsResponse(totals=totals)
