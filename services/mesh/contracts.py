"""The messaging contract: every subject, the stream it lives in, its body type.

One table, so that a publisher cannot put the wrong body on a subject and a
consumer knows how to decode what it receives. Subjects name the domain, the
aggregate and the fact (``wms.inventory.adjusted``); commands start with
``cmd.<target>``.

Who publishes and who consumes each subject is here too: events are
published by the service of their domain (the subject's first token),
commands by the services in ``COMMAND_SENDERS``, and ``SUBSCRIPTIONS`` lists
every durable consumer with the service that runs it. Each consumer's
dispatch table must handle exactly the subjects routed to it (checked when
the service starts, and by tests/unit/test_dispatch.py); the NATS
permissions in deploy/k8s and the event catalog are built from the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # JetStream's own word that a consumer gave up on a message (max deliveries
    # reached). The server sends it as a core NATS message, and only when the
    # next pull arrives; kept in a stream it is never missed, whoever is
    # listening at that moment (bus.py dead-letters each one).
    "ADVISORIES": ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"],
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


# ---- who publishes, who consumes ----

# Who sends each command (process services send commands to system services).
COMMAND_SENDERS: dict[str, str] = {
    "cmd.erp.salesorder.*": "ordertoship",
    "cmd.erp.invoice.*": "ordertoship",
    "cmd.wms.fulfilment.*": "ordertoship",
    "cmd.tms.shipment.*": "ordertoship",
    "cmd.erp.return.*": "returns",
    "cmd.erp.creditmemo.*": "returns",
    "cmd.wms.return.*": "returns",
    "cmd.wms.stock.*": "erp",  # replenishment deliveries and transfers
}


@dataclass(frozen=True)
class Subscription:
    """A durable consumer: the service that runs it, its stream and its filter subjects."""

    service: str
    stream: str
    filters: tuple[str, ...]


SUBSCRIPTIONS: dict[str, Subscription] = {
    # ERP: the commands addressed to it, the stock movements its ledger follows,
    # and the replenishment requests it plans.
    "erp-commands": Subscription("erp", "CMD_ERP", ("cmd.erp.>",)),
    "erp-wms-events": Subscription("erp", "WMS", ("wms.inventory.adjusted",)),
    "erp-replenishment": Subscription("erp", "WMS", (
        "wms.replenishment.requested", "wms.stock.received", "wms.stock.transferred_out",
        "wms.stock.transfer_refused")),
    # WMS: its commands and the master data it replicates.
    "wms-commands": Subscription("wms", "CMD_WMS", ("cmd.wms.>",)),
    "wms-master-data": Subscription("wms", "ERP", ("erp.item.upserted", "erp.customer.upserted")),
    "wms-reorder-points": Subscription("wms", "ERP", ("erp.reorderpoint.upserted",)),
    # TMS: its commands, ship confirmations (dispatch) and master data.
    "tms-commands": Subscription("tms", "CMD_TMS", ("cmd.tms.>",)),
    "tms-wms-events": Subscription("tms", "WMS", ("wms.fulfilment.shipped",)),
    "tms-master-data": Subscription("tms", "ERP", ("erp.item.upserted", "erp.customer.upserted")),
    # Order-to-ship: every ERP, WMS and TMS fact about an order, and master data.
    "ordertoship-erp": Subscription("ordertoship", "ERP", ("erp.salesorder.>", "erp.invoice.posted")),
    "ordertoship-wms": Subscription("ordertoship", "WMS", ("wms.fulfilment.>",)),
    "ordertoship-master-data": Subscription(
        "ordertoship", "ERP", ("erp.customer.upserted", "erp.item.upserted")),
    "ordertoship-tms": Subscription(
        "ordertoship", "TMS", ("tms.shipment.booked", "tms.shipment.booking_failed")),
    # Returns: every ERP and WMS fact about a return.
    "returns-erp": Subscription("returns", "ERP", ("erp.return.>", "erp.creditmemo.>")),
    "returns-wms": Subscription("returns", "WMS", ("wms.return.>",)),
}


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def routed_subjects(durable: str) -> list[str]:
    """The subjects of the contract a durable consumer receives."""
    filters = SUBSCRIPTIONS[durable].filters
    return [s for s in SUBJECTS if any(matches(f, s) for f in filters)]


def publishers(subject: str) -> set[str]:
    """The services allowed to publish a subject (its domain's, or a command's senders)."""
    if subject.startswith("cmd."):
        return {svc for pattern, svc in COMMAND_SENDERS.items() if matches(pattern, subject)}
    return {subject.split(".", 1)[0]}


def consumers(subject: str) -> list[str]:
    """The durable consumers a subject is routed to."""
    return [d for d, sub in SUBSCRIPTIONS.items() if any(matches(f, subject) for f in sub.filters)]
