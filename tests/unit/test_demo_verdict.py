"""`make demo`'s verdict: a page or ticket on the healthy stretch fails the demo, even when the
fault then fires its alert and diagnose names the cause."""

from __future__ import annotations

from sightline import diagnose as dx
from sightline.cli import demo_succeeded
from sightline.incident import EXPECTED, IncidentRun

FAULT_AT = 1_000_100.0


def run_with(fired_before_fault: dict, cause: str = "batcher", alert_after_s: float | None = 13.0) -> IncidentRun:
    expected = EXPECTED["batcher"]
    hypothesis = dx.Hypothesis(cause, "title", 7.0, cause="", mitigation="", fix="", alert="")
    diagnosis = dx.Diagnosis(at=FAULT_AT + 30, since_s=30, baseline_s=90, readings={}, hypotheses=[hypothesis],
                             ruled_out=[], firing=[], timeline=[])
    run = IncidentRun("batcher", started_at=FAULT_AT - 75, fault_at=FAULT_AT, fired_before_fault=fired_before_fault,
                      diagnosis=diagnosis)
    if alert_after_s is not None:
        run.first_firing[expected.alert] = FAULT_AT + alert_after_s
    return run


def test_a_clean_healthy_stretch_the_right_alert_and_cause_pass():
    assert demo_succeeded(run_with({}), EXPECTED["batcher"], {"triton": 0})
    # an info alert (a model version changed) is no page and no ticket
    assert demo_succeeded(run_with({"SightlineModelVersionChanged": "info"}), EXPECTED["batcher"], {"triton": 0})


def test_a_page_or_a_ticket_on_healthy_traffic_fails_the_demo_whatever_came_after():
    for noise in ({"SightlineLatencyBudgetBurn": "critical"}, {"SightlineQueueWaitHigh": "warning"}):
        assert not demo_succeeded(run_with(noise), EXPECTED["batcher"], {"triton": 0})


def test_a_missing_alert_a_wrong_cause_or_a_dirty_triton_exit_fail_the_demo():
    assert not demo_succeeded(run_with({}, alert_after_s=None), EXPECTED["batcher"], {"triton": 0})
    assert not demo_succeeded(run_with({}, cause="leak"), EXPECTED["batcher"], {"triton": 0})
    assert not demo_succeeded(run_with({}), EXPECTED["batcher"], {"triton": -11})
