"""packaging/prometheus's alert rules and packaging/grafana's dashboard: promtool checks
the rules and runs their unit tests (each alert fires on its series, not on a healthy
daemon's), checks every dashboard query as PromQL, and every nsmd metric they name is one
the daemon serves (docs/reference/metrics.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from nsmd.cli import reference

ROOT = os.path.join(os.path.dirname(__file__), "..", "packaging")
RULES = os.path.join(ROOT, "prometheus", "nsmd-alerts.yml")
DASHBOARD = os.path.join(ROOT, "grafana", "nsmd-dashboard.json")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:   # scripts/setup installs it (Debian's prometheus package)
        if os.environ.get("NSMD_REQUIRE_NETNS") == "1":
            pytest.fail("promtool is missing: CI must check the alert rules")
        pytest.skip("promtool is not installed (scripts/setup installs it)")
    return path


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_alert_rules_are_valid_and_fire_when_they_should(promtool):
    checked = run(promtool, "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "nsmd-alerts.test.yml", cwd=os.path.dirname(RULES))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def dashboard_queries() -> list[str]:
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 10
    return queries


def test_every_dashboard_query_is_promql(promtool, tmp_path):
    rules = []
    for i, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"a Grafana variable the check does not know: {query}"
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_they_name_only_metrics_the_daemon_serves():
    served = set(re.findall(r"^\| `(nsmd_\w+)`", reference.metrics(), re.M))
    with open(RULES, encoding="utf-8") as f:
        exprs = [r["expr"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    named = {m for e in exprs + dashboard_queries() for m in re.findall(r"\bnsmd_\w+", e)}
    named = {re.sub(r"_(bucket|count|sum)$", "", m) for m in named}
    assert named and named <= served, named - served
