"""Order-to-ship's use cases in-process: submission, the facts of the systems
(``service.advance``), cancellation, reads. A real SQLite store made by the
service's own migrations; the outbox stands for the bus.

ERP and WMS are reached over gRPC only at submission (customer, items, credit
pre-check, warehouse choice): here they are small fakes passed in place of the
service's clients, as the composition root would pass the real stubs.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts
from services.mesh.errors import DomainError, FailedPrecondition, NotFound
from services.mesh.process import ConcurrentUpdate, Decision, Entry
from services.mesh.store import Store
from services.ordertoship import service
from services.ordertoship.placement import Placement
from tests.usecases.support import Outbox

CUSTOMER = "C-ACME"
WAREHOUSE = "WH-1"
PRICES = {"SKU-A": 500, "SKU-B": 1_000}


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


def not_found(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=details)


@dataclass
class FakeErp:
    """ERP's lookups as intake makes them (after its own master-data replica)."""

    customers: dict[str, erp_pb2.Customer] = field(default_factory=dict)
    items: dict[str, erp_pb2.Item] = field(default_factory=dict)

    async def GetCustomer(self, req, **_):  # noqa: N802 - a gRPC method
        if req.customer_id not in self.customers:
            raise not_found(f"customer {req.customer_id!r} not found")
        return erp_pb2.GetCustomerResponse(customer=self.customers[req.customer_id])

    async def BatchGetItems(self, req, **_):  # noqa: N802
        return erp_pb2.BatchGetItemsResponse(items=[self.items[s] for s in req.skus if s in self.items])

    async def CheckCredit(self, req, **_):  # noqa: N802
        return erp_pb2.CheckCreditResponse(approved=True, available_credit=usd(10**9))


@dataclass
class FakeWms:
    warehouses: list[str]
    # (warehouse, sku) -> available
    available: dict[tuple[str, str], int] = field(default_factory=dict)
    # Closed: every lookup waits until it opens (a WMS slower than intake waits for).
    gate: asyncio.Event | None = None
    asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def _answering(self) -> None:
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()

    async def ListWarehouses(self, req, **_):  # noqa: N802
        await self._answering()
        return wms_pb2.ListWarehousesResponse(
            warehouses=[wms_pb2.Warehouse(warehouse_id=w) for w in self.warehouses])

    async def GetAvailability(self, req, **_):  # noqa: N802
        await self._answering()
        return wms_pb2.GetAvailabilityResponse(positions=[
            wms_pb2.InventoryPosition(warehouse_id=wh, sku=sku, available=qty)
            for (wh, sku), qty in self.available.items() if sku in req.skus])


@dataclass
class Downstream:
    """Stands for ``services.mesh.app.Clients``: the stubs intake uses."""

    erp: FakeErp
    wms: FakeWms


@dataclass
class OrderDesk:
    """Order-to-ship's use cases over one store, as the servicer and the handlers call them."""

    store: Store
    clients: Downstream
    placement: Placement

    def request(self, lines: dict[str, int], **kw) -> pb.SubmitOrderRequest:
        return pb.SubmitOrderRequest(
            request_id=str(uuid.uuid4()), customer_id=kw.pop("customer_id", CUSTOMER),
            lines=[pb.OrderLine(sku=s, quantity=q) for s, q in lines.items()],
            **{"warehouse_id": WAREHOUSE, **kw})

    async def submit(self, lines: dict[str, int] | pb.SubmitOrderRequest, **kw) -> pb.Order:
        req = lines if isinstance(lines, pb.SubmitOrderRequest) else self.request(lines, **kw)
        return await service.submit_order(self.store, self.clients, self.placement, req,
                                          default_policy="BACKORDER")

    async def fact(self, subject: str, **fields) -> bool:
        """A system's event, as its consumer hands it to the workflow (body typed by the contract)."""
        body = contracts.message_type(subject)(**fields)
        async with self.store.transaction() as tx:
            return await service.advance(tx, subject, body)

    async def order(self, order_id: str) -> pb.Order:
        return await service.get_order(self.store, order_id)


async def master_data(store: Store) -> None:
    """What ERP's master-data events leave in the replica (``erp.customer/item.upserted``)."""
    async with store.transaction() as tx:
        await service.replicate_customer(tx, erp_pb2.Customer(
            customer_id=CUSTOMER, currency_code="USD",
            ship_to=Address(name="Acme", line1="1 Main St", city="X", postal_code="1", country_code="US")))
        for sku, price in PRICES.items():
            await service.replicate_item(tx, erp_pb2.Item(sku=sku, unit_price=usd(price), active=True))


