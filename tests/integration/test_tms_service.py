"""TMS as a real process against a real nats-server and SQLite store."""

from __future__ import annotations

import sqlite3

import grpc
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from crossdock.tms.v1 import messages_pb2 as tms_msgs
from crossdock.tms.v1 import tms_pb2, tms_pb2_grpc
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import status_details
from tests.helpers import eventually, publish, unique


def carrier(cid: str, base: int, per_kg: int, countries=("US",), level="GROUND") -> tms_pb2.Carrier:
    return tms_pb2.Carrier(
        carrier_id=cid, name=cid, active=True,
        rates=[tms_pb2.Rate(service_level=level, country_codes=list(countries),
                            base=Money(currency_code="USD", amount_minor=base),
                            per_kg=Money(currency_code="USD", amount_minor=per_kg),
                            transit_days=2)],
    )


@pytest.fixture
async def tms(start_service):
    proc = start_service("tms")
    channel = grpc.aio.insecure_channel(proc.addr)
    stub = tms_pb2_grpc.TmsServiceStub(channel)
    await stub.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=carrier("FAST", 900, 50)))
    await stub.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=carrier("CHEAP", 400, 100)))
    yield stub
    await channel.close()


async def test_shipping_options_cheapest_first(tms):
    resp = await tms.GetShippingOptions(tms_pb2.GetShippingOptionsRequest(
        destination=Address(country_code="US"), weight_grams=2000))
    assert [(o.carrier_id, o.price.amount_minor) for o in resp.options] == [("CHEAP", 600), ("FAST", 1000)]


async def test_bad_lookup_is_invalid_argument_with_field_violations(tms):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await tms.GetShippingOptions(tms_pb2.GetShippingOptionsRequest(weight_grams=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = status_details(info.value)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert {v.field for v in bad.field_violations} == {"destination.country_code", "weight_grams"}


async def test_booking_is_idempotent_and_dispatch_follows_wms(tms, nc, events):
    log = await events(["tms.>"])
    order_id = unique("O")
    cmd = tms_msgs.BookShipment(order_id=order_id, destination=Address(country_code="US"),
                                weight_grams=1500, currency_code="USD")
    await publish(nc, "cmd.tms.shipment.book", cmd, key=order_id)
    await publish(nc, "cmd.tms.shipment.book", cmd, key=order_id)  # a second, distinct command

    booked = await eventually(
        lambda: ([b for b in log.of("tms.shipment.booked") if b.shipment.order_id == order_id]
                       if len(log.of("tms.shipment.booked")) >= 2 else None),
        what="two booked events")
    assert {b.shipment.tracking_number for b in booked} == {booked[0].shipment.tracking_number}
    assert booked[0].shipment.carrier_id == "CHEAP"

    shipped = wms_msgs.FulfilmentShipped(fulfilment_order=wms_pb2.FulfilmentOrder(order_id=order_id))
    await publish(nc, "wms.fulfilment.shipped", shipped, key=order_id)
    await eventually(lambda: (log.of("tms.shipment.dispatched")), what="dispatched")
    got = await tms.GetShipment(tms_pb2.GetShipmentRequest(order_id=order_id))
    assert got.shipment.status == tms_pb2.SHIPMENT_STATUS_DISPATCHED


async def test_no_carrier_for_destination_fails_booking(tms, nc, events):
    log = await events(["tms.shipment.booking_failed"])
    order_id = unique("O")
    await publish(nc, "cmd.tms.shipment.book", tms_msgs.BookShipment(
        order_id=order_id, destination=Address(country_code="JP"), weight_grams=100), key=order_id)
    failed = await eventually(lambda: (log.of("tms.shipment.booking_failed")), what="failure")
    assert failed[0].reason_code == "NO_CARRIER_SERVICE"


async def test_master_data_reaches_the_replica(tms, nc, data_dir):
    await publish(nc, "erp.item.upserted", erp_msgs.ItemUpserted(
        item=erp_pb2.Item(sku="SKU-R", weight_grams=1234)))

    def replicated():
        with sqlite3.connect(data_dir / "tms.db") as db:
            return db.execute("SELECT weight_grams FROM items WHERE sku='SKU-R'").fetchone()

    assert await eventually(replicated, what="item in the TMS replica") == (1234,)
