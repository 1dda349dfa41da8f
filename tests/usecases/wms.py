"""A warehouse driven through the WMS's use cases in-process (no broker, no process):
each call runs in its own store transaction, as the servicer and the consumers do,
and ``sent()`` returns what the calls since the last one left in the outbox."""

from __future__ import annotations

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.wms.v1 import messages_pb2 as events
from crossdock.wms.v1 import wms_pb2
from services.mesh.store import Store
from services.wms import fulfilment, stock, stock_commands
from services.wms.fulfilment import Delays

from .support import Outbox, Published

WH = "WH-1"
DELAYS = Delays(pick=0, pack=0, ship=0)


def lines(**quantities: int) -> list[SkuQuantity]:
    return [SkuQuantity(sku=sku, quantity=q) for sku, q in quantities.items()]


def create_command(order_id: str, policy: int = wms_pb2.SHORTAGE_POLICY_BACKORDER, warehouse_id: str = WH,
                   **quantities: int) -> events.CreateFulfilment:
    return events.CreateFulfilment(order_id=order_id, warehouse_id=warehouse_id, shortage_policy=policy,
                                   lines=lines(**quantities), ship_to=Address(name="Ada", country_code="US"))


def status_name(order: wms_pb2.FulfilmentOrder) -> str:
    return wms_pb2.FulfilmentStatus.Name(order.status).removeprefix("FULFILMENT_STATUS_")


def milestones(order: wms_pb2.FulfilmentOrder) -> list[str]:
    return [wms_pb2.FulfilmentStatus.Name(m.status).removeprefix("FULFILMENT_STATUS_")
            for m in order.milestones]


def pairs(quantities) -> list[tuple[str, int]]:
    return [(q.sku, q.quantity) for q in quantities]


class Warehouse:
    """WH-1 on a migrated WMS store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    async def open(cls, usecase_store) -> Warehouse:
        wms = cls(await usecase_store("wms"))
        await wms.run(stock.upsert_warehouse, wms_pb2.Warehouse(warehouse_id=WH, name="Main"))
        return wms

    async def run(self, use_case, *args, **kwargs):
        """``use_case(tx, *args, **kwargs)`` in a transaction of its own."""
        async with self.store.transaction() as tx:
            return await use_case(tx, *args, **kwargs)

    async def sent(self, subject: str = "") -> list[Published]:
        """The messages left to publish (on ``subject``, or under it), taken as the relay would."""
        return await Outbox.read(self.store, subject, take=True)

    async def subjects(self) -> list[str]:
        return [m.subject for m in await self.sent()]

    # ---- stock ----

    async def receive(self, receipt_id: str, warehouse_id: str = WH, **quantities: int):
        return await self.run(stock_commands.receive_stock, wms_pb2.ReceiveStockRequest(
            receipt_id=receipt_id, warehouse_id=warehouse_id, lines=lines(**quantities)), DELAYS)

    async def positions(self, *skus: str) -> dict[str, tuple[int, int, int]]:
        """sku -> (on_hand, allocated, sequence) in WH-1."""
        async with self.store.read() as conn:
            found = await stock.get_availability(conn, skus, WH)
        return {p.sku: (p.on_hand, p.allocated, p.sequence) for p in found}

    # ---- fulfilment ----

    async def create(self, order_id: str, policy: int = wms_pb2.SHORTAGE_POLICY_BACKORDER,
                     warehouse_id: str = WH, **quantities: int) -> None:
        await self.run(fulfilment.create_fulfilment,
                       create_command(order_id, policy, warehouse_id, **quantities), DELAYS)

    async def order(self, order_id: str) -> wms_pb2.FulfilmentOrder:
        async with self.store.read() as conn:
            return await fulfilment.fulfilment_pb(conn, order_id)

    async def status(self, order_id: str) -> str:
        return status_name(await self.order(order_id))

    async def pick(self, order_id: str, **found: int) -> bool:
        return await self.run(fulfilment.pick, order_id, DELAYS, found or None)

    async def pack(self, order_id: str, weight: int = 0, **damaged: int) -> bool:
        return await self.run(fulfilment.pack, order_id, DELAYS, weight, damaged or None)

    async def assign(self, order_id: str, shipment_id: str = "", wave: int = 0) -> None:
        await self.run(fulfilment.assign_shipment, events.AssignShipment(
            order_id=order_id, shipment_id=shipment_id or f"SHP-{order_id}", carrier_id="FAST",
            tracking_number="FAS1", wave=wave), DELAYS)

    async def ship(self, order_id: str) -> bool:
        return await self.run(fulfilment.ship, order_id, DELAYS)

    async def cancel(self, order_id: str, reason: str = "") -> None:
        await self.run(fulfilment.cancel_fulfilment,
                       events.CancelFulfilment(order_id=order_id, reason=reason), DELAYS)

    async def resolve(self, order_id: str, action: int, wave: int = 0) -> None:
        await self.run(fulfilment.resolve_exception, events.ResolveFulfilmentException(
            order_id=order_id, action=action, wave=wave), DELAYS)

    async def allocated_order(self, order_id: str, **quantities: int) -> None:
        """Stock received for it, then the order created and allocated; the outbox emptied."""
        await self.receive(f"R-{order_id}", **quantities)
        await self.create(order_id, **quantities)
        assert await self.status(order_id) == "ALLOCATED"
        await self.sent()