async def order_desk(usecase_store) -> OrderDesk:
    """A migrated order-to-ship store with master data, its fake ERP and WMS (one warehouse)."""
    store = await usecase_store("ordertoship")
    await master_data(store)
    clients = Downstream(FakeErp(), FakeWms([WAREHOUSE], {(WAREHOUSE, s): 100 for s in PRICES}))
    return OrderDesk(store, clients, Placement(clients, budget=10.0))


@pytest.fixture
async def desk(usecase_store) -> OrderDesk:
    return await order_desk(usecase_store)


def status(o: pb.Order) -> str:
    return pb.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_")


def steps(o: pb.Order) -> list[str]:
    return [e.step for e in o.timeline]


def fo(order_id: str, wave: int = 1, **kw) -> wms_pb2.FulfilmentOrder:
    return wms_pb2.FulfilmentOrder(order_id=order_id, wave=wave, **kw)


async def sent(store: Store, prefix: str = "cmd") -> list[str]:
    """The subjects left in the outbox under ``prefix``, taken as the relay would."""
    return [m.subject for m in await Outbox.read(store, prefix, take=True)]


async def released(desk: OrderDesk, lines: dict[str, int] | None = None, **kw) -> str:
    """An order accepted by ERP and sent to the warehouse; the outbox emptied."""
    o = await desk.submit(lines or {"SKU-A": 2, "SKU-B": 1}, **kw)
    await desk.fact("erp.salesorder.accepted", sales_order=erp_pb2.SalesOrder(order_id=o.order_id))
    await Outbox.read(desk.store, take=True)
    return o.order_id


async def packed(desk: OrderDesk, order_id: str, wave: int = 1, weight: int = 1_800) -> None:
    for subject in ("wms.fulfilment.allocated", "wms.fulfilment.picked"):
        await desk.fact(subject, fulfilment_order=fo(order_id, wave))
    await desk.fact("wms.fulfilment.packed", fulfilment_order=fo(order_id, wave, package_weight_grams=weight))


# ---- submission ----

async def test_a_submission_is_priced_from_the_replica_recorded_and_sent_to_erp(desk, outbox):
    o = await desk.submit({"SKU-A": 2, "SKU-B": 1})
    assert status(o) == "RECEIVED" and o.warehouse_id == WAREHOUSE
    assert o.total.amount_minor == 2 * 500 + 1_000
    assert [ln.unit_price.amount_minor for ln in o.lines] == [500, 1_000]
    assert o.ship_to.country_code == "US"  # the customer's, as none was given
    assert steps(o) == ["received"]
    created, command = await outbox(desk.store)
    assert (created.subject, created.key) == ("ordertoship.order.created", o.order_id)
    assert command.subject == "cmd.erp.salesorder.create"
    so = command.body.sales_order
    assert (so.order_id, so.customer_id, so.total.amount_minor) == (o.order_id, CUSTOMER, 2_000)
    assert [(ln.line_number, ln.sku, ln.quantity) for ln in so.lines] == [(1, "SKU-A", 2), (2, "SKU-B", 1)]


async def test_the_same_request_is_the_same_order_and_another_body_under_its_id_is_refused(desk, outbox):
    req = desk.request({"SKU-A": 1})
    first = await desk.submit(req)
    await outbox(desk.store, take=True)
    assert (await desk.submit(req)).order_id == first.order_id
    assert await outbox(desk.store) == []  # nothing sent twice
    other = pb.SubmitOrderRequest()
    other.CopyFrom(req)
    other.lines[0].quantity = 2
    with pytest.raises(FailedPrecondition) as refused:
        await desk.submit(other)
    assert refused.value.reason == "REQUEST_ID_REUSED" and first.order_id in refused.value.message
    listed = await service.list_orders(desk.store, pb.ListOrdersRequest(customer_id=CUSTOMER))
    assert [x.order_id for x in listed.orders] == [first.order_id]


def resources(err: DomainError) -> list[tuple[str, str]]:
    """The ResourceInfo details of the status the error becomes on the wire."""
    out = []
    for detail in err.to_status().details:
        info = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):
            out.append((info.resource_type, info.resource_name))
    return out


async def refused(desk: OrderDesk, req: pb.SubmitOrderRequest) -> NotFound:
    with pytest.raises(NotFound) as info:
        await desk.submit(req)
    listed = await service.list_orders(desk.store, pb.ListOrdersRequest())
    assert listed.orders == [], "a refused order was recorded"
    return info.value


