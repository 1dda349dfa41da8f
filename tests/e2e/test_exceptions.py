"""Warehouse exceptions, partial shipments, carrier failures and the exception work list,
end to end: every service as a process, a real nats-server, SQLite stores.

The WMS autopilot is off here: the tests are the warehouse's handhelds
(ConfirmPick with what was found, ConfirmPack with what was damaged,
ReportStockCount, ConfirmShip), so every exception happens exactly where the
test says.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, make_world, usd
from tests.helpers import eventually

HANDHELDS = {**FAST, "CROSSDOCK_WMS_AUTOPILOT": "false"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh"), env=HANDHELDS)
    try:
        m.start()
        yield m
    finally:
        m.stop()


def status_name(order: pb.Order) -> str:
    return pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")


async def wait_status(stubs: Stubs, order_id: str, *statuses: str, timeout: float = 30) -> pb.Order:
    async def check():
        o = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        return o if status_name(o) in statuses else None
    return await eventually(check, timeout=timeout, what=f"order {order_id} in {statuses}")


async def wait_fulfilment(stubs: Stubs, order_id: str, status: int, wave: int = 1) -> wms_pb2.FulfilmentOrder:
    async def check():
        try:
            f = (await stubs.wms.GetFulfilmentOrder(
                wms_pb2.GetFulfilmentOrderRequest(order_id=order_id))).fulfilment_order
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None  # the create command is still on its way
            raise
        return f if f.status == status and f.wave == wave else None
    return await eventually(check, what=f"fulfilment {order_id} in {wms_pb2.FulfilmentStatus.Name(status)} "
                                         f"(shipment {wave})")


async def pick(stubs: Stubs, order_id: str, wave: int = 1, **found: int) -> None:
    await wait_fulfilment(stubs, order_id, wms_pb2.FULFILMENT_STATUS_ALLOCATED, wave)
    await stubs.wms.ConfirmPick(wms_pb2.ConfirmPickRequest(
        order_id=order_id, picked_lines=[SkuQuantity(sku=s, quantity=q) for s, q in found.items()]))


async def pack(stubs: Stubs, order_id: str, wave: int = 1, **damaged: int) -> None:
    await wait_fulfilment(stubs, order_id, wms_pb2.FULFILMENT_STATUS_PICKED, wave)
    await stubs.wms.ConfirmPack(wms_pb2.ConfirmPackRequest(
        order_id=order_id, damaged_lines=[SkuQuantity(sku=s, quantity=q) for s, q in damaged.items()]))


async def ship(stubs: Stubs, order_id: str, wave: int = 1) -> None:
    await wait_fulfilment(stubs, order_id, wms_pb2.FULFILMENT_STATUS_LABELLED, wave)
    await stubs.wms.ConfirmShip(wms_pb2.ConfirmShipRequest(order_id=order_id))


async def invoices(stubs: Stubs, order_id: str) -> list[erp_pb2.Invoice]:
    return list((await stubs.erp.ListInvoices(erp_pb2.ListInvoicesRequest(order_id=order_id))).invoices)


async def ledger_matches_stock(stubs: Stubs, world) -> None:
    """ERP's ledger follows every movement (write-offs included) to WMS's on-hand, over
    the union of both sides' positions, which must hold every SKU of the world."""
    async def check():
        wms = {p.sku: p.on_hand for p in (await stubs.wms.ListInventory(wms_pb2.ListInventoryRequest(
            warehouse_id=world.warehouse_id, page_size=500))).positions}
        erp = {p.sku: p.on_hand for p in (await stubs.erp.ListLedgerPositions(
            erp_pb2.ListLedgerPositionsRequest(warehouse_id=world.warehouse_id, page_size=500))).positions}
        assert set(world.skus) <= set(wms), f"WMS has no position for {set(world.skus) - set(wms)}"
        assert erp == wms, (erp, wms)
        return True
    await eventually(check, what="ERP ledger == WMS stock")


