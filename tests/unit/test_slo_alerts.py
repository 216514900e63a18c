"""SLO alerts people can trust: descriptions that say which tier, low-traffic guards that scale
with the tier, idle guardrails, the period budget without traffic, Triton outages.

The behaviour itself is proven by the generated promtool groups (prometheus/tests/slo-*.test.yaml,
run by tests/integration/test_prometheus_rules.py); these tests pin the generator's choices and
check that every SLO gets those groups."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from sightline import conventions as names
from sightline.runtime import REPO_ROOT
from sightline.slo import promtool_tests as slo_tests
from sightline.slo import rules as slo_rules
from sightline.slo.spec import SpecError, load, parse

PROMETHEUS = REPO_ROOT / "prometheus"
SPEC = load(PROMETHEUS / "slo.yaml")


def slo(name: str):
    return next(s for s in SPEC.slos if s.name == name)


def rules(name: str) -> list[dict]:
    document = yaml.safe_load((PROMETHEUS / "rules" / f"slo-{name}.yaml").read_text())
    return [r for g in document["groups"] for r in g["rules"]]


def burn_alerts(name: str) -> list[dict]:
    return [r for r in rules(name) if r.get("labels", {}).get("burnrate_tier")]


def test_each_tier_description_names_its_tier_and_windows_literally():
    # Prometheus expands annotations with the expression's labels only: burnrate_tier is a
    # label of the rule, so `{{ $labels.burnrate_tier }}` read "in the  windows".
    expected = {
        "page_fast": "availability SLO (99.5% over 30d), tier page_fast (1h and 5m windows): error ratio "
                     "{{ $value | humanizePercentage }} over 1h, above 14.4x the error budget.",
        "page_slow": "availability SLO (99.5% over 30d), tier page_slow (6h and 30m windows): error ratio "
                     "{{ $value | humanizePercentage }} over 6h, above 6x the error budget.",
        "ticket_fast": "availability SLO (99.5% over 30d), tier ticket_fast (1d and 2h windows): error ratio "
                       "{{ $value | humanizePercentage }} over 1d, above 3x the error budget.",
        "ticket_slow": "availability SLO (99.5% over 30d), tier ticket_slow (3d and 6h windows): error ratio "
                       "{{ $value | humanizePercentage }} over 3d, above 1x the error budget.",
    }
    got = {a["labels"]["burnrate_tier"]: a["annotations"]["description"] for a in burn_alerts("availability")}
    assert got == expected


@pytest.mark.parametrize("name", [s.name for s in SPEC.slos])
def test_no_slo_annotation_reads_a_label_the_expression_does_not_return(name):
    for rule in rules(name):
        if "alert" not in rule:
            continue
        own = set(rule["labels"]) - {"sloth_slo"}  # sloth_slo is also in the expression's result
        for text in rule["annotations"].values():
            used = set(re.findall(r"\$labels\.(\w+)", text))
            assert not used & own, (rule["alert"], used & own)


def test_the_time_scaled_description_gives_the_windows_it_really_uses(tmp_path):
    slo_rules.generate(SPEC, tmp_path, time_scale=60)
    alerts = [r for g in yaml.safe_load((tmp_path / "slo-availability.yaml").read_text())["groups"]
              for r in g["rules"] if r.get("labels", {}).get("burnrate_tier") == "page_fast"]
    assert "tier page_fast (1m and 5s windows)" in alerts[0]["annotations"]["description"]


def test_the_low_traffic_guard_scales_with_the_tier():
    availability = slo("availability")
    # 1 / (factor x budget): 13.9, 33.3, 66.7, 200 events; the spec's floor is 50.
    assert [slo_rules.min_events(t, availability) for t in slo_rules.TIERS] == [50, 50, 67, 200]
    guards = [int(re.search(r">= (\d+)\)\n", a["expr"] + "\n").group(1)) for a in burn_alerts("availability")]
    assert guards == [50, 50, 67, 200]
    # The latency SLO's budget is 10x larger: the floor decides every tier.
    assert [slo_rules.min_events(t, slo("latency")) for t in slo_rules.TIERS] == [50, 50, 50, 50]


@pytest.mark.parametrize("name", ["availability", "latency"])
def test_one_failure_among_the_guards_events_never_exceeds_a_tiers_threshold(name):
    spec = slo(name)
    for tier in slo_rules.TIERS:
        guard = slo_rules.min_events(tier, spec)
        assert 1 / guard <= slo_rules.tier_threshold(tier, spec) + 1e-12
        assert guard >= spec.low_traffic.min_events


def test_no_low_traffic_floor_means_no_guard():
    data = yaml.safe_load((PROMETHEUS / "slo.yaml").read_text())
    data["slos"][0]["low_traffic"] = {"min_events": 0}
    spec = parse(data)
    generator = slo_rules.Generator(spec)
    assert all(">=" not in a["expr"] for a in generator.alert_rules(spec.slos[0]) if "burnrate_tier" in a["labels"])


def test_an_idle_guardrail_has_no_ok_sample_and_only_a_missing_query_is_blind():
    for name in ("confidence", "stream-freshness"):
        ok = next(r for r in rules(name) if r.get("record") == "slo:sli_guardrail:ok")
        query = slo(name).sli.guardrail.query
        assert ok["expr"].endswith(f"unless on() (({query}) != ({query}))"), name
    no_data = next(r for r in rules("confidence") if r.get("alert") == "SightlineConfidenceNoData")
    assert no_data["expr"] == "absent(min(sightline:detection_confidence:mean10m))"


def test_the_drift_slo_counts_each_disjoint_window_once_and_waits_for_200_of_them():
    # Windows evaluated every few seconds overlap: as a guardrail judged at every evaluation,
    # one unlucky healthy window was a run of bad readings and opened a ticket in its first
    # minutes (CI, the resolution scenario's healthy baseline). The sidecar counts a window
    # once every record in it is new, and the SLO's events are those windows.
    drift = slo("drift")
    assert drift.sli.kind == "ratio"
    assert names.DRIFT_WINDOWS in drift.sli.ratio.error_query and 'result="over_limit"' in drift.sli.ratio.error_query
    assert names.DRIFT_WINDOWS in drift.sli.ratio.total_query and "result" not in drift.sli.ratio.total_query
    # Two healthy breaches (0.25 % each) must not reach the slowest ticket's 1.17 %.
    assert [slo_rules.min_events(t, drift) for t in slo_rules.TIERS if t.severity == "warning"] == [200, 200]
    tickets = [r["expr"] for r in rules("drift") if r.get("alert") == "SightlineDriftBudgetBurn"]
    assert len(tickets) == 2 and all(">= 200" in expr for expr in tickets)


def test_the_period_ratio_reads_zero_while_nothing_was_counted():
    period = next(r for r in rules("availability") if r.get("record") == "slo:sli_error:ratio_rate30d")
    assert "> 0)\nor\n0 * sum_over_time(slo:sli_events:error_rate5m" in period["expr"]


def test_an_outage_of_the_triton_target_counts_in_every_window():
    availability = slo("availability")
    assert availability.outage.up == 'up{job="triton"}'
    # The scrape job the local Prometheus and the cluster's PodMonitor give Triton.
    assert "job_name: triton" in (PROMETHEUS / "prometheus.yml").read_text()
    assert "replacement: triton}" in (REPO_ROOT / "k8s" / "base" / "podmonitor.yaml").read_text()
    records = {r.get("record"): r["expr"] for r in rules("availability") if "record" in r}
    assert '(1 - max(up{job="triton"}))' in records["slo:sli_events:outage_rate"]
    for window in slo_rules.WINDOWS:
        assert f'outage_rate{{sloth_id="detector-availability"}}[{window}]' in records[f"slo:sli_error:ratio_rate{window}"]
    # The latency SLI has no outage: a down server has no latency.
    assert "slo:sli_events:outage_rate" not in {r.get("record") for r in rules("latency")}


def test_an_outage_needs_a_ratio_sli_and_an_up_selector():
    data = yaml.safe_load((PROMETHEUS / "slo.yaml").read_text())
    data["slos"][1]["outage"] = {"up": 'up{job="triton"}'}  # latency
    data["slos"][0]["outage"] = {"up": 'nv_inference_request_success{model="detector"}'}
    with pytest.raises(SpecError) as caught:
        parse(data)
    assert any(p.startswith("slos[1].outage: only a ratio SLI") for p in caught.value.problems)
    assert any(p.startswith("slos[0].outage.up:") for p in caught.value.problems)


@pytest.mark.parametrize("name", [s.name for s in SPEC.slos])
def test_every_slo_gets_the_generated_scenarios_for_these_findings(name):
    spec = slo(name)
    groups = [g["name"] for g in yaml.safe_load((PROMETHEUS / "tests" / f"slo-{name}.test.yaml").read_text())["tests"]]
    wanted = ["everything failing fires every tier, each naming its windows"]
    if spec.sli.guardrail is not None:
        wanted += ["idle (NaN) for 30 minutes, then traffic, opens no ticket"]
    else:
        wanted += ["no traffic yet reads no error and the full budget",
                   "one failed request among 60 in a day opens no ticket"]
        wanted += [next(g.split(": ", 1)[1] for g in groups if "a burn at low traffic" in g)]
    if spec.outage is not None:
        wanted += ["30 minutes with the server's target down burn the budget and open a ticket, but page only as SightlineTritonDown, during the outage and after it",
                   "the server's target down while nothing was served burns nothing"]
    for group in wanted:
        assert f"{name}: {group}" in groups


@pytest.mark.parametrize("values, text", [
    ([0.0, 100.0, 200.0, 300.0], "0+100x3"),
    ([1.0, 1.0, 1.0, None, None, "stale", 2.0], "1x2 _x2 stale 2"),
    ([0.1, 0.2, 0.30000000000000004], "0.1 0.2 0.3"),  # not exact in binary: spelled out
    ([0.5, 0.75, 1.0, 1.25], "0.5+0.25x3"),
    (["NaN", "NaN"], "NaN NaN"),
])
def test_series_notation_compresses_only_runs_promtool_adds_exactly(values, text):
    assert slo_tests.notation(values) == text


def test_a_failed_request_counts_once_although_triton_counts_it_twice():
    # Measured on tritonserver 2.51: 10 corrupt frames -> nv_inference_request_failure +20, all
    # reason="OTHER" (tests/integration/test_slo_availability.py checks the SLI on the real server).
    ratio = slo("availability").sli.ratio
    assert ratio.error_query == 'sum(rate(nv_inference_request_failure{model="detector"}[{{window}}])) / 2'
    assert ratio.total_query.endswith('+ sum(rate(nv_inference_request_failure{model="detector"}[{{window}}])) / 2)')
    assert slo("availability").tests.bad_per_event == 2
    tests = yaml.safe_load((PROMETHEUS / "tests" / "slo-availability.test.yaml").read_text())["tests"]
    outage = next(t for t in tests if t["name"].endswith("an outage fires the page_fast alert"))
    bad = next(s for s in outage["input_series"] if s["series"].startswith("nv_inference_request_failure"))
    assert bad["values"].endswith("200+200x15")  # 100 failed requests a minute, counted twice


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed by `make`")
def test_one_triton_pod_down_of_two_is_no_outage_but_both_down_is(tmp_path):
    """A rolling update (one new pod loading its models, down to Prometheus, while the other
    serves) burns nothing; every pod down fails all the traffic served before."""
    rule_file = PROMETHEUS / "rules" / "slo-availability.yaml"
    ok = 'nv_inference_request_success{model="detector",version="1",pod="%s"}'
    failed = 'nv_inference_request_failure{model="detector",version="1",reason="OTHER",pod="%s"}'
    tests = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            # two pods serving 1 req/s each for two hours; pod b restarts (down) from 120 to 150 min
            {"series": ok % "a", "values": "0+60x180"},
            {"series": ok % "b", "values": "0+60x119 _x30 0+60x30"},
            {"series": failed % "a", "values": "0x180"},
            {"series": failed % "b", "values": "0x119 _x30 0x30"},
            {"series": 'up{job="triton",pod="a"}', "values": "1x180"},
            {"series": 'up{job="triton",pod="b"}', "values": "1x119 0x30 1x30"},
        ],
        "promql_expr_test": [
            {"expr": 'slo:sli_events:outage_rate{sloth_id="detector-availability"}', "eval_time": "135m",
             "exp_samples": [{"labels": 'slo:sli_events:outage_rate{sloth_id="detector-availability",'
                                        'sloth_service="detector",sloth_slo="availability"}', "value": 0}]},
        ],
    }, {
        "interval": "1m",
        "input_series": [
            {"series": ok % "a", "values": "0+60x119 _x60"},
            {"series": ok % "b", "values": "0+60x119 _x60"},
            {"series": failed % "a", "values": "0x119 _x60"},
            {"series": failed % "b", "values": "0x119 _x60"},
            {"series": 'up{job="triton",pod="a"}', "values": "1x119 0x60"},
            {"series": 'up{job="triton",pod="b"}', "values": "1x119 0x60"},
        ],
        "promql_expr_test": [
            {"expr": 'slo:sli_events:outage_rate{sloth_id="detector-availability"}', "eval_time": "135m",
             "exp_samples": [{"labels": 'slo:sli_events:outage_rate{sloth_id="detector-availability",'
                                        'sloth_service="detector",sloth_slo="availability"}', "value": 2}]},
        ],
    }]}
    path = tmp_path / "outage.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