async def test_an_unknown_sku_is_named_as_the_missing_item_not_the_customer(desk):
    err = await refused(desk, desk.request({"SKU-A": 1, "SKU-NOPE": 1}))
    assert resources(err) == [("item", "SKU-NOPE")]
    assert "SKU-NOPE" in err.message and CUSTOMER not in err.message


async def test_every_unknown_sku_of_an_order_is_named(desk):
    err = await refused(desk, desk.request({"SKU-X": 1, "SKU-A": 1, "SKU-Y": 2}))
    assert resources(err) == [("item", "SKU-X"), ("item", "SKU-Y")]
    assert "SKU-X" in err.message and "SKU-Y" in err.message


async def test_an_unknown_warehouse_is_named_as_the_missing_warehouse(desk):
    err = await refused(desk, desk.request({"SKU-A": 1}, warehouse_id="WH-NOPE"))
    assert resources(err) == [("warehouse", "WH-NOPE")]
    assert "WH-NOPE" in err.message and CUSTOMER not in err.message


async def test_an_unknown_warehouse_is_refused_even_when_wms_answers_slower_than_the_intake_budget(desk):
    # Intake does not wait for a slow WMS: it places from what WMS last said,
    # and WMS never mentioned WH-NOPE. A warehouse nobody has heard of is checked, not assumed.
    desk.placement = Placement(desk.clients, budget=0.0)
    wms = desk.clients.wms
    wms.gate = asyncio.Event()
    submitted = asyncio.ensure_future(desk.submit({"SKU-A": 1}, warehouse_id="WH-NOPE"))
    await wms.asked.wait()
    wms.gate.set()  # WMS answers, later than the budget
    with pytest.raises(NotFound) as info:
        await submitted
    assert resources(info.value) == [("warehouse", "WH-NOPE")]
    assert (await service.list_orders(desk.store, pb.ListOrdersRequest())).orders == []


async def test_an_unknown_customer_is_named_as_the_missing_customer(desk):
    err = await refused(desk, desk.request({"SKU-A": 1}, customer_id="C-NOBODY"))
    assert resources(err) == [("customer", "C-NOBODY")]


async def test_a_slow_wms_does_not_hold_up_an_order_for_a_warehouse_it_reported(desk):
    desk.placement = Placement(desk.clients, budget=0.0)
    await desk.submit({"SKU-A": 1})  # WMS answered: WH-1 is known
    wms = desk.clients.wms
    wms.gate = asyncio.Event()  # from now on WMS does not answer
    o = await desk.submit({"SKU-A": 1})
    assert o.warehouse_id == WAREHOUSE and status(o) == "RECEIVED"
    assert [e.detail for e in o.timeline if e.step == "waiting.wms"] == [
        f"WMS answered slower than 0 ms: warehouse {WAREHOUSE} chosen from the availability it last reported"]
    wms.gate.set()  # the lookup left running finishes


# ---- the facts of the systems ----

