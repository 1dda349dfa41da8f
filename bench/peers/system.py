"""How both peers call Crossdock's system services (ERP, WMS, TMS): the part they share.

- Lookups are gRPC, as in Crossdock's own intake: ``check`` asks ERP
  ``CheckCredit`` and WMS ``GetAvailability`` at once.
- Postings are JetStream commands, the system services' only way in for them:
  ``SystemServices.send`` publishes the command with CloudEvents headers and a
  DETERMINISTIC id, ``ce-id`` = ``Nats-Msg-Id`` = uuid5(order id, step). A
  retried activity/step publishes the same id again: the broker drops the copy
  inside its dedupe window (30 min), the system service's inbox drops it after
  that, and the system services are idempotent on the business key anyway
  (one sales order per order id, one invoice per shipment id).
- Answers are the system services' events. ``EventBridge`` runs in the
  orchestrator's process: durable pull consumers on the ERP, WMS and TMS
  streams (filtered to the facts about orders, created with deliver-policy NEW)
  hand each fact to the orchestrator (a Temporal signal, a DBOS message) keyed
  by order id, and ack it only once the orchestrator has durably taken it. A
  crash before the ack redelivers the fact; the orchestrator drops a repeat by
  its event id.

Importable from both venvs (nats-py, grpcio and the generated code only).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import nats
import nats.errors
from google.protobuf.message import DecodeError, Message
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh import contracts

log = logging.getLogger("peers")

# The facts about an order the peers' workflows wait on, by stream.
FACTS = {
    "ERP": ("erp.salesorder.accepted", "erp.salesorder.rejected", "erp.invoice.posted"),
    "WMS": (
        "wms.fulfilment.allocated",
        "wms.fulfilment.backordered",
        "wms.fulfilment.rejected",
        "wms.fulfilment.picked",
        "wms.fulfilment.packed",
        "wms.fulfilment.shipped",
    ),
    "TMS": ("tms.shipment.booked", "tms.shipment.booking_failed"),
}
# The namespace of the deterministic command ids.
COMMAND_IDS = uuid.UUID("6f1c2d52-55a6-4c34-9a43-6d7c1c1f2b90")
RPC_TIMEOUT_S = 5.0


@dataclass
class Line:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass
class Order:
    """What a channel submits, priced (the bench's world knows the prices, as
    Crossdock's intake knows them from its item replica)."""

    order_id: str
    customer_id: str
    warehouse_id: str
    currency_code: str
    lines: list[Line] = field(default_factory=list)
    country_code: str = "US"
    postal_code: str = "1"
    service_level: str = ""

    @property
    def total_minor(self) -> int:
        return sum(ln.quantity * ln.unit_price_minor for ln in self.lines)


@dataclass
class Fact:
    """One system event about an order, reduced to what the workflow reads."""

    subject: str
    event_id: str
    order_id: str
    reason: str = ""
    weight_grams: int = 0
    shipment_id: str = ""
    carrier_id: str = ""
    tracking_number: str = ""
    invoice_id: str = ""


def fact_of(subject: str, body: Message, event_id: str) -> Fact | None:
    """The order a fact is about and the fields the workflow needs; None when it names no order."""
    f = Fact(subject, event_id, "")
    if subject == "erp.salesorder.accepted":
        f.order_id = body.sales_order.order_id
    elif subject == "erp.salesorder.rejected":
        f.order_id, f.reason = body.order_id, f"{body.reason_code}: {body.reason}"
    elif subject == "erp.invoice.posted":
        f.order_id, f.invoice_id, f.shipment_id = (
            body.invoice.order_id,
            body.invoice.invoice_id,
            body.invoice.shipment_id,
        )
    elif subject.startswith("wms.fulfilment."):
        fo = body.fulfilment_order
        f.order_id, f.weight_grams = fo.order_id, fo.package_weight_grams
        f.shipment_id, f.carrier_id, f.tracking_number = fo.shipment_id, fo.carrier_id, fo.tracking_number
        if subject.endswith("rejected"):
            f.reason = f"{body.reason_code}: {body.reason}"
    elif subject == "tms.shipment.booked":
        sh = body.shipment
        f.order_id, f.shipment_id = sh.order_id, sh.shipment_id
        f.carrier_id, f.tracking_number = sh.carrier_id, sh.tracking_number
    elif subject == "tms.shipment.booking_failed":
        f.order_id, f.shipment_id, f.reason = (
            body.order_id,
            body.shipment_id,
            f"{body.reason_code}: {body.reason}",
        )
    return f if f.order_id else None


# ---- the commands (the same bodies Crossdock's order-to-ship sends) ----


def _money(o: Order, minor: int) -> Money:
    return Money(currency_code=o.currency_code, amount_minor=minor)


def shipment_id(o: Order) -> str:
    return f"SHP-{o.order_id}"


def create_sales_order(o: Order) -> tuple[str, Message]:
    return "cmd.erp.salesorder.create", erp.CreateSalesOrder(
        sales_order=erp_pb2.SalesOrder(
            order_id=o.order_id,
            customer_id=o.customer_id,
            total=_money(o, o.total_minor),
            lines=[
                erp_pb2.SalesOrderLine(
                    line_number=i + 1,
                    sku=ln.sku,
                    quantity=ln.quantity,
                    unit_price=_money(o, ln.unit_price_minor),
                )
                for i, ln in enumerate(o.lines)
            ],
        )
    )


def create_fulfilment(o: Order) -> tuple[str, Message]:
    return "cmd.wms.fulfilment.create", wms.CreateFulfilment(
        order_id=o.order_id,
        warehouse_id=o.warehouse_id,
        ship_to=Address(country_code=o.country_code, postal_code=o.postal_code),
        lines=[SkuQuantity(sku=ln.sku, quantity=ln.quantity) for ln in o.lines],
        shortage_policy=wms_pb2.SHORTAGE_POLICY_BACKORDER,
    )


def book_shipment(o: Order, weight_grams: int) -> tuple[str, Message]:
    return "cmd.tms.shipment.book", tms.BookShipment(
        order_id=o.order_id,
        warehouse_id=o.warehouse_id,
        shipment_id=shipment_id(o),
        destination=Address(country_code=o.country_code, postal_code=o.postal_code),
        weight_grams=weight_grams,
        service_level=o.service_level,
        currency_code=o.currency_code,
    )


def assign_shipment(o: Order, booked: Fact) -> tuple[str, Message]:
    return "cmd.wms.fulfilment.assign_shipment", wms.AssignShipment(
        order_id=o.order_id,
        shipment_id=booked.shipment_id,
        carrier_id=booked.carrier_id,
        tracking_number=booked.tracking_number,
        wave=1,
    )


def post_invoice(o: Order, shipment: str) -> tuple[str, Message]:
    return "cmd.erp.invoice.post", erp.PostInvoice(
        order_id=o.order_id,
        shipment_id=shipment,
        shipped_lines=[
            erp_pb2.SalesOrderLine(line_number=i + 1, sku=ln.sku, quantity=ln.quantity)
            for i, ln in enumerate(o.lines)
        ],
    )


def cancel_sales_order(o: Order, reason: str) -> tuple[str, Message]:
    return "cmd.erp.salesorder.cancel", erp.CancelSalesOrder(order_id=o.order_id, reason=reason)


def command_id(order_id: str, step: str) -> str:
    """The same id for every attempt of one step of one order."""
    return str(uuid.uuid5(COMMAND_IDS, f"{order_id}/{step}"))


def headers(message: Message, *, source: str, event_id: str, key: str) -> dict[str, str]:
    """CloudEvents (NATS binding) attributes and the dedupe id, as the mesh's outbox writes them."""
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": contracts.type_name(message),
        "ce-source": f"crossdock/{source}",
        "ce-time": datetime.now(UTC).isoformat(),
        "content-type": "application/protobuf",
        "Nats-Msg-Id": event_id,
        "ce-subject": key,
    }


