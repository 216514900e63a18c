"""The SLO translator: spec validation, golden output, burn-rate maths, alert hygiene."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sightline.runtime import REPO_ROOT
from sightline.slo import rules as slo_rules
from sightline.slo.spec import SpecError, load

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slo"
PROMETHEUS = REPO_ROOT / "prometheus"


@pytest.mark.parametrize("path", sorted((FIXTURES / "good").glob("*.yaml")), ids=lambda p: p.stem)
def test_good_specs_load_and_generate(path, tmp_path):
    spec = load(path)
    written = slo_rules.generate(spec, tmp_path / "rules", tests_dir=tmp_path / "tests")
    assert written and all(p.read_text().startswith(slo_rules.HEADER) for p in written)


@pytest.mark.parametrize("path", sorted((FIXTURES / "bad").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_specs_are_refused_with_the_path_of_each_problem(path):
    expected = [line.split("expect:", 1)[1].strip() for line in path.read_text().splitlines() if "expect:" in line]
    with pytest.raises(SpecError) as caught:
        load(path)
    for message in expected:
        assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_the_committed_rules_and_tests_are_what_the_spec_generates():
    stale = slo_rules.stale_files(load(PROMETHEUS / "slo.yaml"), PROMETHEUS / "rules", PROMETHEUS / "tests")
    assert stale == [], "run `sightline slo generate`"


@pytest.mark.parametrize(
    "period, factors", [(30, [14.4, 6.0, 3.0, 1.0]), (28, [13.44, 5.6, 2.8, 0.9333]), (7, [3.36, 1.4, 0.7, 0.2333])]
)
def test_burn_factors_follow_from_the_period(period, factors):
    assert [slo_rules.burn_factor(tier, period) for tier in slo_rules.TIERS] == factors


@pytest.mark.parametrize("threshold, spellings", [(0.12, ["0.12", "0.120", "0.1200"]), (1.0, ["1", "1.0", "1.00"])])
def test_latency_buckets_match_every_spelling_of_the_bound(threshold, spellings):
    pattern = slo_rules.le_regex(threshold).replace("\\\\", "\\")
    assert all(re.fullmatch(pattern, s) for s in spellings)
    assert not re.fullmatch(pattern, "0.125") and not re.fullmatch(pattern, "10")


def test_time_scale_compresses_windows_but_keeps_rule_names(tmp_path):
    spec = load(PROMETHEUS / "slo.yaml")
    slo_rules.generate(spec, tmp_path, time_scale=60)
    text = (tmp_path / "slo-availability.yaml").read_text()
    assert "slo:sli_error:ratio_rate1h" in text and "[1m]" in text and "[1h]" not in text


def test_the_period_ratio_sums_events_instead_of_averaging_ratios():
    rules = yaml.safe_load((PROMETHEUS / "rules" / "slo-availability.yaml").read_text())
    period = next(r for g in rules["groups"] for r in g["rules"] if r.get("record") == "slo:sli_error:ratio_rate30d")
    assert "sum_over_time(slo:sli_events:error_rate5m" in period["expr"]
    assert "avg_over_time" not in period["expr"]


def all_alerts() -> list[dict]:
    alerts = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            alerts += [r for r in group["rules"] if "alert" in r]
    return alerts


def test_every_alert_has_a_prefix_severity_summary_description_and_a_runbook_section():
    runbook = (REPO_ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(r"^## (\S+)", runbook, re.M)}
    anchors |= set(re.findall(r'<a id="([^"]+)"', runbook))
    alerts = all_alerts()
    assert len({a["alert"] for a in alerts}) >= 15
    for alert in alerts:
        assert re.fullmatch(r"Sightline[A-Z][A-Za-z0-9]+", alert["alert"])
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        annotations = alert["annotations"]
        assert annotations["summary"] and "$labels" in annotations["description"] or "$value" in annotations["description"]
        assert "$value" in annotations["description"], alert["alert"]
        assert annotations["runbook_url"].split("#")[1] in anchors, alert["alert"]