async def test_an_order_goes_from_credit_approval_to_invoiced_with_every_step_in_its_timeline(desk, outbox):
    o = await desk.submit({"SKU-A": 2, "SKU-B": 1})
    oid = o.order_id
    await outbox(desk.store, take=True)

    await desk.fact("erp.salesorder.accepted", sales_order=erp_pb2.SalesOrder(order_id=oid))
    assert status(await desk.order(oid)) == "RELEASED"
    (release,) = await outbox(desk.store, "cmd", take=True)
    assert release.subject == "cmd.wms.fulfilment.create" and release.body.warehouse_id == WAREHOUSE
    assert release.body.shortage_policy == wms_pb2.SHORTAGE_POLICY_BACKORDER
    assert [(q.sku, q.quantity) for q in release.body.lines] == [("SKU-A", 2), ("SKU-B", 1)]

    await packed(desk, oid, weight=1_800)
    (book,) = await outbox(desk.store, "cmd", take=True)
    assert book.subject == "cmd.tms.shipment.book"
    assert (book.body.shipment_id, book.body.weight_grams, book.body.destination.country_code) == (
        f"SHP-{oid}", 1_800, "US")

    await desk.fact("tms.shipment.booked", shipment=tms_pb2.Shipment(
        shipment_id=f"SHP-{oid}", order_id=oid, carrier_id="UPS", service_level="GROUND",
        tracking_number="1Z"))
    (assign,) = await outbox(desk.store, "cmd", take=True)
    assert assign.subject == "cmd.wms.fulfilment.assign_shipment" and assign.body.tracking_number == "1Z"

    await desk.fact("wms.fulfilment.shipped", wave=1, fulfilment_order=fo(
        oid, shipment_id=f"SHP-{oid}", tracking_number="1Z", carrier_id="UPS"),
        shipped_lines=[SkuQuantity(sku="SKU-A", quantity=2), SkuQuantity(sku="SKU-B", quantity=1)])
    (post,) = await outbox(desk.store, "cmd", take=True)
    assert post.subject == "cmd.erp.invoice.post" and post.body.shipment_id == f"SHP-{oid}"
    assert [(ln.line_number, ln.quantity) for ln in post.body.shipped_lines] == [(1, 2), (2, 1)]

    await desk.fact("erp.invoice.posted", invoice=erp_pb2.Invoice(
        invoice_id="INV-1", order_id=oid, shipment_id=f"SHP-{oid}", total=usd(2_000)))
    done = await desk.order(oid)
    assert status(done) == "INVOICED" and done.invoice_id == "INV-1"
    assert (done.carrier_id, done.tracking_number) == ("UPS", "1Z")
    assert [(s.shipment_id, s.invoice_id) for s in done.shipments] == [(f"SHP-{oid}", "INV-1")]
    assert steps(done) == ["received", "credit.approved", "released", "allocated", "picked", "packed",
                           "shipment.requested", "shipment.booked", "shipped", "invoice.requested",
                           "invoice.posted"]
    assert {e.source for e in done.timeline} == {"ordertoship", "erp", "wms", "tms"}
    changes = [m.body.to_status for m in await outbox(desk.store, "ordertoship", take=True)]
    assert [pb.OrderStatus.Name(t).removeprefix("ORDER_STATUS_") for t in changes] == [
        "RELEASED", "ALLOCATED", "PICKED", "PACKED", "SHIPMENT_BOOKED", "SHIPPED", "INVOICED"]
    assert await outbox(desk.store) == []


async def test_a_credit_refusal_rejects_the_order_with_erps_reason_and_sends_nothing(desk, outbox):
    oid = (await desk.submit({"SKU-B": 1})).order_id
    await outbox(desk.store, take=True)
    await desk.fact("erp.salesorder.rejected", order_id=oid, reason_code="CREDIT_LIMIT_EXCEEDED",
                    reason="over the limit by 5.00")
    o = await desk.order(oid)
    assert status(o) == "REJECTED" and o.status_reason == "CREDIT_LIMIT_EXCEEDED: over the limit by 5.00"
    assert o.timeline[-1].source == "erp" and o.timeline[-1].step == "credit.refused"
    assert await sent(desk.store) == []
    # A late acceptance of the same sales order changes nothing.
    await desk.fact("erp.salesorder.accepted", sales_order=erp_pb2.SalesOrder(order_id=oid))
    assert status(await desk.order(oid)) == "REJECTED" and await sent(desk.store) == []


async def test_a_shortage_backorders_the_order_and_the_allocation_after_a_receipt_moves_it_on(desk):
    oid = await released(desk, {"SKU-A": 8})
    await desk.fact("wms.fulfilment.backordered", fulfilment_order=fo(oid),
                    shortages=[SkuQuantity(sku="SKU-A", quantity=3)])
    o = await desk.order(oid)
    assert status(o) == "BACKORDERED" and o.status_reason == "SKU-A short by 3"
    await desk.fact("wms.fulfilment.allocated", fulfilment_order=fo(oid))
    assert status(await desk.order(oid)) == "ALLOCATED"
    assert await sent(desk.store) == []


async def test_a_shortage_under_the_cancel_policy_cancels_the_order_and_its_sales_order(desk):
    oid = await released(desk, {"SKU-A": 3}, shortage_policy=pb.SHORTAGE_POLICY_CANCEL)
    await desk.fact("wms.fulfilment.rejected", fulfilment_order=fo(oid), reason_code="INSUFFICIENT_STOCK",
                    shortages=[SkuQuantity(sku="SKU-A", quantity=1)])
    o = await desk.order(oid)
    assert status(o) == "CANCELLED" and o.status_reason == "INSUFFICIENT_STOCK: SKU-A short by 1"
    assert steps(o)[-2:] == ["fulfilment.rejected", "compensate"]
    assert await sent(desk.store) == ["cmd.erp.salesorder.cancel"]


async def test_an_order_not_yet_released_is_cancelled_at_once_and_its_sales_order_with_it(desk, outbox):
    oid = (await desk.submit({"SKU-A": 1})).order_id
    await outbox(desk.store, take=True)
    o = await service.cancel_order(desk.store, oid, "customer changed their mind")
    assert status(o) == "CANCELLED" and o.status_reason == "customer changed their mind"
    (cmd,) = await outbox(desk.store, "cmd", take=True)
    assert cmd.subject == "cmd.erp.salesorder.cancel" and cmd.body.reason == "customer changed their mind"