async def test_short_pick_ships_partially_then_a_receipt_releases_the_rest_each_shipment_invoiced_once(stubs):
    world = await make_world(stubs, stock=6, n_skus=2)
    a, b = world.skus
    order = (await stubs.ots.SubmitOrder(world.order({a: 6, b: 2}))).order
    assert order.exception_policy == pb.EXCEPTION_POLICY_SHIP_PARTIAL  # the default
    # Only 4 of the 6 A are in the bin: 2 are written off, the order ships what is there.
    await pick(stubs, order.order_id, **{a: 4, b: 2})
    await pack(stubs, order.order_id)
    await ship(stubs, order.order_id)
    waiting = await wait_status(stubs, order.order_id, "BACKORDERED")
    assert a in waiting.status_reason
    assert "PARTIALLY_SHIPPED" in [pb.OrderStatus.Name(e.status).removeprefix("ORDER_STATUS_")
                                   for e in waiting.timeline]
    f = await wait_fulfilment(stubs, order.order_id, wms_pb2.FULFILMENT_STATUS_BACKORDERED, wave=2)
    assert [(p.sku, p.shipped_quantity) for p in f.progress] == [(a, 4), (b, 2)]
    # The write-off took the two missing off the books; the four found have shipped: none left.
    stock = {p.sku: p for p in (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=[a], warehouse_id=world.warehouse_id))).positions}
    assert stock[a].on_hand == 0 and stock[a].allocated == 0
    await ledger_matches_stock(stubs, world)

    # A replenishment receipt arrives: the backordered rest is allocated without anyone touching the order.
    await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id=f"REPL-{world.suffix}", warehouse_id=world.warehouse_id,
        lines=[SkuQuantity(sku=a, quantity=5)]))
    await pick(stubs, order.order_id, wave=2)
    await pack(stubs, order.order_id, wave=2)
    await ship(stubs, order.order_id, wave=2)
    done = await wait_status(stubs, order.order_id, "INVOICED")

    # Two shipments, each invoiced exactly once, for exactly what it carried.
    assert [(s.shipment_id, s.wave) for s in done.shipments] == [
        (f"SHP-{order.order_id}", 1), (f"SHP-{order.order_id}-2", 2)]
    assert all(s.invoice_id for s in done.shipments)
    posted = await invoices(stubs, order.order_id)
    assert sorted((i.shipment_id, tuple((x.sku, x.quantity) for x in i.lines)) for i in posted) == sorted([
        (f"SHP-{order.order_id}", ((a, 4), (b, 2))), (f"SHP-{order.order_id}-2", ((a, 2),))])
    assert sum(i.total.amount_minor for i in posted) == done.total.amount_minor
    so = (await stubs.erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=order.order_id))).sales_order
    assert so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
    assert [(x.quantity, x.invoiced_quantity) for x in so.lines] == [(6, 6), (2, 2)]
    steps = [e.step for e in done.timeline]
    assert "exception.short_pick" in steps and "exception.ship_partial" in steps
    exc = (await stubs.ots.ListExceptions(pb.ListExceptionsRequest(order_id=order.order_id))).exceptions
    assert [(e.kind, e.status, e.resolved_by) for e in exc] == [
        (pb.EXCEPTION_KIND_SHORT_PICK, pb.EXCEPTION_STATUS_RESOLVED, "policy")]
    await ledger_matches_stock(stubs, world)


