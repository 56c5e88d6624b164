"""The Grafana dashboards in dashboards/: valid dashboard JSON, every panel a PromQL query on the
``${datasource}`` Prometheus variable, and every metric they query is one that exists: ours
(``cmmd_dist.train.metrics.prometheus_names``) or one of Ray's node metrics (named in Ray's own dashboards).
tests/integration/test_metrics_scrape.py checks the same names against a real Ray's Prometheus endpoint.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from cmmd_dist.train.metrics import prometheus_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
METRIC = re.compile(r"\bray_[a-zA-Z0-9_]+")  # every series we query is a Ray metric (prefix ray_)


def queried_metrics(dashboard: dict) -> set[str]:
    return {name for panel in dashboard["panels"] for t in panel.get("targets", []) for name in METRIC.findall(t.get("expr", ""))}


def check_dashboard(d: dict) -> list[str]:
    problems = []
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in d:
            problems.append(f"no {key}")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if (ds.get("type"), ds.get("query")) != ("datasource", "prometheus"):
        problems.append("no ${datasource} Prometheus variable")
    ids = [p.get("id") for p in d.get("panels", [])]
    if not ids or len(set(ids)) != len(ids):
        problems.append("no panels, or panel ids repeat")
    for p in d.get("panels", []):
        targets = p.get("targets", [])
        if not targets or not all(t.get("expr") and t.get("refId") for t in targets):
            problems.append(f"panel {p.get('title')!r}: no PromQL target")
        uids = {p.get("datasource", {}).get("uid")} | {t.get("datasource", {}).get("uid") for t in targets}
        if uids != {"${datasource}"}:
            problems.append(f"panel {p.get('title')!r}: datasource is not ${{datasource}}")
        if not {"x", "y", "w", "h"} <= set(p.get("gridPos", {})):
            problems.append(f"panel {p.get('title')!r}: no gridPos")
        for t in targets:
            if t.get("expr", "").count("(") != t.get("expr", "").count(")"):
                problems.append(f"panel {p.get('title')!r}: unbalanced parentheses")
    return problems


def unknown_metrics(queried: set[str], ray_text: str) -> set[str]:
    """Queried names that are neither exported by cmmd_dist nor named in Ray's own dashboards."""
    return {m for m in queried - prometheus_names() if not re.search(rf"\b{m}\b", ray_text)}


def ray_node_metric_names() -> str:
    """The text of Ray's own default dashboard, which names every node metric Ray exports."""
    ray = pytest.importorskip("ray")
    return (Path(ray.__file__).parent / "dashboard/modules/metrics/dashboards/default_dashboard_panels.py").read_text()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_and_queries_prometheus(path):
    d = json.loads(path.read_text())
    assert check_dashboard(d) == []
    assert queried_metrics(d)


def test_dashboards_query_only_metrics_that_exist_and_show_all_of_ours():
    assert {p.name for p in DASHBOARDS} >= {"cmmd-training.json", "cmmd-sweeps.json"}
    queried = set().union(*(queried_metrics(json.loads(p.read_text())) for p in DASHBOARDS))
    ours = prometheus_names()
    assert ours <= queried, f"exported but on no panel: {ours - queried}"
    unknown = unknown_metrics(queried, ray_node_metric_names())
    assert not unknown, f"queried, but neither ours nor a Ray metric: {unknown}"
    assert {"ray_node_cpu_utilization", "ray_node_gpus_utilization"} <= queried


def test_checker_rejects_a_broken_dashboard():
    d = json.loads((ROOT / "dashboards" / "cmmd-training.json").read_text())
    broken = copy.deepcopy(d)
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "datasource"]
    broken["panels"][0]["targets"] = []
    broken["panels"][1]["datasource"] = {"type": "prometheus", "uid": "my-prom"}
    broken["panels"][2]["targets"][0]["expr"] = "max(ray_cmmd_train_rec"
    problems = "\n".join(check_dashboard(broken))
    for expected in ("no ${datasource}", "no PromQL target", "is not ${datasource}", "unbalanced"):
        assert expected in problems
    typo = copy.deepcopy(d)
    typo["panels"][3]["targets"][0]["expr"] = "ray_cmmd_train_kl_divergence"
    typo["panels"][10]["targets"][0]["expr"] = "avg(ray_node_cpu_utilisation)"
    unknown = unknown_metrics(queried_metrics(typo), ray_node_metric_names())
    assert unknown == {"ray_cmmd_train_kl_divergence", "ray_node_cpu_utilisation"}
