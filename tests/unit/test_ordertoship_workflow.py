"""The order-to-ship state machine, without I/O."""

from __future__ import annotations

from enum import StrEnum

import pytest

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.mesh import process
from services.mesh.errors import InvalidArgument
from services.ordertoship import workflow
from services.ordertoship.service import validate_submission


def order(status: str = "RECEIVED", policy: str = "BACKORDER") -> workflow.Order:
    return workflow.Order(
        order_id="O1", customer_id="C1", status=status, warehouse_id="WH1",
        lines=[workflow.Line(1, "A", 2, 500), workflow.Line(2, "B", 1, 1000)],
        ship_to=Address(country_code="US"), shortage_policy=policy, service_level="",
        currency_code="USD", total_minor=2000,
    )


def fulfilment(**kw) -> wms_pb2.FulfilmentOrder:
    return wms_pb2.FulfilmentOrder(order_id="O1", **kw)


def subjects(d: workflow.Decision) -> list[str]:
    return [s for s, _ in d.commands]


def test_accepted_sales_order_releases_to_the_warehouse():
    d = workflow.react(order(), "erp.salesorder.accepted",
                       erp.SalesOrderAccepted(sales_order=erp_pb2.SalesOrder(order_id="O1")))
    assert d.status == "RELEASED"
    assert subjects(d) == ["cmd.wms.fulfilment.create"]
    cmd = d.commands[0][1]
    assert cmd.warehouse_id == "WH1" and cmd.shortage_policy == wms_pb2.SHORTAGE_POLICY_BACKORDER
    assert [(q.sku, q.quantity) for q in cmd.lines] == [("A", 2), ("B", 1)]


def test_credit_refusal_rejects_with_reason_and_sends_nothing():
    d = workflow.react(order(), "erp.salesorder.rejected", erp.SalesOrderRejected(
        order_id="O1", reason_code="CREDIT_LIMIT_EXCEEDED", reason="over by 10.00"))
    assert d.status == "REJECTED"
    assert "CREDIT_LIMIT_EXCEEDED" in d.reason
    assert d.commands == []


def test_shortage_under_cancel_policy_compensates_in_erp():
    d = workflow.react(order("RELEASED", "CANCEL"), "wms.fulfilment.rejected", wms.FulfilmentRejected(
        fulfilment_order=fulfilment(), reason_code="INSUFFICIENT_STOCK",
        shortages=[SkuQuantity(sku="A", quantity=1)]))
    assert d.status == "CANCELLED"
    assert "A short by 1" in d.reason
    assert subjects(d) == ["cmd.erp.salesorder.cancel"]


def test_backorder_then_allocation():
    o = order("RELEASED")
    d = workflow.react(o, "wms.fulfilment.backordered", wms.FulfilmentBackordered(
        fulfilment_order=fulfilment(), shortages=[SkuQuantity(sku="B", quantity=1)]))
    assert d.status == "BACKORDERED"
    o.status = "BACKORDERED"
    assert workflow.react(o, "wms.fulfilment.allocated",
                          wms.FulfilmentAllocated(fulfilment_order=fulfilment())).status == "ALLOCATED"


def test_packed_books_a_shipment_with_the_package_weight():
    d = workflow.react(order("PICKED"), "wms.fulfilment.packed", wms.FulfilmentPacked(
        fulfilment_order=fulfilment(package_weight_grams=1800)))
    assert d.status == "PACKED"
    (subject, cmd), = d.commands
    assert subject == "cmd.tms.shipment.book" and cmd.weight_grams == 1800
    assert cmd.destination.country_code == "US"


def test_booking_assigns_the_shipment_to_the_warehouse():
    sh = tms_pb2.Shipment(shipment_id="S1", order_id="O1", carrier_id="UPS", tracking_number="T1")
    d = workflow.react(order("PACKED"), "tms.shipment.booked", tms.ShipmentBooked(shipment=sh))
    assert d.status == "SHIPMENT_BOOKED"
    assert d.updates == {"shipment_id": "S1", "carrier_id": "UPS", "tracking_number": "T1"}
    assert subjects(d) == ["cmd.wms.fulfilment.assign_shipment"]


def test_ship_confirmation_posts_the_invoice_with_shipped_quantities():
    f = fulfilment(shipment_id="S1", lines=[SkuQuantity(sku="A", quantity=2),
                                            SkuQuantity(sku="B", quantity=1)])
    d = workflow.react(order("SHIPMENT_BOOKED"), "wms.fulfilment.shipped",
                       wms.FulfilmentShipped(fulfilment_order=f))
    assert d.status == "SHIPPED"
    (subject, cmd), = d.commands
    assert subject == "cmd.erp.invoice.post" and cmd.shipment_id == "S1"
    assert [(ln.line_number, ln.sku, ln.quantity) for ln in cmd.shipped_lines] == [(1, "A", 2), (2, "B", 1)]


def test_invoice_completes_the_order():
    inv = erp_pb2.Invoice(invoice_id="INV1", order_id="O1",
                          total=Money(currency_code="USD", amount_minor=2000))
    d = workflow.react(order("SHIPPED"), "erp.invoice.posted", erp.InvoicePosted(invoice=inv))
    assert d.status == "INVOICED" and d.updates == {"invoice_id": "INV1"}


def test_booking_failure_holds_the_order_with_an_exception():
    o = order("PACKED")
    d = workflow.react(o, "tms.shipment.booking_failed", tms.ShipmentBookingFailed(
        order_id="O1", reason_code="NO_CARRIER_SERVICE", reason="none"))
    assert d.status == "ON_HOLD" and d.commands == [] and d.updates["held_from"] == "PACKED"
    assert [(r.kind, r.status) for r in d.raised] == [("CARRIER_FAILED", "OPEN")]
    o.status = "CANCELLING"
    d = workflow.react(o, "wms.fulfilment.cancelled", wms.FulfilmentCancelled(fulfilment_order=fulfilment()))
    assert d.status == "CANCELLED" and subjects(d) == ["cmd.erp.salesorder.cancel"]


