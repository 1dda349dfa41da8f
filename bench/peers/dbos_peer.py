"""Order-to-ship as a DBOS workflow with steps, and the process that runs it.

Each step sends one command to a system service (or asks ERP and WMS over
gRPC); the workflow then waits for the system's answer with ``DBOS.recv`` on a
topic per aggregate (``erp.salesorder``, ``wms.fulfilment``, ``tms.shipment``,
``erp.invoice``). The event bridge in this process turns each system event
about an order into ``DBOS.send(order_id, fact, topic, idempotency_key=event
id)`` and acks it on the broker once the message is in the system database.
DBOS persists, in its system database: the workflow's status, inputs and
output, every step's output and every message received (its checkpoints).

Submissions come from another process through ``DBOSClient.enqueue`` onto the
``orders`` queue (the documented way to start a workflow from outside the
application); workflow id = order id, so a repeated submission is the same
workflow.

    python -m bench.peers.dbos_peer --db URL --nats URL --erp ADDR --wms ADDR --label NAME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
from pathlib import Path

from dbos import DBOS, DBOSConfig
from dbos._error import DBOSNonExistentWorkflowError

from . import system
from .system import EventBridge, Fact, Order, SystemServices

QUEUE = "orders"
WORKFLOW = "order_to_ship"
WAIT_S = 24 * 3600  # how long a step's answer may take (a system down for hours delays the order)
STEP = {"retries_allowed": True, "max_attempts": 1000, "interval_seconds": 0.2, "backoff_rate": 2.0}

# The one connection of this process to the broker and the system services (set by main()).
systems: SystemServices | None = None


def topic(subject: str) -> str:
    """erp.salesorder.accepted -> erp.salesorder: the workflow waits per aggregate."""
    return subject.rsplit(".", 1)[0]


@DBOS.step(**STEP)
async def check(order: Order) -> tuple[bool, str]:
    return await systems.check(order)


@DBOS.step(**STEP)
async def send(order: Order, step: str, command: str, *args) -> bool:
    build = getattr(system, command)
    return await systems.send(order.order_id, step, build(order, *args))


async def _until(subjects: tuple[str, ...], timeline: list[str]) -> Fact:
    """The next fact among ``subjects`` on their topic; the others on the way are recorded."""
    while True:
        fact: Fact | None = await DBOS.recv_async(topic(subjects[0]), timeout_seconds=WAIT_S)
        if fact is None:
            raise TimeoutError(f"no {' or '.join(subjects)} in {WAIT_S} s")
        timeline.append(fact.subject)
        if fact.subject in subjects:
            return fact


@DBOS.workflow(name=WORKFLOW)
async def order_to_ship(order: Order) -> str:
    timeline: list[str] = []
    approved, reason = await check(order)
    if not approved:
        return f"REJECTED: {reason}"
    await send(order, "create_sales_order", "create_sales_order")
    so = await _until(("erp.salesorder.accepted", "erp.salesorder.rejected"), timeline)
    if so.subject == "erp.salesorder.rejected":
        return f"REJECTED: {so.reason}"
    await send(order, "release_to_warehouse", "create_fulfilment")
    packed = await _until(("wms.fulfilment.packed", "wms.fulfilment.rejected"), timeline)
    if packed.subject == "wms.fulfilment.rejected":
        await send(order, "cancel_sales_order", "cancel_sales_order", packed.reason)  # compensation
        return f"CANCELLED: {packed.reason}"
    await send(order, "book_shipment", "book_shipment", packed.weight_grams)
    booked = await _until(("tms.shipment.booked", "tms.shipment.booking_failed"), timeline)
    if booked.subject == "tms.shipment.booking_failed":
        return f"ON_HOLD: {booked.reason}"
    await send(order, "assign_shipment", "assign_shipment", booked)
    await _until(("wms.fulfilment.shipped",), timeline)
    await send(order, "post_invoice", "post_invoice", booked.shipment_id)
    await _until(("erp.invoice.posted",), timeline)
    return "INVOICED"


async def deliver(fact: Fact) -> bool:
    try:
        await DBOS.send_async(fact.order_id, fact, topic(fact.subject), idempotency_key=fact.event_id)
    except DBOSNonExistentWorkflowError:
        return False
    return True


def prepare_sqlite(url: str, journal_mode: str) -> None:
    """Set the journal mode on the file before DBOS opens it (WAL is kept in the file)."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")


def config(db_url: str, poll_s: float) -> DBOSConfig:
    return {
        "name": "crossdock-peer",
        "system_database_url": db_url,
        "run_admin_server": False,
        "notification_listener_polling_interval_sec": poll_s,
        "enable_otlp": False,
    }


async def main(args: argparse.Namespace) -> None:
    global systems
    if args.db.startswith("sqlite:///") and args.journal_mode:
        prepare_sqlite(args.db, args.journal_mode)
    systems = SystemServices(
        args.nats, args.erp, args.wms, source=f"peer-{args.label}", repeats_file=args.repeats_file
    )
    await systems.connect()
    DBOS(config=config(args.db, args.poll))
    DBOS.launch()
    await DBOS.register_queue_async(QUEUE, polling_interval_sec=args.poll, on_conflict="always_update")
    bridge = EventBridge(systems.js, args.label, deliver)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bridge_task = asyncio.create_task(bridge.run())
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")  # noqa: ASYNC240 - once, at start
    await stop.wait()
    bridge.stop()
    await bridge_task
    DBOS.destroy()
    await systems.close()


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.dbos_peer", description=__doc__)
    ap.add_argument("--db", required=True, help="system database URL (sqlite:///PATH or postgresql://...)")
    ap.add_argument(
        "--journal-mode", default="wal", help="SQLite journal mode set on the file first ('' = keep)"
    )
    ap.add_argument(
        "--poll",
        type=float,
        default=1.0,
        help="queue and notification polling interval, s (DBOS's default: 1.0)",
    )
    ap.add_argument("--nats", required=True)
    ap.add_argument("--erp", required=True)
    ap.add_argument("--wms", required=True)
    ap.add_argument("--label", default="dbos")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--repeats-file", default="", help="a line per command the broker already had")
    return ap.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parse()))
