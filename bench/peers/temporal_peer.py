"""The Temporal peer's worker: the activities (each sends one command to a system
service, or asks ERP and WMS over gRPC) and the event bridge (each system event
about an order becomes a ``fact`` signal to the workflow whose id is the order
id, acked on the broker once the Temporal server has taken the signal).

    python -m bench.peers.temporal_peer --temporal HOST:PORT --nats URL --erp ADDR --wms ADDR --label NAME

Runs with the peers' venv (``bench/peers/venv.py``) against ``temporal server
start-dev`` (started by ``bench/peerrun.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from . import system
from .system import EventBridge, Fact, Order, SystemServices
from .temporal_workflow import TASK_QUEUE, OrderToShip


class Steps:
    """The activities, given their dependency (cf. temporalio/samples-python)."""

    def __init__(self, systems: SystemServices) -> None:
        self.systems = systems

    @activity.defn(name="check")
    async def check(self, order: Order) -> tuple[bool, str]:
        return await self.systems.check(order)

    @activity.defn(name="create_sales_order")
    async def create_sales_order(self, order: Order) -> bool:
        return await self.systems.send(order.order_id, "create_sales_order", system.create_sales_order(order))

    @activity.defn(name="release_to_warehouse")
    async def release_to_warehouse(self, order: Order) -> bool:
        return await self.systems.send(
            order.order_id, "release_to_warehouse", system.create_fulfilment(order)
        )

    @activity.defn(name="book_shipment")
    async def book_shipment(self, order: Order, weight_grams: int) -> bool:
        return await self.systems.send(
            order.order_id, "book_shipment", system.book_shipment(order, weight_grams)
        )

    @activity.defn(name="assign_shipment")
    async def assign_shipment(self, order: Order, booked: Fact) -> bool:
        return await self.systems.send(
            order.order_id, "assign_shipment", system.assign_shipment(order, booked)
        )

    @activity.defn(name="post_invoice")
    async def post_invoice(self, order: Order, shipment_id: str) -> bool:
        return await self.systems.send(
            order.order_id, "post_invoice", system.post_invoice(order, shipment_id)
        )

    @activity.defn(name="cancel_sales_order")
    async def cancel_sales_order(self, order: Order, reason: str) -> bool:
        return await self.systems.send(
            order.order_id, "cancel_sales_order", system.cancel_sales_order(order, reason)
        )

    def all(self) -> list:
        return [
            self.check,
            self.create_sales_order,
            self.release_to_warehouse,
            self.book_shipment,
            self.assign_shipment,
            self.post_invoice,
            self.cancel_sales_order,
        ]


def signaller(client: Client) -> system.Deliver:
    async def deliver(fact: Fact) -> bool:
        try:
            await client.get_workflow_handle(fact.order_id).signal(OrderToShip.fact, fact)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # no such workflow, or it has finished
                return False
            raise
        return True

    return deliver


async def connect(target: str, timeout: float = 60) -> Client:
    """The server may still be starting (or restarting after a kill): try until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(target)
        except Exception:  # noqa: BLE001 - refused while the server starts
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    client = await connect(args.temporal)
    systems = SystemServices(
        args.nats, args.erp, args.wms, source=f"peer-{args.label}", repeats_file=args.repeats_file
    )
    await systems.connect()
    bridge = EventBridge(systems.js, args.label, signaller(client))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=[OrderToShip], activities=Steps(systems).all())
    bridge_task = asyncio.create_task(bridge.run())
    async with worker:
        if args.ready_file:
            Path(args.ready_file).write_text("ready\n")  # noqa: ASYNC240 - once, at start
        await stop.wait()
        bridge.stop()
        await bridge_task
    await systems.close()


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.temporal_peer", description=__doc__)
    ap.add_argument("--temporal", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--erp", required=True)
    ap.add_argument("--wms", required=True)
    ap.add_argument("--label", default="temporal")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--repeats-file", default="", help="a line per command the broker already had")
    return ap.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parse()))
