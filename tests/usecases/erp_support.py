"""The ERP use cases' harness: the built-in backend on a migrated store, and the
canonical messages a test feeds it (as order-to-ship, returns and WMS would)."""

from __future__ import annotations

from dataclasses import dataclass

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from services.erp.backend import ErpBackend
from services.erp.builtin import builtin_backend
from services.mesh.config import Settings
from services.mesh.store import Store


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


def customer(cid: str, limit: int, **kw) -> erp_pb2.Customer:
    return erp_pb2.Customer(customer_id=cid, name=cid, currency_code="USD", credit_limit=usd(limit),
                            ship_to=Address(name=cid, country_code="US"), **kw)


def sales_order(order_id: str, customer_id: str, *lines: tuple[str, int, int]) -> erp_pb2.SalesOrder:
    """lines: (sku, quantity, unit price)"""
    return erp_pb2.SalesOrder(order_id=order_id, customer_id=customer_id, lines=[
        erp_pb2.SalesOrderLine(line_number=n, sku=sku, quantity=qty, unit_price=usd(price))
        for n, (sku, qty, price) in enumerate(lines, 1)])


def shipped(order_id: str, shipment_id: str, *lines: tuple[int, str, int]) -> msgs.PostInvoice:
    """lines: (line number, sku, quantity)"""
    return msgs.PostInvoice(order_id=order_id, shipment_id=shipment_id, shipped_lines=[
        erp_pb2.SalesOrderLine(line_number=n, sku=s, quantity=q) for n, s, q in lines])


def movement(sku: str, warehouse_id: str, sequence: int, delta: int, after: int,
             reason: int = wms_msgs.MOVEMENT_REASON_RECEIPT,
             reference: str = "") -> wms_msgs.InventoryAdjusted:
    return wms_msgs.InventoryAdjusted(sku=sku, warehouse_id=warehouse_id, delta=delta, on_hand_after=after,
                                      sequence=sequence, reason=reason, reference=reference)


@dataclass
class Erp:
    """The built-in ERP backend and its store; ``send`` applies a command or event as
    the consumer would (one transaction)."""

    backend: ErpBackend
    store: Store

    async def send(self, use_case, message) -> None:
        async with self.store.transaction() as tx:
            await use_case(tx, message)

    async def create(self, so: erp_pb2.SalesOrder) -> None:
        await self.send(self.backend.sales_orders.create, so)

    async def invoice(self, cmd: msgs.PostInvoice) -> None:
        await self.send(self.backend.invoicing.post, cmd)

    async def move(self, *events: wms_msgs.InventoryAdjusted) -> None:
        async with self.store.transaction() as tx:
            await self.backend.ledger.apply_movements(tx, [(e, f"ev-{i}") for i, e in enumerate(events)])


async def builtin_erp(usecase_store, **settings) -> Erp:
    store = await usecase_store("erp")
    return Erp(builtin_backend(store, Settings(**settings)), store)
