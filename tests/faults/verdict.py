"""The chaos run's judgement: pure functions over what the run collected (no mesh, no I/O),
so that every check can be shown to fail on a vacuous run (tests/unit/test_chaos_verdict.py).

What the workload implies (tests/faults/chaos.py ``submit_orders`` / ``submit_returns``):

- Orders: order ``i`` (0-based) goes to the *poor* customer when ``i % 50 == 7`` — a credit
  limit of 1.00 while the cheapest line costs 10.00, and no stock — so every poor order is
  REJECTED on credit (N=250: 5 of them; N=2000: 40). Every other order goes to the *good*
  customer: a credit limit of 10,000,000.00 (an order costs at most 180.00) and ``10 * N``
  units of each SKU (an order takes at most 3 of a SKU, so at most ``3 * N`` are ever
  demanded): nothing is short and nothing is refused, so every good order should end
  INVOICED. Required: all poor orders REJECTED, at least 95 % of the good ones INVOICED.
- Returns: ``returns`` of the invoiced good orders get a return of one line, its reason drawn
  at random from NOT_NEEDED (restocked: credited), DEFECTIVE (scrapped: credited) and OTHER
  (refused) by the WMS autopilot's default rules. Required: as many returns created as asked
  for; at least 95 % of those with a crediting reason credited (and at least one); none of
  those with a refusing reason credited.
- Faults count only once their effect was seen; every kind must have been seen at least once
  (kills and stops of a live process, the broker's restart, the ERP outage, the WMS measured
  slow, each armed crash point logged as fired).
- The ledger is compared over the union of ERP's and WMS's positions: a position on one side
  only is drift.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb

TERMINAL = {pb.ORDER_STATUS_INVOICED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED}
RETURN_TERMINAL = {rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_PARTIALLY_CREDITED,
                   rpb.RETURN_STATUS_REFUSED, rpb.RETURN_STATUS_EXPIRED, rpb.RETURN_STATUS_CANCELLED}
CREDITED = {rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_PARTIALLY_CREDITED}
# The WMS autopilot's default rules (CROSSDOCK_WMS_RETURN_RULES): restock or scrap -> credited.
CREDITING_REASONS = {rpb.RETURN_REASON_NOT_NEEDED, rpb.RETURN_REASON_DEFECTIVE}
REFUSING_REASONS = {rpb.RETURN_REASON_OTHER}

INVOICED_SHARE = 0.95  # of the good customer's orders
CREDITED_SHARE = 0.95  # of the returns whose reason credits

# The faults injected by the harness (each must be seen at least once), besides the crash points.
INJECTED = ("sigkill", "sigstop", "nats_restart", "erp_outage", "wms_slowed")


def poor_order(i: int) -> bool:
    """The workload's rule: which order (by its index) goes to the customer without credit."""
    return i % 50 == 7


def order_name(status: int) -> str:
    return pb.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


def return_name(status: int) -> str:
    return rpb.ReturnStatus.Name(status).removeprefix("RETURN_STATUS_")


@dataclass
class FaultEffect:
    """One injection and whether its effect was seen (with the evidence, or why not)."""

    kind: str
    seen: bool
    evidence: str = ""


@dataclass
class Observed:
    """Everything the run collected, as plain data."""

    good_orders: set[str] = field(default_factory=set)
    poor_orders: set[str] = field(default_factory=set)
    orders: dict[str, int] = field(default_factory=dict)  # order id -> OrderStatus (0: never read)
    returns_requested: int = 0
    return_reasons: dict[str, int] = field(default_factory=dict)  # return id -> ReturnReason
    returns: dict[str, int] = field(default_factory=dict)  # return id -> ReturnStatus
    invoices: Counter = field(default_factory=Counter)  # order id -> invoices in ERP
    credit_memos: Counter = field(default_factory=Counter)  # return id -> memos in ERP
    memos_over_invoice: int = 0
    shipments: Counter = field(default_factory=Counter)  # order id -> shipments in TMS
    stock: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # WMS on hand, allocated
    ledger: dict[tuple[str, str], int] = field(default_factory=dict)  # ERP on hand
    dead_letters: list[tuple[bool, str]] = field(default_factory=list)  # (permanent, reason)
    faults: list[FaultEffect] = field(default_factory=list)
    crash_points_armed: set[str] = field(default_factory=set)
    crash_points_fired: Counter = field(default_factory=Counter)  # point -> log lines


@dataclass
class Verdict:
    invariants: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    mix: dict[str, dict] = field(default_factory=dict)
    faults_seen: Counter = field(default_factory=Counter)
    faults_not_seen: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return bool(self.invariants) and all(self.invariants.values())


def order_mix(obs: Observed) -> tuple[bool, dict, list[str]]:
    good = Counter(obs.orders.get(o, 0) for o in obs.good_orders)
    poor = Counter(obs.orders.get(o, 0) for o in obs.poor_orders)
    need = math.ceil(INVOICED_SHARE * len(obs.good_orders))
    invoiced = good[pb.ORDER_STATUS_INVOICED]
    rejected = poor[pb.ORDER_STATUS_REJECTED]
    mix = {
        "good": {"orders": len(obs.good_orders), "required_invoiced": need,
                 **{order_name(k): v for k, v in sorted(good.items())}},
        "poor": {"orders": len(obs.poor_orders), "required_rejected": len(obs.poor_orders),
                 **{order_name(k): v for k, v in sorted(poor.items())}},
    }
    problems = []
    if not obs.good_orders:
        problems.append("order mix: no order of the good customer")
    if invoiced < need:
        problems.append(f"order mix: {invoiced} of {len(obs.good_orders)} good orders invoiced, "
                        f"{need} required ({dict(mix['good'])})")
    if rejected != len(obs.poor_orders):
        problems.append(f"order mix: {rejected} of {len(obs.poor_orders)} orders without credit rejected")
    return not problems, mix, problems