class SystemServices:
    """A connection to the broker and gRPC channels to ERP and WMS (one per process)."""

    def __init__(
        self, nats_url: str, erp_addr: str, wms_addr: str, source: str, repeats_file: str = ""
    ) -> None:
        self.nats_url, self.erp_addr, self.wms_addr, self.source = nats_url, erp_addr, wms_addr, source
        # Each command the broker already had (a step run again) gets a line here.
        self.repeats_file = repeats_file
        self.nc = None
        self.js = None

    async def connect(self) -> None:
        self.nc = await nats.connect(
            self.nats_url, name=f"peer-{self.source}", max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        self.js = self.nc.jetstream()
        self._channels = [grpc.aio.insecure_channel(self.erp_addr), grpc.aio.insecure_channel(self.wms_addr)]
        self.erp = erp_pb2_grpc.ErpServiceStub(self._channels[0])
        self.wms = wms_pb2_grpc.WmsServiceStub(self._channels[1])

    async def close(self) -> None:
        for ch in getattr(self, "_channels", []):
            await ch.close()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def send(self, order_id: str, step: str, command: tuple[str, Message]) -> bool:
        """Publish one command, acked by the broker (fsynced: sync_interval always);
        True when the broker had it already (a repeat of this step)."""
        subject, message = command
        if not isinstance(message, contracts.message_type(subject)):
            raise TypeError(f"{subject} does not carry {contracts.type_name(message)}")
        event_id = command_id(order_id, step)
        ack = await self.js.publish(
            subject,
            message.SerializeToString(),
            timeout=RPC_TIMEOUT_S,
            headers=headers(message, source=self.source, event_id=event_id, key=order_id),
        )
        if ack.duplicate and self.repeats_file:
            with open(self.repeats_file, "a") as f:  # noqa: ASYNC230 - rare (a step run again)
                f.write(f"{order_id} {step}\n")
        return bool(ack.duplicate)

    async def check(self, o: Order) -> tuple[bool, str]:
        """Credit (ERP) and stock (WMS) at once, as Crossdock's intake does: (approved, reason)."""
        credit, stock = await asyncio.gather(
            self.erp.CheckCredit(
                erp_pb2.CheckCreditRequest(customer_id=o.customer_id, amount=_money(o, o.total_minor)),
                timeout=RPC_TIMEOUT_S,
            ),
            self.wms.GetAvailability(
                wms_pb2.GetAvailabilityRequest(skus=[ln.sku for ln in o.lines], warehouse_id=o.warehouse_id),
                timeout=RPC_TIMEOUT_S,
            ),
        )
        if not credit.approved:
            return False, f"credit: {credit.reason}"
        available = {p.sku: p.available for p in stock.positions}
        short = [ln.sku for ln in o.lines if available.get(ln.sku, 0) < ln.quantity]
        return True, (f"short in {o.warehouse_id}: {', '.join(short)} (backordered)" if short else "")


Deliver = Callable[[Fact], Awaitable[bool]]


class EventBridge:
    """The system services' facts about orders -> the orchestrator, one durable consumer per stream.

    ``deliver(fact)`` hands a fact to the workflow of its order and returns once
    the orchestrator has it durably (True), or False when no workflow has that
    id (not one of ours: acked and dropped). Facts of one order are delivered in
    the order they were fetched; different orders concurrently. A fact is acked
    after its delivery, so a crash in between redelivers it (after ``ack_wait``,
    or at once to the next process when this one is gone).
    """

    def __init__(self, js, label: str, deliver: Deliver, *, batch: int = 128, ack_wait: float = 30.0) -> None:
        self.js, self.label, self.deliver, self.batch, self.ack_wait = js, label, deliver, batch, ack_wait
        self.delivered = 0
        self.not_ours = 0
        self.failed = 0
        self._stopping = False

    async def _subscribe(self, stream: str):
        durable = f"peer-{self.label}-{stream.lower()}"
        await self.js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_ack_pending=4000,
                filter_subjects=list(FACTS[stream]),
            ),
        )
        return await self.js.pull_subscribe_bind(durable, stream)

    async def run(self) -> None:
        await asyncio.gather(*(self._consume(stream) for stream in FACTS))

    def stop(self) -> None:
        self._stopping = True

    async def _consume(self, stream: str) -> None:
        sub = None
        while not self._stopping:
            try:
                if sub is None:
                    sub = await self._subscribe(stream)
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats.errors.TimeoutError is one too)
                continue
            except Exception as exc:  # noqa: BLE001 - broker away: re-bind and go on
                log.warning("bridge %s: fetch failed: %r", stream, exc)
                sub = None
                await asyncio.sleep(0.5)
                continue
            by_order: dict[str, list] = {}
            for msg in msgs:
                fact = self._decode(msg)
                if fact is None:
                    await msg.term()
                    continue
                by_order.setdefault(fact.order_id, []).append((msg, fact))
            await asyncio.gather(*(self._hand_over(items) for items in by_order.values()))

    def _decode(self, msg) -> Fact | None:
        h = msg.headers or {}
        body = contracts.message_type(msg.subject)()
        try:
            body.ParseFromString(msg.data)
        except DecodeError:
            return None
        return fact_of(msg.subject, body, h.get("ce-id") or h.get("Nats-Msg-Id") or "")

    async def _hand_over(self, items) -> None:
        for msg, fact in items:
            try:
                ours = await self.deliver(fact)
            except Exception as exc:  # noqa: BLE001 - orchestrator away: redelivered later
                self.failed += 1
                log.warning("bridge: delivering %s of %s failed: %r", fact.subject, fact.order_id, exc)
                await msg.nak(delay=1.0)
                continue
            if ours:
                self.delivered += 1
            else:
                self.not_ours += 1
            await msg.ack()
