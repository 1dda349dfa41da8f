"""The ERP backend seam: what the ERP system service needs from a system of record.

The gRPC servicers (``grpc_api.py``) and the message handlers (``handlers.py``) call
only this; behind it sits the built-in reference ERP (``builtin/``, its own store:
the embedded default) or an adapter to a real ERP (``tryton/``). A backend is one
object per noun, each the system of record's side of that part of the contract:

- reads and RPC writes take their own connection or transaction;
- commands and events are applied inside the consumer's transaction ``tx`` of the
  service's own store (its inbox claim and outbox rows): a backend records its
  effect there (built-in) or in the ERP it talks to, keyed by a business key and
  looked up before a retry (an adapter), and emits the canonical ``erp.*`` events
  with ``tx.emit``;
- Crossdock's own rules (what may be invoiced or credited, the credit arithmetic,
  the ledger's sequence rule) are the pure functions of ``domain.py``, shared by
  every backend; a backend implements only what its system of record does.

``CROSSDOCK_ERP_BACKEND`` chooses (``builtin`` | ``tryton``); see ``__main__.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from crossdock.erp.v1 import replenishment_pb2 as repl_pb
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from services.mesh.store import Tx

Page = tuple[list, str]
Loop = Callable[[asyncio.Event], Awaitable[None]]


class MasterData(Protocol):
    """Customers (with credit limits and balances) and the item master."""

    async def upsert_customer(self, customer: erp_pb2.Customer) -> erp_pb2.Customer: ...
    async def get_customer(self, customer_id: str) -> erp_pb2.Customer: ...
    async def list_customers(self, page_size: int, page_token: str) -> Page: ...
    async def check_credit(self, customer_id: str, amount: Money) -> erp_pb2.CheckCreditResponse: ...
    async def upsert_item(self, item: erp_pb2.Item) -> erp_pb2.Item: ...
    async def get_item(self, sku: str) -> erp_pb2.Item: ...
    async def batch_get_items(self, skus: list[str]) -> list[erp_pb2.Item]: ...
    async def list_items(self, page_size: int, page_token: str) -> Page: ...


class SalesOrders(Protocol):
    """Sales orders: created (accepted or refused on credit), cancelled, lines cancelled."""

    async def create(self, tx: Tx, sales_order: erp_pb2.SalesOrder) -> None: ...
    async def cancel(self, tx: Tx, cmd: msgs.CancelSalesOrder) -> None: ...
    async def cancel_lines(self, tx: Tx, cmd: msgs.CancelSalesOrderLines) -> None: ...
    async def get(self, order_id: str) -> erp_pb2.SalesOrder: ...


class Invoicing(Protocol):
    """One invoice per shipment, at the order's prices."""

    async def post(self, tx: Tx, cmd: msgs.PostInvoice) -> None: ...
    async def list(self, page_size: int, page_token: str, order_id: str) -> Page: ...


class Ledger(Protocol):
    """The ERP's view of stock per SKU and warehouse, following WMS's movements."""

    async def apply_movements(self, tx: Tx, moves: list[tuple[wms_msgs.InventoryAdjusted, str]]) -> None: ...
    async def list_positions(self, page_size: int, page_token: str, warehouse_id: str) -> Page: ...
    async def correct(self, reference: str, corrections: list[erp_pb2.LedgerCorrection]
                      ) -> list[erp_pb2.LedgerCorrectionResult]: ...


class Returns(Protocol):
    """Return authorisations (RMAs) and one credit memo per return."""

    async def authorize(self, tx: Tx, cmd: msgs.AuthorizeReturn) -> None: ...
    async def cancel(self, tx: Tx, cmd: msgs.CancelReturnAuthorization) -> None: ...
    async def post_credit_memo(self, tx: Tx, cmd: msgs.PostCreditMemo) -> None: ...
    async def get_authorization(self, rma_number: str) -> erp_pb2.ReturnAuthorization: ...
    async def list_credit_memos(self, page_size: int, page_token: str, order_id: str,
                                customer_id: str) -> Page: ...


class Settlement(Protocol):
    """The invoices and credit memos of a period, from one snapshot, with its totals."""

    def export(self, start: datetime, end: datetime) -> AsyncIterator[erp_pb2.ExportSettlementResponse]: ...
    async def totals(self, start: datetime, end: datetime) -> list[erp_pb2.CurrencyTotals]: ...


class Replenishment(Protocol):
    """Reorder points (master data) and a purchase or transfer per WMS request."""

    async def upsert_reorder_point(self, point: repl_pb.ReorderPoint) -> repl_pb.ReorderPoint: ...
    async def list_reorder_points(self, page_size: int, page_token: str, warehouse_id: str) -> Page: ...
    async def get(self, replenishment_id: str) -> repl_pb.Replenishment: ...
    async def list(self, page_size: int, page_token: str, warehouse_id: str, sku: str) -> Page: ...
    async def plan(self, tx: Tx, request: wms_repl.ReplenishmentRequested) -> None: ...
    async def transfer_issued(self, tx: Tx, event: wms_repl.StockTransferredOut) -> None: ...
    async def transfer_refused(self, tx: Tx, event: wms_repl.StockTransferRefused) -> None: ...
    async def received(self, tx: Tx, event: wms_repl.StockReceived) -> None: ...


@dataclass
class ErpBackend:
    """One system of record behind the ERP contract, noun by noun."""

    name: str
    master_data: MasterData
    sales_orders: SalesOrders
    invoicing: Invoicing
    ledger: Ledger
    returns: Returns
    settlement: Settlement
    replenishment: Replenishment
    # Background work of the backend (a delivery loop, a change-feed tail...).
    loops: list[Loop] = field(default_factory=list)
