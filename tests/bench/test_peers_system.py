"""How the peers (bench/peers/) call the system services: the pure parts, as a spec."""

from __future__ import annotations

import pytest

from bench.peers import system
from bench.peers.system import FACTS, Fact, Line, Order
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.mesh import contracts

BOOKED = Fact("tms.shipment.booked", "e", "P1-000001", shipment_id="SHP-P1-000001", carrier_id="CAR",
              tracking_number="T1")


def an_order(order_id: str = "P1-000001") -> Order:
    return Order(order_id, "C-1", "WH-1", "USD", [Line("SKU-1", 2, 1_000), Line("SKU-2", 1, 2_500)])


def test_a_retried_step_sends_the_same_command_id():
    assert system.command_id("P1-1", "post_invoice") == system.command_id("P1-1", "post_invoice")
    assert system.command_id("P1-1", "post_invoice") != system.command_id("P1-1", "book_shipment")
    assert system.command_id("P1-1", "post_invoice") != system.command_id("P1-2", "post_invoice")


def test_the_command_id_is_both_ce_id_and_the_brokers_dedupe_id():
    _, message = system.create_sales_order(an_order())
    h = system.headers(message, source="peer-x", event_id="abc", key="P1-000001")
    assert h["ce-id"] == h["Nats-Msg-Id"] == "abc"
    assert h["ce-type"] == "crossdock.erp.v1.CreateSalesOrder"
    assert h["ce-subject"] == "P1-000001"


@pytest.mark.parametrize("command", [
    system.create_sales_order(an_order()),
    system.create_fulfilment(an_order()),
    system.book_shipment(an_order(), 1_400),
    system.assign_shipment(an_order(), BOOKED),
    system.post_invoice(an_order(), "SHP-P1-000001"),
    system.cancel_sales_order(an_order(), "warehouse rejected it"),
])
def test_every_command_is_the_contracts_body_for_its_subject(command):
    subject, message = command
    assert isinstance(message, contracts.message_type(subject))
    assert subject.startswith("cmd.")


def test_the_sales_order_carries_the_priced_lines_and_total():
    _, cmd = system.create_sales_order(an_order())
    assert cmd.sales_order.total.amount_minor == 2 * 1_000 + 2_500
    lines = [(ln.line_number, ln.sku, ln.quantity) for ln in cmd.sales_order.lines]
    assert lines == [(1, "SKU-1", 2), (2, "SKU-2", 1)]


def test_the_invoice_is_for_the_one_shipment_of_the_order():
    _, cmd = system.post_invoice(an_order(), system.shipment_id(an_order()))
    assert cmd.shipment_id == "SHP-P1-000001"
    assert [(ln.sku, ln.quantity) for ln in cmd.shipped_lines] == [("SKU-1", 2), ("SKU-2", 1)]


def test_facts_name_their_order_and_what_the_workflow_reads():
    fo = wms_pb2.FulfilmentOrder(order_id="P1-000001", package_weight_grams=1_400)
    assert system.fact_of("erp.salesorder.accepted", erp.SalesOrderAccepted(
        sales_order=erp_pb2.SalesOrder(order_id="P1-000001")), "e1") == Fact("erp.salesorder.accepted", "e1",
                                                                              "P1-000001")
    rejected = system.fact_of("erp.salesorder.rejected", erp.SalesOrderRejected(
        order_id="P1-000001", reason_code="CREDIT_LIMIT_EXCEEDED", reason="over the limit"), "e2")
    assert (rejected.order_id, rejected.reason) == ("P1-000001", "CREDIT_LIMIT_EXCEEDED: over the limit")
    packed = system.fact_of("wms.fulfilment.packed", wms.FulfilmentPacked(fulfilment_order=fo), "e3")
    assert packed.weight_grams == 1_400
    booked = system.fact_of("tms.shipment.booked", tms.ShipmentBooked(shipment=tms_pb2.Shipment(
        shipment_id="SHP-P1-000001", order_id="P1-000001", carrier_id="CAR", tracking_number="T1")), "e4")
    assert (booked.order_id, booked.shipment_id, booked.carrier_id, booked.tracking_number) == (
        "P1-000001", "SHP-P1-000001", "CAR", "T1")
    posted = system.fact_of("erp.invoice.posted", erp.InvoicePosted(invoice=erp_pb2.Invoice(
        invoice_id="INV-P1-000001-1", order_id="P1-000001", shipment_id="SHP-P1-000001")), "e5")
    assert (posted.order_id, posted.invoice_id) == ("P1-000001", "INV-P1-000001-1")


def test_a_fact_that_names_no_order_is_not_for_a_workflow():
    assert system.fact_of("wms.fulfilment.picked", wms.FulfilmentPicked(), "e") is None


def test_the_bridge_follows_only_facts_of_the_contract_in_their_own_streams():
    for stream, subjects in FACTS.items():
        for subject in subjects:
            assert subject in contracts.SUBJECTS
            assert contracts.stream_for(subject) == stream