async def test_a_damaged_line_is_cancelled_by_the_customers_policy_and_never_invoiced(stubs):
    world = await make_world(stubs, stock=10, n_skus=2)
    a, b = world.skus
    await stubs.ots.SetExceptionPolicy(pb.SetExceptionPolicyRequest(
        customer_id=world.customer_id, policy=pb.EXCEPTION_POLICY_CANCEL_LINES))
    order = (await stubs.ots.SubmitOrder(world.order({a: 3, b: 1}))).order
    assert order.exception_policy == pb.EXCEPTION_POLICY_CANCEL_LINES
    await pick(stubs, order.order_id)
    await pack(stubs, order.order_id, **{b: 1})  # the only B is damaged at packing
    await ship(stubs, order.order_id)
    done = await wait_status(stubs, order.order_id, "INVOICED")
    assert [(q.sku, q.quantity) for q in done.cancelled_lines] == [(b, 1)]
    (inv,) = await invoices(stubs, order.order_id)
    assert [(x.sku, x.quantity) for x in inv.lines] == [(a, 3)]
    assert inv.total.amount_minor == 3 * world.prices[a]
    so = (await stubs.erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=order.order_id))).sales_order
    assert [(x.invoiced_quantity, x.cancelled_quantity) for x in so.lines] == [(3, 0), (0, 1)]
    assert so.status == erp_pb2.SALES_ORDER_STATUS_INVOICED
    # The credit the cancelled line held is released: nothing of this order is still open.
    customer = (await stubs.erp.GetCustomer(
        erp_pb2.GetCustomerRequest(customer_id=world.customer_id))).customer
    assert customer.open_orders.amount_minor == 0
    assert customer.open_balance.amount_minor == inv.total.amount_minor
    assert "exception.cancel_lines" in [e.step for e in done.timeline]
    await ledger_matches_stock(stubs, world)


async def test_hold_policy_waits_for_a_person_and_the_decision_is_audited(stubs):
    world = await make_world(stubs, stock=5, n_skus=1)
    (a,) = world.skus
    await stubs.ots.SetExceptionPolicy(pb.SetExceptionPolicyRequest(
        customer_id=world.customer_id, policy=pb.EXCEPTION_POLICY_HOLD))
    order = (await stubs.ots.SubmitOrder(world.order({a: 4}))).order
    # A bin count finds 3 where the books say 5: the allocated order loses one unit.
    await wait_fulfilment(stubs, order.order_id, wms_pb2.FULFILMENT_STATUS_ALLOCATED)
    counted = await stubs.wms.ReportStockCount(wms_pb2.ReportStockCountRequest(
        warehouse_id=world.warehouse_id, sku=a, counted_on_hand=3, reference="cycle count"))
    assert list(counted.affected_order_ids) == [order.order_id]
    assert counted.position.on_hand == 3 and counted.position.allocated == 3
    held = await wait_status(stubs, order.order_id, "ON_HOLD")
    (exc,) = (await stubs.ots.ListExceptions(pb.ListExceptionsRequest(
        status=pb.EXCEPTION_STATUS_OPEN, order_id=order.order_id))).exceptions
    assert exc.kind == pb.EXCEPTION_KIND_STOCK_DISCREPANCY
    assert [(q.sku, q.quantity) for q in exc.lines] == [(a, 1)]
    assert "held" in [e.step.split(".")[-1] for e in held.timeline]
    # A wrong action is refused with the field at fault.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.ots.ResolveException(pb.ResolveExceptionRequest(
            exception_id=exc.exception_id, action=pb.RESOLUTION_ACTION_RETRY, resolved_by="dana"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    r = await stubs.ots.ResolveException(pb.ResolveExceptionRequest(
        exception_id=exc.exception_id, action=pb.RESOLUTION_ACTION_CANCEL_LINES, resolved_by="dana",
        note="customer takes 3"))
    assert r.exception.status == pb.EXCEPTION_STATUS_RESOLVED and r.exception.resolved_by == "dana"
    await pick(stubs, order.order_id)
    await pack(stubs, order.order_id)
    await ship(stubs, order.order_id)
    done = await wait_status(stubs, order.order_id, "INVOICED")
    assert any("dana" in e.detail and "CANCEL_LINES" in e.detail for e in done.timeline)
    (inv,) = await invoices(stubs, order.order_id)
    assert [(x.sku, x.quantity) for x in inv.lines] == [(a, 3)]
    await ledger_matches_stock(stubs, world)


