"""Order-to-ship as a Temporal workflow (orchestration only: no I/O here).

Each step is an activity (``temporal_peer.Steps``) that sends one command to a
system service; the workflow then waits for the system's answer, which the
worker's event bridge delivers as the ``fact`` signal. Temporal's history is
what it persists: every activity's schedule/start/completion, every signal and
the workflow's result (its audit trail).

    check credit + stock (gRPC) -> create sales order (ERP) -> accepted?
    -> release to the warehouse (WMS) -> allocated, picked, packed
    -> book the shipment (TMS) -> booked -> assign it to the fulfilment (WMS)
    -> shipped (ship confirmation) -> post the invoice (ERP) -> invoiced
Refused credit or sales order ends it REJECTED; a warehouse that rejects the
fulfilment cancels the sales order (compensation) and ends it CANCELLED; a
booking that no carrier takes ends it ON_HOLD (Crossdock holds it for a
person; out of the peer's scope).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .system import Fact, Order

TASK_QUEUE = "crossdock-order-to-ship"
# A command is published in milliseconds: a short timeout, so that a step whose
# worker died is retried soon; retried until it succeeds (the system services
# being down delays the order, never fails it).
STEP = {
    "start_to_close_timeout": timedelta(seconds=5),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
    ),
}


@workflow.defn(name="OrderToShip")
class OrderToShip:
    def __init__(self) -> None:
        self.facts: dict[str, Fact] = {}
        self.status = "RECEIVED"
        self.timeline: list[str] = []

    @workflow.signal
    def fact(self, fact: Fact) -> None:
        """A system event about this order (a redelivered one is a repeat: ignored)."""
        if fact.subject not in self.facts:
            self.facts[fact.subject] = fact
            self.timeline.append(fact.subject)

    @workflow.query
    def current_status(self) -> str:
        return self.status

    async def _first(self, *subjects: str) -> Fact:
        await workflow.wait_condition(lambda: any(s in self.facts for s in subjects))
        return next(self.facts[s] for s in subjects if s in self.facts)

    async def _step(self, name: str, *args) -> None:
        await workflow.execute_activity(name, args=list(args), **STEP)

    @workflow.run
    async def run(self, order: Order) -> str:
        approved, reason = await workflow.execute_activity(
            "check", order, result_type=tuple[bool, str], **STEP
        )
        if not approved:
            self.status = "REJECTED"
            return f"REJECTED: {reason}"
        await self._step("create_sales_order", order)
        so = await self._first("erp.salesorder.accepted", "erp.salesorder.rejected")
        if so.subject == "erp.salesorder.rejected":
            self.status = "REJECTED"
            return f"REJECTED: {so.reason}"
        self.status = "RELEASED"
        await self._step("release_to_warehouse", order)
        packed = await self._first("wms.fulfilment.packed", "wms.fulfilment.rejected")
        if packed.subject == "wms.fulfilment.rejected":
            await self._step("cancel_sales_order", order, packed.reason)  # compensation
            self.status = "CANCELLED"
            return f"CANCELLED: {packed.reason}"
        self.status = "PACKED"
        await self._step("book_shipment", order, packed.weight_grams)
        booked = await self._first("tms.shipment.booked", "tms.shipment.booking_failed")
        if booked.subject == "tms.shipment.booking_failed":
            self.status = "ON_HOLD"
            return f"ON_HOLD: {booked.reason}"
        self.status = "SHIPMENT_BOOKED"
        await self._step("assign_shipment", order, booked)
        await self._first("wms.fulfilment.shipped")
        self.status = "SHIPPED"
        await self._step("post_invoice", order, booked.shipment_id)
        await self._first("erp.invoice.posted")
        self.status = "INVOICED"
        return "INVOICED"
