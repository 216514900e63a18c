"""What the cluster's Alertmanager needs from the alerts: the labels its routes and
inhibitions match on, as the Prometheus Operator builds them from the AlertmanagerConfig."""

from __future__ import annotations

import re

import yaml

from sightline import k8s
from sightline.runtime import REPO_ROOT


def alerts() -> list[dict]:
    return [r for g in k8s.prometheus_rule()["spec"]["groups"] for r in g["rules"] if "alert" in r]


def matches(matcher: dict, labels: dict) -> bool:
    value = labels.get(matcher["name"], "")
    op = matcher.get("matchType", "=")
    return {"=": value == matcher["value"], "!=": value != matcher["value"],
            "=~": re.fullmatch(matcher["value"], value) is not None,
            "!~": re.fullmatch(matcher["value"], value) is None}[op]


def test_every_alert_carries_the_namespace_the_operator_matches_and_a_routed_severity():
    namespace = k8s.deploy_namespace()
    config = k8s.alertmanager_config()["spec"]
    # the operator puts namespace="<the AlertmanagerConfig's namespace>" in front of these
    routes = config["route"]["routes"]
    for alert in alerts():
        labels = alert["labels"]
        assert labels.get("namespace") == namespace, alert["alert"]
        receivers = [r["receiver"] for r in routes if all(matches(m, labels) for m in r["matchers"])]
        assert receivers, f"{alert['alert']} {labels} matches no route"


def test_the_local_rules_stay_without_a_namespace():
    """The stamp is for the cluster only: the local stack has no namespaces."""
    for path in (REPO_ROOT / "prometheus" / "rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            assert not any("namespace" in r.get("labels", {}) for r in group["rules"]), path.name


def test_triton_down_inhibits_only_its_own_pod_and_the_latency_page_holds_back_the_p95_ticket():
    for rules in (yaml.safe_load((REPO_ROOT / "prometheus" / "alertmanager.yml").read_text())["inhibit_rules"],
                  k8s.alertmanager_config()["spec"]["inhibitRules"]):
        by_source = {}
        for rule in rules:
            source = rule.get("source_matchers") or [f"{m['name']}{m['matchType']}\"{m['value']}\"" for m in rule["sourceMatch"]]
            by_source[" ".join(source)] = rule
        triton = by_source['alertname="SightlineTritonDown"']
        assert {"namespace", "pod"} <= set(triton["equal"])
        latency = by_source['alertname="SightlineLatencyBudgetBurn" severity="critical"']
        assert "namespace" in latency["equal"]


def test_the_pod_monitor_keeps_the_pod_label_the_triton_inhibition_compares():
    """The operator labels PodMonitor targets with namespace and pod unless a relabeling
    drops or overwrites them; both Triton alerts keep them (one by target, one by namespace)."""
    monitor = yaml.safe_load((REPO_ROOT / "k8s" / "base" / "podmonitor.yaml").read_text())
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for relabel in endpoint.get("relabelings", []):
            assert relabel.get("targetLabel") not in ("pod", "namespace"), relabel
            assert relabel.get("action") not in ("labeldrop", "labelkeep"), relabel
    triton = [a for a in alerts() if a["alert"] == "SightlineTritonDown"]
    assert {a["labels"]["scope"] for a in triton} == {"target", "all"}
    by_target = next(a for a in triton if a["labels"]["scope"] == "target")
    assert re.fullmatch(r'up\{job="triton"\} == 0', by_target["expr"].strip())  # every label of the target