async def carriers(stubs: Stubs, country: str, *specs: tuple[str, int, bool]) -> None:
    """Carriers serving only ``country``: (id, base price, suspended)."""
    for carrier_id, base, suspended in specs:
        await stubs.tms.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=tms_pb2.Carrier(
            carrier_id=carrier_id, name=carrier_id, active=True, suspended=suspended, rates=[tms_pb2.Rate(
                service_level="GROUND", country_codes=[country], base=usd(base), per_kg=usd(10),
                transit_days=2)])))


def ship_to(country: str) -> Address:
    return Address(name="T", line1="1 B St", city="Y", postal_code="2", country_code=country)


async def test_a_refusing_carrier_passes_the_booking_to_the_next_one(stubs):
    world = await make_world(stubs, stock=10, n_skus=1)
    await carriers(stubs, "NZ", ("NZ-CHEAP", 100, True), ("NZ-BACKUP", 900, False))
    order = (await stubs.ots.SubmitOrder(world.order({world.skus[0]: 1}, ship_to=ship_to("NZ")))).order
    await pick(stubs, order.order_id)
    await pack(stubs, order.order_id)
    await ship(stubs, order.order_id)
    done = await wait_status(stubs, order.order_id, "INVOICED")
    assert done.carrier_id == "NZ-BACKUP"
    refused = [e for e in done.timeline if e.step == "carrier.refused"]
    assert len(refused) == 1 and "NZ-CHEAP" in refused[0].detail


async def crossdock(env: dict, *args: str) -> subprocess.CompletedProcess:
    """Run the `crossdock` CLI as a person would (in a thread: it blocks)."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=60)


async def test_when_every_carrier_fails_the_order_is_held_and_the_resolve_command_completes_it(stubs, mesh):
    world = await make_world(stubs, stock=10, n_skus=1)
    await carriers(stubs, "AU", ("AU-ONE", 100, True), ("AU-TWO", 200, True))
    order = (await stubs.ots.SubmitOrder(world.order({world.skus[0]: 2}, ship_to=ship_to("AU")))).order
    await pick(stubs, order.order_id)
    await pack(stubs, order.order_id)
    held = await wait_status(stubs, order.order_id, "ON_HOLD")
    assert "ALL_CARRIERS_REFUSED" in held.status_reason
    (exc,) = (await stubs.ots.ListExceptions(pb.ListExceptionsRequest(
        status=pb.EXCEPTION_STATUS_OPEN, order_id=order.order_id))).exceptions
    assert exc.kind == pb.EXCEPTION_KIND_CARRIER_FAILED
    # The fulfilment is still packed, its stock still allocated: nothing was lost or released.
    f = (await stubs.wms.GetFulfilmentOrder(
        wms_pb2.GetFulfilmentOrderRequest(order_id=order.order_id))).fulfilment_order
    assert f.status == wms_pb2.FULFILMENT_STATUS_PACKED

    # A person brings AU-TWO back and reassigns the carrier from the command line.
    await carriers(stubs, "AU", ("AU-TWO", 200, False))
    env = {**os.environ, "CROSSDOCK_ORDERTOSHIP_ADDR": mesh.addr("ordertoship")}
    cli = await crossdock(env, "exceptions", "resolve", exc.exception_id, "reassign-carrier",
                          "--carrier", "AU-TWO", "--by", "erin", "--note", "AU-TWO is back")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "RESOLVED" in cli.stdout and "erin" in cli.stdout
    await ship(stubs, order.order_id)
    done = await wait_status(stubs, order.order_id, "INVOICED")
    assert done.carrier_id == "AU-TWO"
    listed = await crossdock(env, "exceptions", "list")
    assert listed.returncode == 0 and exc.exception_id not in listed.stdout
    assert any("erin" in e.detail for e in done.timeline)
    await ledger_matches_stock(stubs, world)
