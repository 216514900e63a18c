"""The prometheus-adapter rule in k8s/README.md serves the metric the HPA scales on, for
the stage it names: its metricsQuery (what the adapter runs) filters that stage itself,
since the seriesQuery only discovers series and its matchers never reach the query."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from sightline.runtime import REPO_ROOT

K8S = REPO_ROOT / "k8s"
STAGE = 'model="detector_model"'


def adapter_rule(readme: str) -> dict:
    scaling = readme.split("## Scaling", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", scaling, re.DOTALL)
    assert block, "k8s/README.md's Scaling section has no yaml block"
    rules = yaml.safe_load(block[1])["rules"]["custom"]
    assert len(rules) == 1
    return rules[0]


def selectors(query: str) -> list[tuple[str, str]]:
    """(metric, matchers) of every selector in a PromQL text."""
    return re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*(?:<<[^>]*>>[^}]*)*)\}", query)


def rendered(query: str) -> str:
    """The query as the adapter sends it for one pod."""
    return (query.replace("<<.LabelMatchers>>", 'namespace="sightline",pod="sightline-triton-0"')
            .replace("<<.GroupBy>>", "pod"))


def test_the_adapter_rule_serves_the_hpas_metric_for_the_model_stage_only():
    rule = adapter_rule((K8S / "README.md").read_text())
    hpa = yaml.safe_load((K8S / "base" / "hpa.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == metric
    assert STAGE in rule["seriesQuery"]
    used = selectors(rule["metricsQuery"])
    assert len(used) >= 2, rule["metricsQuery"]  # queue time over requests
    for name, matchers in used:
        assert "<<.LabelMatchers>>" in matchers, name  # the pod the HPA asks about
        assert STAGE in matchers, f"{name} is not filtered to the model stage: {matchers}"
    assert {name for name, _ in used} == {"nv_inference_queue_duration_us", "nv_inference_request_success"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed by `make`")
def test_the_adapter_query_is_valid_promql(tmp_path):
    rule = adapter_rule((K8S / "README.md").read_text())
    rules = tmp_path / "adapter.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": "pod:sightline_queue_wait_mean_seconds", "expr": rendered(rule["metricsQuery"])}]}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
