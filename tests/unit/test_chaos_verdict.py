"""The chaos run's judgement (tests/faults/verdict.py) cannot pass a vacuous run: each check is
fed what a run that did not do its work would collect, and the run is judged failed."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb
from tests.faults.chaos import Summary
from tests.faults.verdict import INJECTED, FaultEffect, Observed, judge, ledger_drift, poor_order

INVOICED, REJECTED, CANCELLED = pb.ORDER_STATUS_INVOICED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_CANCELLED
CREDITED, REFUSED = rpb.RETURN_STATUS_CREDITED, rpb.RETURN_STATUS_REFUSED
NOT_NEEDED, DEFECTIVE, OTHER = (rpb.RETURN_REASON_NOT_NEEDED, rpb.RETURN_REASON_DEFECTIVE,
                                rpb.RETURN_REASON_OTHER)


def healthy(n_good: int = 40) -> Observed:
    """What a run that did its work collects: every good order invoiced, the poor one
    rejected, returns as their reasons say, every fault seen, the books in agreement."""
    good = {f"G{i}" for i in range(n_good)}
    return Observed(
        good_orders=good, poor_orders={"P0"},
        orders={**{o: INVOICED for o in good}, "P0": REJECTED},
        invoices=Counter(good),
        returns_requested=3,
        return_reasons={"R1": NOT_NEEDED, "R2": DEFECTIVE, "R3": OTHER},
        returns={"R1": CREDITED, "R2": CREDITED, "R3": REFUSED},
        credit_memos=Counter(["R1", "R2"]),
        shipments=Counter(good),
        stock={("WH", "A"): (10, 0), ("WH", "B"): (5, 1)},
        ledger={("WH", "A"): 10, ("WH", "B"): 5},
        dead_letters=[(True, "invalid body")],
        faults=[FaultEffect(kind, True, "seen") for kind in INJECTED],
        crash_points_armed={"after_commit_before_publish", "after_effect_before_ack"},
        crash_points_fired=Counter({"after_commit_before_publish": 2, "after_effect_before_ack": 1}),
    )


def failed(obs: Observed) -> set[str]:
    return {name for name, ok in judge(obs).invariants.items() if not ok}


def test_a_run_that_did_its_work_passes():
    v = judge(healthy())
    assert v.ok, v.problems
    assert v.mix["orders"]["good"] == {"orders": 40, "required_invoiced": 38, "INVOICED": 40}
    assert v.mix["returns"]["credited"] == 2
    assert v.faults_seen["crash:after_commit_before_publish"] == 2


def test_mostly_rejected_orders_fail_the_run_though_every_order_is_terminal():
    obs = healthy()
    rejected = sorted(obs.good_orders)[:30]
    obs.orders.update({o: REJECTED for o in rejected})
    obs.invoices = Counter(o for o in obs.good_orders if o not in rejected)
    v = judge(obs)
    # What the harness checked before: both hold on this run.
    assert v.invariants["every order terminal"] and v.invariants["one invoice per shipped order"]
    assert failed(obs) == {"orders as the workload implies"}
    assert any("10 of 40 good orders invoiced, 38 required" in p for p in v.problems)


@pytest.mark.parametrize(("not_invoiced", "passes"), [(2, True), (3, False)])
def test_at_least_95_percent_of_the_good_orders_invoiced(not_invoiced, passes):
    obs = healthy(40)  # 38 of 40 is 95 %
    cancelled = sorted(obs.good_orders)[:not_invoiced]
    obs.orders.update({o: CANCELLED for o in cancelled})
    obs.invoices = Counter(o for o in obs.good_orders if o not in cancelled)
    assert judge(obs).ok is passes


def test_an_order_without_credit_that_is_not_rejected_fails_the_run():
    obs = healthy()
    obs.orders["P0"] = INVOICED
    obs.invoices["P0"] = 1
    assert failed(obs) == {"orders as the workload implies"}


def test_no_good_orders_at_all_fails_the_run():
    obs = healthy()
    obs.orders = {"P0": REJECTED}
    obs.good_orders, obs.invoices, obs.shipments = set(), Counter(), Counter()
    assert "orders as the workload implies" in failed(obs)


def test_returns_refused_instead_of_credited_fail_the_run():
    obs = healthy()
    obs.returns = {"R1": REFUSED, "R2": REFUSED, "R3": REFUSED}
    obs.credit_memos = Counter()
    v = judge(obs)
    assert v.invariants["every return terminal"] and v.invariants["one credit memo per accepted return"]
    assert failed(obs) == {"returns as their reasons imply"}


def test_fewer_returns_than_asked_for_fail_the_run():
    obs = healthy()
    obs.returns_requested = 30
    assert failed(obs) == {"returns as their reasons imply"}


def test_a_refused_reason_credited_fails_the_run():
    obs = healthy()
    obs.returns["R3"] = CREDITED
    obs.credit_memos["R3"] = 1
    assert failed(obs) == {"returns as their reasons imply"}


@pytest.mark.parametrize("kind", INJECTED)
def test_a_fault_that_never_took_effect_fails_the_run(kind):
    obs = healthy()
    obs.faults = [f for f in obs.faults if f.kind != kind] + [FaultEffect(kind, False, "victim was down")]
    v = judge(obs)
    assert failed(obs) == {"every fault seen taking effect"}
    assert kind not in v.faults_seen and v.faults_not_seen[kind] == 1


def test_faults_are_counted_only_when_seen():
    obs = healthy()
    obs.faults += [FaultEffect("sigkill", True), FaultEffect("sigkill", False, "already dead")]
    v = judge(obs)
    assert v.ok
    assert v.faults_seen["sigkill"] == 2 and v.faults_not_seen["sigkill"] == 1


def test_an_armed_crash_point_that_never_fired_fails_the_run():
    obs = healthy()
    obs.crash_points_armed.add("after_publish_before_delete")
    assert failed(obs) == {"every fault seen taking effect"}
    assert any("crash:after_publish_before_delete" in p for p in judge(obs).problems)


def test_a_ledger_position_only_in_erp_is_drift():
    obs = healthy()
    obs.ledger[("WH", "C")] = 7  # WMS has no such position: comparing WMS's keys only misses it
    assert not {k: q for k, (q, _) in obs.stock.items() if obs.ledger.get(k) != q}
    assert failed(obs) == {"ERP ledger equals WMS stock"}
    assert ledger_drift(obs.ledger, {k: h for k, (h, _) in obs.stock.items()}) == {("WH", "C"): (7, None)}


def test_a_stock_position_only_in_wms_is_drift():
    obs = healthy()
    obs.stock[("WH", "D")] = (3, 0)
    assert failed(obs) == {"ERP ledger equals WMS stock"}


def test_ledger_drift_over_the_union():
    assert ledger_drift({"a": 1, "b": 2}, {"b": 2, "c": 0}) == {"a": (1, None), "c": (None, 0)}
    assert ledger_drift({"a": 1}, {"a": 2}) == {"a": (1, 2)}
    assert ledger_drift({}, {}) == {}


def test_the_workloads_poor_orders():
    assert [i for i in range(250) if poor_order(i)] == [7, 57, 107, 157, 207]
    assert sum(poor_order(i) for i in range(2000)) == 40


def test_the_summary_shows_the_mix_and_the_faults_seen():
    obs = healthy()
    obs.faults.append(FaultEffect("sigstop", False, "never seen stopped"))
    s = Summary()
    s.take(obs, judge(obs))
    text = s.text()
    assert "good customer 40, INVOICED 40 (>= 38 required)" in text
    assert "no credit 1, REJECTED 1" in text
    assert "2 with a crediting reason, 2 credited (>= 2 required)" in text
    assert "faults seen: crash:after_commit_before_publish 2" in text
    assert "injected without effect: sigstop 1" in text
    data = json.loads(s.as_json())
    assert data["ok"] is True
    assert data["mix"]["orders"]["poor"]["REJECTED"] == 1
    assert data["faults"]["sigkill"] == 1 and data["faults_not_seen"] == {"sigstop": 1}
    assert data["fault_log"][-1] == {"kind": "sigstop", "seen": False, "evidence": "never seen stopped"}
