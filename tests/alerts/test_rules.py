"""deploy/prometheus/crossdock-rules.yaml: valid for promtool, each alert proven by
`promtool test rules` on synthetic series, named metrics that exist, a severity, a
summary and a runbook section in the README; the Kubernetes PrometheusRule is the
same rules."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from services.mesh import monitoring
from tests.external_tools import REPO, promtool

from .metric_names import PROMETHEUS_SERIES, exported, read_by

RULES = monitoring.RULES
TESTS = RULES.with_name("crossdock-rules.test.yaml")
SEVERITIES = {"critical", "warning", "info"}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def test_promtool_accepts_the_rules_and_the_example_configuration():
    example = RULES.with_name("prometheus.example.yml")
    for args in (["check", "rules", str(RULES)], ["check", "config", str(example)]):
        proc = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say():
    proc = subprocess.run([promtool(), "test", "rules", str(TESTS)], capture_output=True, text=True,
                          timeout=120, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_unit_tests_fix_the_order_in_which_the_groups_are_evaluated():
    # Without group_eval_order promtool evaluates the groups in a map's (random) order: an
    # alert on a recorded series then sees it one evaluation late in some runs, and its
    # unit test fails one run in a few.
    groups = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]]
    recording = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]
                 if all("record" in r for r in g["rules"])]
    order = yaml.safe_load(TESTS.read_text()).get("group_eval_order")
    assert order and sorted(order) == sorted(groups), order
    assert order[:len(recording)] == recording, order


def test_every_alert_has_a_unit_test_that_sees_it_fire():
    tested = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tested for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert {a["alert"] for a in alerts()} <= fired


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_in_the_readme():
    anchors = _anchors((REPO / "README.md").read_text())
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for a in alerts():
        assert a["labels"]["severity"] in SEVERITIES, a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        url = a["annotations"]["runbook_url"]
        assert url == f"README.md#{a['alert'].lower()}", a["alert"]
        assert url.split("#", 1)[1] in anchors, f"README.md has no section for {a['alert']}"


def test_the_rules_read_only_metrics_the_services_export_or_the_rules_record():
    recorded = {r["record"] for r in rules() if "record" in r}
    known = exported() | recorded | PROMETHEUS_SERIES
    for r in rules():
        unknown = read_by(r["expr"]) - known
        name = r.get("alert") or r.get("record")
        assert not unknown, f"{name} reads {sorted(unknown)}, which nothing exports"


def test_the_kubernetes_prometheusrule_is_the_rules_file():
    assert monitoring.PROMETHEUS_RULE.read_text() == monitoring.render_prometheus_rule(), (
        f"{monitoring.PROMETHEUS_RULE} is out of date: run `make rules`")
    rule = yaml.safe_load(monitoring.PROMETHEUS_RULE.read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("text, names", [
    ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 60', {"a_bucket"}),
    ("b:c:rate5m > 0 unless on (consumer) d offset 5m", {"b:c:rate5m", "d"}),
    ('sum(rate(e_total[$__rate_interval])) / ignoring(code) f{code=~"5.."}', {"e_total", "f"}),
])
def test_the_metric_names_of_an_expression(text, names):
    assert read_by(text) == names