@pytest.mark.parametrize("status", ["INVOICED", "REJECTED", "CANCELLED"])
def test_late_or_repeated_facts_do_not_move_a_finished_order(status):
    for subject, body in [
        ("erp.salesorder.accepted", erp.SalesOrderAccepted()),
        ("wms.fulfilment.allocated", wms.FulfilmentAllocated(fulfilment_order=fulfilment())),
        ("wms.fulfilment.shipped", wms.FulfilmentShipped(fulfilment_order=fulfilment())),
        ("tms.shipment.booked", tms.ShipmentBooked()),
    ]:
        d = workflow.react(order(status), subject, body)
        assert d.status is None and d.commands == []


def test_cancel_before_release_and_in_the_warehouse():
    d = workflow.cancel(order("RECEIVED"), "customer asked")
    assert d.status == "CANCELLED" and subjects(d) == ["cmd.erp.salesorder.cancel"]
    d = workflow.cancel(order("ALLOCATED"), "")
    assert d.status == "CANCELLING" and subjects(d) == ["cmd.wms.fulfilment.cancel"]
    assert not workflow.cancel(order("CANCELLED"), "").changes_anything


@pytest.mark.parametrize("status", ["PACKED", "SHIPMENT_BOOKED", "SHIPPED", "INVOICED", "REJECTED"])
def test_cannot_cancel_once_packed(status):
    with pytest.raises(workflow.NotCancellable):
        workflow.cancel(order(status), "")


def test_order_id_is_found_in_every_followed_message():
    assert workflow.order_id_of("x", erp.SalesOrderRejected(order_id="O1")) == "O1"
    assert workflow.order_id_of("x", erp.SalesOrderAccepted(
        sales_order=erp_pb2.SalesOrder(order_id="O2"))) == "O2"
    assert workflow.order_id_of("x", erp.InvoicePosted(invoice=erp_pb2.Invoice(order_id="O3"))) == "O3"
    assert workflow.order_id_of("x", wms.FulfilmentPicked(fulfilment_order=fulfilment())) == "O1"
    assert workflow.order_id_of("x", tms.ShipmentBooked(shipment=tms_pb2.Shipment(order_id="O4"))) == "O4"


def test_submission_shape_is_validated_field_by_field():
    req = pb.SubmitOrderRequest(lines=[
        pb.OrderLine(sku="A", quantity=0),
        pb.OrderLine(sku="A", quantity=1),
        pb.OrderLine(sku="", quantity=-1, unit_price=Money(currency_code="USD", amount_minor=1)),
    ])
    with pytest.raises(InvalidArgument) as info:
        validate_submission(req)
    fields = [f for f, _ in info.value.violations]
    assert fields == ["customer_id", "lines[0].quantity", "lines[1].sku", "lines[2].sku",
                      "lines[2].quantity", "lines[2].unit_price"]


def test_a_newer_milestone_moves_past_missed_ones_and_a_late_one_is_only_recorded():
    # After a restart, "packed" may be delivered before the unacked "allocated"/"picked".
    o = order("RELEASED")
    d = workflow.react(o, "wms.fulfilment.packed", wms.FulfilmentPacked(
        fulfilment_order=fulfilment(package_weight_grams=900)))
    assert d.status == "PACKED" and subjects(d) == ["cmd.tms.shipment.book"]
    o.status = "PACKED"
    for subject, body in [
            ("wms.fulfilment.allocated", wms.FulfilmentAllocated(fulfilment_order=fulfilment())),
            ("wms.fulfilment.picked", wms.FulfilmentPicked(fulfilment_order=fulfilment()))]:
        late = workflow.react(o, subject, body)
        assert late.status is None and late.commands == []
        assert late.entries and "late" in late.entries[0].detail


def test_milestones_do_not_move_a_cancelling_order():
    d = workflow.react(order("CANCELLING"), "wms.fulfilment.packed", wms.FulfilmentPacked(
        fulfilment_order=fulfilment(package_weight_grams=900)))
    assert not d.changes_anything


def test_the_workflows_names_are_the_contracts_and_a_typo_fails_when_the_module_loads():
    from services.ordertoship import service

    assert set(service.STATUS.values()) == set(pb.OrderStatus.values()) - {pb.ORDER_STATUS_UNSPECIFIED}
    assert set(service.ACTION.values()) == set(pb.ResolutionAction.values()) - {0}
    assert set(service.EXCEPTION_KIND.values()) == set(pb.ExceptionKind.values()) - {0}

    class Status(StrEnum):
        RELEASED = "RELEASED"
        SHIPED = "SHIPED"

    with pytest.raises(ValueError, match="SHIPED"):
        process.proto_numbers(Status, pb.OrderStatus, "ORDER_STATUS_")


def test_a_request_id_reused_with_another_body_has_another_fingerprint():
    req = pb.SubmitOrderRequest(request_id="R1", customer_id="C1", lines=[pb.OrderLine(sku="A", quantity=1)])
    same = pb.SubmitOrderRequest()
    same.CopyFrom(req)
    same.request_id = "R2"  # the id itself is not part of the body
    other = pb.SubmitOrderRequest()
    other.CopyFrom(req)
    other.lines[0].quantity = 2
    assert process.request_fingerprint(req) == process.request_fingerprint(same)
    assert process.request_fingerprint(req) != process.request_fingerprint(other)
