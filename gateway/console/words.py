"""Clear words for the console: what each status, step, kind and action means to a
person, what a cancellation will compensate, which resolutions fit an exception,
times in the reader's zone. Pure functions, no I/O (tests/unit/test_console_words.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp

from .. import users

ORDER_STATUS = {
    "RECEIVED": ("Received", "Waiting for ERP to accept the sales order and approve credit"),
    "RELEASED": ("Released to the warehouse", "Credit approved; the warehouse has the order"),
    "BACKORDERED": ("Backordered", "Waiting for stock to arrive"),
    "ALLOCATED": ("Stock reserved", "The warehouse reserved the stock"),
    "PICKED": ("Picked", "Picked in the warehouse"),
    "PACKED": ("Packed", "Packed; a carrier is being booked"),
    "SHIPMENT_BOOKED": ("Carrier booked", "A carrier is booked; waiting for the goods to leave"),
    "SHIPPED": ("Shipped", "Shipped; the invoice is being posted in ERP"),
    "INVOICED": ("Shipped and invoiced", "Done: shipped and invoiced"),
    "REJECTED": ("Rejected", "Refused (credit, or not enough stock under the cancel policy)"),
    "CANCELLING": ("Being cancelled", "The cancellation is being carried out in the warehouse and ERP"),
    "CANCELLED": ("Cancelled", "Cancelled"),
    "ON_HOLD": ("On hold", "Waits for a person's decision on an exception"),
    "PARTIALLY_SHIPPED": ("Partly shipped", "Some shipped and invoiced; the rest waits for stock"),
}
ORDER_TONE = {"INVOICED": "good", "SHIPPED": "good", "REJECTED": "bad", "CANCELLED": "bad",
              "CANCELLING": "warn", "ON_HOLD": "warn", "BACKORDERED": "warn", "PARTIALLY_SHIPPED": "warn"}
RETURN_STATUS = {
    "REQUESTED": "Requested", "AUTHORIZED": "Authorised", "EXPECTED": "Expected at the warehouse",
    "RECEIVED": "Received", "INSPECTED": "Inspected", "CREDITED": "Credited",
    "PARTIALLY_CREDITED": "Partly credited", "REFUSED": "Refused", "EXPIRING": "Expiring",
    "EXPIRED": "Expired (not received in time)", "CANCELLING": "Being cancelled", "CANCELLED": "Cancelled",
}
SOURCES = {"ordertoship": "Order-to-ship", "returns": "Returns", "erp": "ERP", "wms": "Warehouse (WMS)",
           "tms": "Transport (TMS)", "console": "Console", "gateway": "Gateway"}
STEPS = {
    "received": "Order received", "credit.precheck": "Credit pre-check", "credit.approved": "Credit approved",
    "credit.refused": "Credit refused", "released": "Released to the warehouse",
    "waiting.erp": "Waiting for ERP", "waiting.wms": "Waiting for the warehouse system",
    "allocated": "Stock reserved", "backordered": "Backordered", "picked": "Picked", "packed": "Packed",
    "shipment.requested": "Carrier booking requested", "shipment.booked": "Carrier booked",
    "carrier.refused": "Carrier refused the booking", "shipment.booking_failed": "No carrier could be booked",
    "shipped": "Shipped", "invoice.requested": "Shipment posted to ERP", "invoice.posted": "Invoiced",
    "cancel.requested": "Cancellation requested", "cancelled": "Cancelled",
    "fulfilment.cancelled": "Warehouse released the stock",
    "fulfilment.rejected": "Warehouse refused the order",
    "fulfilment.closed": "Warehouse closed the order", "cancel.refused": "Warehouse refused the cancellation",
    "salesorder.cancelled": "Sales order cancelled, credit released",
    "salesorder.lines_cancelled": "Sales order lines cancelled", "compensate": "Compensating",
    "exception.held": "Held for a decision", "exception.resolved": "Exception resolved",
    "exception.ship_partial": "Shipping what is there",
    "exception.cancel_lines": "Missing quantities cancelled",
    "note.dead_letter_replayed": "Message replayed by an operator",
    "note.dead_letter_discarded": "Message discarded by an operator", "note": "Note",
}
EXCEPTION_KIND = {"SHORT_PICK": "Short pick", "DAMAGED": "Damaged goods",
                  "STOCK_DISCREPANCY": "Stock discrepancy", "CARRIER_FAILED": "No carrier"}
ACTIONS = {
    "SHIP_PARTIAL": ("Ship what is there",
                     "ship the picked quantities now; the rest ships when stock arrives"),
    "CANCEL_LINES": ("Cancel the missing quantities", "ship what is there; the missing units are cancelled "
                     "(in ERP too) and never invoiced"),
    "CANCEL_ORDER": ("Cancel the order", "the whole order is cancelled: the warehouse releases its stock and "
                     "ERP cancels the sales order and releases the credit"),
    "RETRY": ("Try the carriers again", "book a carrier again (for example, after the carrier is back)"),
    "REASSIGN_CARRIER": ("Book another carrier", "book the shipment with the carrier you choose"),
}
WAREHOUSE_KINDS = ("SHORT_PICK", "DAMAGED", "STOCK_DISCREPANCY")
ACTIONS_FOR = {**dict.fromkeys(WAREHOUSE_KINDS, ("SHIP_PARTIAL", "CANCEL_LINES", "CANCEL_ORDER")),
               "CARRIER_FAILED": ("RETRY", "REASSIGN_CARRIER", "CANCEL_ORDER")}
POLICIES = {"SHIP_PARTIAL": "Ship what is there, backorder the rest",
            "CANCEL_LINES": "Ship what is there, cancel the rest", "HOLD": "Hold for a person's decision"}
DRIFT_KINDS = {"QUANTITY_MISMATCH": "Quantities differ", "MISSED_MOVEMENTS": "ERP missed movements",
               "UNKNOWN_TO_WMS": "Unknown to the warehouse", "SEQUENCE_AHEAD": "ERP ahead of the warehouse"}
NOTICES = {
    "cancel-requested": "The cancellation is under way.", "return-created": "The return was created.",
    "resolved": "The exception is resolved; the order continues.",
    "policy-saved": "The exception policy is saved.", "replayed": "The message was sent again.",
    "discarded": "The message was discarded.", "reconciled": "The reconciliation ran.",
    "reorder-saved": "The reorder point is saved.", "signed-out": "You are signed out.",
}
SIGN_IN_WHY = {"idle": "Your session ended after a period without activity. Sign in again.",
               "expired": "Your session reached its maximum length. Sign in again.",
               "none": ""}

# (the view's path, its title, the permission it needs), in the navigation's order.
VIEWS = (("/console/orders", "Orders", "orders.view"),
         ("/console/exceptions", "Exceptions", "exceptions.view"),
         ("/console/dead-letters", "Dead letters", "deadletters.view"),
         ("/console/inventory", "Inventory", "inventory.view"),
         ("/console/health", "Flow health", "health.view"),
         ("/console/audit", "Audit log", "audit.view"))
ACTIONS_NAMED = {"orders.view": "see orders", "orders.cancel": "cancel orders",
                 "returns.create": "create returns",
                 "exceptions.view": "see the exception work list", "exceptions.resolve": "resolve exceptions",
                 "policies.change": "change exception policies", "deadletters.view": "see dead letters",
                 "deadletters.act": "replay or discard dead letters", "inventory.view": "see inventory",
                 "inventory.reconcile": "run reconciliations and repairs",
                 "replenishment.change": "change reorder points", "health.view": "see flow health",
                 "audit.view": "see the audit log"}


def nav(person: users.Person) -> list[tuple[str, str]]:
    return [(path, title) for path, title, permission in VIEWS if person.may(permission)]


def refusal(person: users.Person, permission: str) -> str:
    role = users.ROLE_TITLES.get(person.role, person.role)
    what = ACTIONS_NAMED.get(permission, "do this")
    if person.customer_id and person.role in users.PERMISSIONS.get(permission, ()):
        return f"Accounts of a customer's own staff cannot {what}: it shows every customer's data."
    return f"Your role ({role}) cannot {what}."


def status_title(status: str) -> str:
    return ORDER_STATUS.get(status, (status.replace("_", " ").capitalize(), ""))[0]


def status_help(status: str) -> str:
    return ORDER_STATUS.get(status, ("", ""))[1]


def step_title(step: str) -> str:
    return STEPS.get(step) or step.replace(".", " ").replace("_", " ").capitalize()


def source_title(source: str) -> str:
    return SOURCES.get(source, source)


def compensation(status: str) -> list[str]:
    """What cancelling an order in ``status`` will do, step by step (empty: it cannot be cancelled)."""
    if status == "RECEIVED":
        return ["The order is cancelled at once.",
                "ERP cancels the sales order and releases the credit it reserved."]
    steps = {
        "RELEASED": "The warehouse withdraws the order before it reserves stock.",
        "BACKORDERED": "The warehouse takes the order off its backorder list.",
        "ALLOCATED": "The warehouse releases the stock it reserved.",
        "PICKED": "The warehouse puts the picked goods back and releases the stock.",
        "ON_HOLD": "The open exception is closed; the warehouse releases what it still holds.",
        "PARTIALLY_SHIPPED": "What already shipped stays shipped and invoiced; the warehouse releases the "
                             "rest.",
    }
    if status not in steps:
        return []
    return [steps[status],
            "ERP then cancels the sales order (the lines not shipped) and releases the credit.",
            "The order ends Cancelled; every step appears on its timeline."]


def cancellable(status: str) -> bool:
    return bool(compensation(status))


def when(ts: Timestamp | datetime | None, zone: ZoneInfo) -> str:
    """A time in the reader's zone, e.g. '2026-12-04 10:22:05 CET' ('' when unset)."""
    if ts is None:
        return ""
    if isinstance(ts, Timestamp):
        if not ts.seconds and not ts.nanos:
            return ""
        ts = ts.ToDatetime(tzinfo=UTC)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def money(minor: int, currency: str) -> str:
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 100)
    return f"{sign}{whole:,}.{frac:02d} {currency}"


def problem_title(status: int) -> str:
    return {400: "Check the request", 401: "Sign in", 403: "Not allowed", 404: "Not found",
            409: "Not possible now", 413: "Too large", 422: "Check the form", 429: "Slow down",
            502: "A system failed", 503: "A system is not answering"}.get(status, "Something is wrong")


def problem_text(problem) -> str:
    if problem.status in (502, 500):
        return "One of the systems behind the console failed to answer. Try again in a moment."
    if problem.status == 503:
        return "One of the systems behind the console is not answering right now. Try again in a moment."
    if problem.status == 429:
        return "Too many requests in a short time. Wait a moment and try again."
    return problem.detail or problem_title(problem.status)


def enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix) if value else ""


FILTERS = {"status_title": status_title, "step_title": step_title, "source_title": source_title,
           "kind_title": lambda k: EXCEPTION_KIND.get(k, k),
           "action_title": lambda a: ACTIONS.get(a, (a,))[0],
           "return_status_title": lambda s: RETURN_STATUS.get(s, s), "money": lambda m: money(
               m.amount_minor, m.currency_code) if m is not None else ""}