async def test_an_order_in_the_warehouse_is_cancelled_once_the_warehouse_released_it(desk, outbox):
    oid = await released(desk, {"SKU-A": 1})
    await desk.fact("wms.fulfilment.backordered", fulfilment_order=fo(oid),
                    shortages=[SkuQuantity(sku="SKU-A", quantity=1)])
    o = await service.cancel_order(desk.store, oid, "customer changed their mind")
    assert status(o) == "CANCELLING"
    assert await sent(desk.store) == ["cmd.wms.fulfilment.cancel"]
    # Asked again while under way: the same answer, nothing sent twice.
    assert status(await service.cancel_order(desk.store, oid, "")) == "CANCELLING"
    assert await sent(desk.store) == []
    await desk.fact("wms.fulfilment.cancelled", fulfilment_order=fo(oid), reason="order cancelled")
    o = await desk.order(oid)
    assert status(o) == "CANCELLED" and steps(o)[-2:] == ["cancel.requested", "fulfilment.cancelled"]
    assert await sent(desk.store) == ["cmd.erp.salesorder.cancel"]
    assert status(await service.cancel_order(desk.store, oid, "")) == "CANCELLED"


async def test_a_shipped_order_can_no_longer_be_cancelled(desk):
    oid = await released(desk, {"SKU-A": 1})
    await packed(desk, oid)
    await desk.fact("tms.shipment.booked", shipment=tms_pb2.Shipment(shipment_id=f"SHP-{oid}", order_id=oid))
    await desk.fact("wms.fulfilment.shipped", wave=1, fulfilment_order=fo(oid, shipment_id=f"SHP-{oid}"),
                    shipped_lines=[SkuQuantity(sku="SKU-A", quantity=1)])
    with pytest.raises(FailedPrecondition) as refused:
        await service.cancel_order(desk.store, oid, "too late")
    assert refused.value.reason == "ORDER_NOT_CANCELLABLE"
    assert status(await desk.order(oid)) == "SHIPPED"


async def test_a_late_milestone_is_recorded_and_moves_nothing_back(desk):
    oid = await released(desk, {"SKU-A": 1})
    await packed(desk, oid)
    await desk.fact("wms.fulfilment.picked", fulfilment_order=fo(oid))  # redelivered after packed
    o = await desk.order(oid)
    assert status(o) == "PACKED"
    assert o.timeline[-1].step == "picked" and "reported late" in o.timeline[-1].detail
    assert await sent(desk.store) == ["cmd.tms.shipment.book"]  # booked once


async def test_an_event_about_an_order_of_nobody_changes_nothing(desk, outbox):
    assert not await desk.fact("erp.salesorder.accepted", sales_order=erp_pb2.SalesOrder(order_id="ORD-NOPE"))
    assert await outbox(desk.store) == []


async def test_a_decision_applied_on_a_stale_read_is_refused_and_leaves_nothing(desk, outbox):
    oid = (await desk.submit({"SKU-A": 1})).order_id
    await outbox(desk.store, take=True)
    async with desk.store.read() as conn:
        stale, _ = await service._load(conn, oid)
    await service.cancel_order(desk.store, oid, "first")  # another replica got there first
    await outbox(desk.store, take=True)
    with pytest.raises(ConcurrentUpdate):
        async with desk.store.transaction() as tx:
            await service.ORDERS.apply(tx, stale, Decision(
                status="RELEASED", entries=[Entry("erp", "credit.approved")]))
    o = await desk.order(oid)
    assert status(o) == "CANCELLED" and "credit.approved" not in steps(o)
    assert await outbox(desk.store) == []


async def test_orders_are_listed_by_customer_and_status_page_by_page(desk):
    ids = [(await desk.submit({"SKU-A": 1})).order_id for _ in range(3)]
    await service.cancel_order(desk.store, ids[1], "")
    seen, token = [], ""
    while True:
        page = await service.list_orders(desk.store, pb.ListOrdersRequest(
            customer_id=CUSTOMER, page_size=2, page_token=token))
        seen += [o.order_id for o in page.orders]
        if not (token := page.next_page_token):
            break
    assert seen == ids
    cancelled = await service.list_orders(desk.store, pb.ListOrdersRequest(status=pb.ORDER_STATUS_CANCELLED))
    assert [o.order_id for o in cancelled.orders] == [ids[1]]