def return_mix(obs: Observed) -> tuple[bool, dict, list[str]]:
    crediting = {r for r, why in obs.return_reasons.items() if why in CREDITING_REASONS}
    refusing = {r for r, why in obs.return_reasons.items() if why in REFUSING_REASONS}
    credited = {r for r, status in obs.returns.items() if status in CREDITED}
    need = max(1, math.ceil(CREDITED_SHARE * len(crediting)))
    mix = {"requested": obs.returns_requested, "created": len(obs.return_reasons),
           "crediting_reason": len(crediting), "required_credited": need,
           "credited": len(credited & crediting), "refusing_reason": len(refusing),
           "credited_though_refusing": len(credited & refusing),
           **{return_name(k): v for k, v in sorted(Counter(obs.returns.values()).items())}}
    problems = []
    if len(obs.return_reasons) != obs.returns_requested:
        problems.append(f"return mix: {len(obs.return_reasons)} returns created, "
                        f"{obs.returns_requested} asked for")
    if len(credited & crediting) < need:
        problems.append(f"return mix: {len(credited & crediting)} of {len(crediting)} returns with a "
                        f"crediting reason credited, {need} required")
    if credited & refusing:
        problems.append(f"return mix: {len(credited & refusing)} returns credited though their reason "
                        "is refused")
    return not problems, mix, problems


def ledger_drift(ledger: dict[tuple[str, str], int],
                 wms_on_hand: dict[tuple[str, str], int]) -> dict[tuple[str, str], tuple]:
    """(warehouse, sku) -> (ERP on hand, WMS on hand) wherever they differ, over the union of
    both sides' positions (None: no position on that side)."""
    return {key: (ledger.get(key), wms_on_hand.get(key))
            for key in sorted(set(ledger) | set(wms_on_hand)) if ledger.get(key) != wms_on_hand.get(key)}


def fault_tally(obs: Observed) -> tuple[Counter, Counter, list[str]]:
    """(seen by kind, injected without effect by kind, kinds never seen)."""
    seen, not_seen = Counter(), Counter()
    for f in obs.faults:
        (seen if f.seen else not_seen)[f.kind] += 1
    for point in sorted(obs.crash_points_armed):
        if obs.crash_points_fired.get(point):
            seen[f"crash:{point}"] = obs.crash_points_fired[point]
    required = [*INJECTED, *(f"crash:{p}" for p in sorted(obs.crash_points_armed))]
    return seen, not_seen, [k for k in required if not seen.get(k)]


def judge(obs: Observed) -> Verdict:
    v = Verdict()
    inv = v.invariants
    inv["every order terminal"] = bool(obs.orders) and all(s in TERMINAL for s in obs.orders.values())
    ok, v.mix["orders"], problems = order_mix(obs)
    inv["orders as the workload implies"] = ok
    v.problems += problems

    invoiced = {o for o, s in obs.orders.items() if s == pb.ORDER_STATUS_INVOICED}
    ours = {o: n for o, n in obs.invoices.items() if o in obs.orders}
    inv["one invoice per shipped order"] = set(ours) == invoiced and all(n == 1 for n in ours.values())
    inv["no shipment booked twice"] = all(n == 1 for n in obs.shipments.values())
    inv["no negative stock"] = all(h >= 0 and 0 <= a <= h for h, a in obs.stock.values())
    drift = ledger_drift(obs.ledger, {k: h for k, (h, _) in obs.stock.items()})
    inv["ERP ledger equals WMS stock"] = not drift
    if drift:
        v.problems.append(f"ledger drift (ERP, WMS): {dict(list(drift.items())[:5])}")

    inv["every return terminal"] = all(s in RETURN_TERMINAL for s in obs.returns.values()) and (
        set(obs.returns) == set(obs.return_reasons))
    ok, v.mix["returns"], problems = return_mix(obs)
    inv["returns as their reasons imply"] = ok
    v.problems += problems
    credited = {r for r, s in obs.returns.items() if s in CREDITED}
    memos = {r: n for r, n in obs.credit_memos.items() if r in obs.returns}
    inv["one credit memo per accepted return"] = (
        set(memos) == credited and all(n == 1 for n in memos.values()) and obs.memos_over_invoice == 0)

    not_permanent = [reason for permanent, reason in obs.dead_letters if not permanent]
    inv["dead letters only with a permanent reason"] = not not_permanent
    v.problems += [f"dead letter without a permanent reason: {r}" for r in not_permanent]

    v.faults_seen, v.faults_not_seen, missing = fault_tally(obs)
    inv["every fault seen taking effect"] = not missing
    if missing:
        v.problems.append(f"faults never seen taking effect: {', '.join(missing)}")
    return v
