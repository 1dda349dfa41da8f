"""The messaging contract: every subject, the stream it lives in, its body type.

One table, so that a publisher cannot put the wrong body on a subject and a
consumer knows how to decode what it receives. Subjects name the domain, the
aggregate and the fact (``wms.inventory.adjusted``); commands start with
``cmd.<target>``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.erp.v1 import replenishment_pb2 as erp_repl
from crossdock.ordertoship.v1 import messages_pb2 as ots
from crossdock.returns.v1 import messages_pb2 as returns
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import replenishment_pb2 as wms_repl

# stream name -> subjects it captures (one stream per owning domain, and one
# per command target).
STREAMS: dict[str, list[str]] = {
    "ERP": ["erp.>"],
    "WMS": ["wms.>"],
    "TMS": ["tms.>"],
    "ORDERTOSHIP": ["ordertoship.>"],
    "RETURNS": ["returns.>"],
    "CMD_ERP": ["cmd.erp.>"],
    "CMD_WMS": ["cmd.wms.>"],
    "CMD_TMS": ["cmd.tms.>"],
    # Messages a consumer gave up on: dlq.<consumer>, original headers and
    # body plus crossdock-dlq-* headers (see bus.py). Bodies are not decoded
    # by subject here; their ce-type names the type.
    "DLQ": ["dlq.>"],
}

SUBJECTS: dict[str, type[Message]] = {
    # ERP events
    "erp.customer.upserted": erp.CustomerUpserted,
    "erp.item.upserted": erp.ItemUpserted,
    "erp.salesorder.accepted": erp.SalesOrderAccepted,
    "erp.salesorder.rejected": erp.SalesOrderRejected,
    "erp.salesorder.cancelled": erp.SalesOrderCancelled,
    "erp.salesorder.lines_cancelled": erp.SalesOrderLinesCancelled,
    "erp.invoice.posted": erp.InvoicePosted,
    "erp.return.authorized": erp.ReturnAuthorized,
    "erp.return.refused": erp.ReturnAuthorizationRefused,
    "erp.return.cancelled": erp.ReturnAuthorizationCancelled,
    "erp.creditmemo.posted": erp.CreditMemoPosted,
    "erp.creditmemo.refused": erp.CreditMemoRefused,
    "erp.inventory.corrected": erp.InventoryCorrected,
    # ERP commands
    "cmd.erp.salesorder.create": erp.CreateSalesOrder,
    "cmd.erp.salesorder.cancel": erp.CancelSalesOrder,
    "cmd.erp.salesorder.cancel_lines": erp.CancelSalesOrderLines,
    "cmd.erp.invoice.post": erp.PostInvoice,
    "cmd.erp.return.authorize": erp.AuthorizeReturn,
    "cmd.erp.return.cancel": erp.CancelReturnAuthorization,
    "cmd.erp.creditmemo.post": erp.PostCreditMemo,
    # WMS events
    "wms.inventory.adjusted": wms.InventoryAdjusted,
    "wms.fulfilment.allocated": wms.FulfilmentAllocated,
    "wms.fulfilment.backordered": wms.FulfilmentBackordered,
    "wms.fulfilment.rejected": wms.FulfilmentRejected,
    "wms.fulfilment.picked": wms.FulfilmentPicked,
    "wms.fulfilment.packed": wms.FulfilmentPacked,
    "wms.fulfilment.shipped": wms.FulfilmentShipped,
    "wms.fulfilment.cancelled": wms.FulfilmentCancelled,
    "wms.fulfilment.cancel_refused": wms.FulfilmentCancelRefused,
    "wms.fulfilment.exception": wms.FulfilmentExceptionRaised,
    "wms.return.expected": wms.ReturnExpected,
    "wms.return.rejected": wms.ReturnRejected,
    "wms.return.received": wms.ReturnReceived,
    "wms.return.inspected": wms.ReturnInspected,
    "wms.return.cancelled": wms.ReturnCancelled,
    "wms.return.cancel_refused": wms.ReturnCancelRefused,
    # WMS commands
    "cmd.wms.fulfilment.create": wms.CreateFulfilment,
    "cmd.wms.fulfilment.cancel": wms.CancelFulfilment,
    "cmd.wms.fulfilment.assign_shipment": wms.AssignShipment,
    "cmd.wms.fulfilment.resolve": wms.ResolveFulfilmentException,
    "cmd.wms.return.expect": wms.ExpectReturn,
    "cmd.wms.return.cancel": wms.CancelReturn,
    # TMS events
    "tms.shipment.booked": tms.ShipmentBooked,
    "tms.shipment.booking_failed": tms.ShipmentBookingFailed,
    "tms.shipment.dispatched": tms.ShipmentDispatched,
    # TMS commands
    "cmd.tms.shipment.book": tms.BookShipment,
    # order-to-ship events
    "ordertoship.order.created": ots.OrderCreated,
    "ordertoship.order.status_changed": ots.OrderStatusChanged,
    # returns events
    "returns.return.created": returns.ReturnCreated,
    "returns.return.status_changed": returns.ReturnStatusChanged,
    # replenishment (reorder points, requests, purchases and transfers)
    "erp.reorderpoint.upserted": erp_repl.ReorderPointUpserted,
    "erp.replenishment.planned": erp_repl.ReplenishmentPlanned,
    "wms.replenishment.requested": wms_repl.ReplenishmentRequested,
    "wms.stock.received": wms_repl.StockReceived,
    "wms.stock.transferred_out": wms_repl.StockTransferredOut,
    "wms.stock.transfer_refused": wms_repl.StockTransferRefused,
    "cmd.wms.stock.receive": wms_repl.ReceiveStock,
    "cmd.wms.stock.transfer_out": wms_repl.TransferStockOut,
}


def stream_for(subject: str) -> str:
    for name, patterns in STREAMS.items():
        for pattern in patterns:
            if subject.startswith(pattern.removesuffix(">")):
                return name
    raise KeyError(f"no stream captures subject {subject!r}")


def message_type(subject: str) -> type[Message]:
    try:
        return SUBJECTS[subject]
    except KeyError:
        raise KeyError(f"unknown subject {subject!r}: add it to services/mesh/contracts.py") from None


def type_name(message: Message | type[Message]) -> str:
    return message.DESCRIPTOR.full_name
