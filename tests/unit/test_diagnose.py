"""The diagnose rules on hand-made readings: each incident's signature ranks its cause first."""

from __future__ import annotations

import pytest

from sightline import diagnose as dx

HEALTHY = {
    "rate": 60.0, "model_rate": 60.0, "error_ratio": 0.0, "errors_by_reason": {}, "p95": 0.030,
    "stage_p95": {"preprocess": 0.012, "detector_model": 0.008, "postprocess": 0.003},
    "queue_wait": {"preprocess": 0.002, "detector_model": 0.002, "postprocess": 0.001},
    "batch": 1.5, "cpu": {"tritonserver": 0.2, "stub:preprocess": 0.6}, "gpu": None, "pixels": 307_200.0,
    "brightness": {"cam-1": 0.45, "cam-2": 0.44}, "sharpness": {"cam-1": 300.0, "cam-2": 310.0}, "confidence": 0.9,
    "drift": 1.0, "rss_slope": {"stub:postprocess": 100.0, "tritonserver": 0.0}, "switches": 0.0,
    "camera_fps": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}, "camera_fps_last": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    "camera_expected": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    "camera_gaps": {"cam-1": 0.0, "cam-2": 0.0, "cam-3": 0.0},
}


def readings(**now_changes):
    """Baseline = HEALTHY; now = HEALTHY with the given changes."""
    out = {}
    for signal in dx.SIGNALS:
        def as_dict(value):
            if value is None:
                return {}
            return dict(value) if isinstance(value, dict) else {"": float(value)}
        base = as_dict(HEALTHY[signal.key])
        now = as_dict(now_changes.get(signal.key, HEALTHY[signal.key]))
        out[signal.key] = dx.Reading(signal, now, base, signal.over(60), signal.over(600))
    return out


def test_a_healthy_window_has_no_hypothesis_and_rules_everything_out():
    r = readings()
    assert dx.hypotheses(r) == []
    flat = " ".join(dx.ruled_out(r))
    for cause in ("overload", "bad input", "resolution", "batcher", "camera conditions", "deploy", "memory leak",
                  "camera outage"):
        assert cause in flat


@pytest.mark.parametrize("name, changes", [
    ("outage", {"error_ratio": 0.5, "errors_by_reason": {"decode": 30.0}}),
    ("resolution", {"pixels": 4 * 307_200.0, "stage_p95": {"preprocess": 0.05}, "p95": 0.09}),
    ("lowlight", {"drift": 2.6, "brightness": {"cam-1": 0.45, "cam-2": 0.08}, "sharpness": {"cam-1": 300.0, "cam-2": 40.0},
                  "confidence": 0.6}),
    ("leak", {"rss_slope": {"stub:postprocess": 3e6, "tritonserver": 0.0}}),
    ("batcher", {"batch": 1.0, "queue_wait": {"detector_model": 0.02}, "p95": 0.045}),
    ("saturation", {"rate": 200.0, "p95": 0.6, "batch": 6.0, "queue_wait": {"preprocess": 0.3}}),
    ("camera-drop", {"rate": 45.0, "model_rate": 45.0, "camera_fps": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 3.0},
                     "camera_fps_last": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 0.0}}),
])
def test_each_incident_signature_ranks_its_cause_first(name, changes):
    ranked = dx.hypotheses(readings(**changes))
    assert ranked and ranked[0].key == name, [(h.key, h.score) for h in ranked]
    top = ranked[0]
    assert top.evidence and all(e.reading.expr_now for e in top.evidence)
    assert top.mitigation and top.fix and top.alert


def test_the_lowlight_hypothesis_names_the_dark_camera_and_the_leak_names_the_process():
    lowlight = dx.hypotheses(readings(brightness={"cam-1": 0.45, "cam-2": 0.1}, drift=2.0))[0]
    assert "cam-2" in lowlight.title and "cam-1" not in lowlight.title
    leak = dx.hypotheses(readings(rss_slope={"stub:postprocess": 2e6, "tritonserver": 0.0}))[0]
    assert "stub:postprocess" in leak.title and "MB/hour" in leak.title


def test_a_slow_warm_up_is_not_a_leak_and_fewer_requests_are_not_a_batcher_fault():
    assert dx.hypotheses(readings(rss_slope={"stub:postprocess": 5_000.0, "tritonserver": 0.0})) == []
    # batches of one because traffic fell to a trickle: nothing to batch, not a config change
    assert dx.hypotheses(readings(batch=1.0, rate=10.0, model_rate=10.0)) == []
    # half the requests fail before the model: fewer reach it, batches shrink, the batcher is fine
    outage = dx.hypotheses(readings(batch=1.0, error_ratio=0.5, errors_by_reason={"truncated": 30.0}, model_rate=30.0))
    assert [h.key for h in outage] == ["outage"]


def test_memory_that_grows_with_a_backlog_is_ranked_below_the_overload_that_explains_it():
    ranked = dx.hypotheses(readings(rate=140.0, model_rate=140.0, p95=1.9, batch=31.0,
                                    queue_wait={"detector_model": 1.9, "preprocess": 0.06},
                                    rss_slope={"tritonserver": 18e6, "stub:detector_model": 17e6}))
    assert [h.key for h in ranked] == ["saturation", "leak"]
    assert "backlog" in ranked[1].title


def test_the_report_leads_with_the_verdict_and_shows_evidence_and_promql():
    r = readings(error_ratio=0.5, errors_by_reason={"decode": 30.0})
    result = dx.Diagnosis(at=1_800_000_000.0, since_s=60, baseline_s=600, readings=r, hypotheses=dx.hypotheses(r),
                          ruled_out=dx.ruled_out(r), firing=[{"alertname": "SightlineAvailabilityBudgetBurn",
                                                              "severity": "critical"}], timeline=[])
    text = dx.render_markdown(result)
    assert text.splitlines()[0].startswith("<!-- Generated by `sightline diagnose`")
    assert "**Verdict: most likely cause: Requests fail" in text
    assert "| SightlineAvailabilityBudgetBurn | critical |" in text
    assert "nv_inference_request_failure" in text and "## Immediate mitigation" in text
    assert text == dx.render_markdown(result)  # the same diagnosis renders the same report
    healthy = dx.Diagnosis(1_800_000_000.0, 60, 600, readings(), [], dx.ruled_out(readings()), [], [])
    assert "**Verdict: healthy" in dx.render_markdown(healthy)


def test_durations_and_windows_are_checked():
    assert dx.parse_duration("30m") == 1800 and dx.parse_duration("2h") == 7200 and dx.parse_duration("45") == 45
    with pytest.raises(ValueError, match="not a duration"):
        dx.parse_duration("soon")
    with pytest.raises(ValueError, match="must be longer than --since"):
        dx.read_signals(None, since_s=600, baseline_s=300)


def test_the_camera_hypothesis_names_a_stopped_camera_and_a_stuttering_one_and_ignores_other_signals():
    stopped = dx.hypotheses(readings(camera_fps={"cam-1": 10.0, "cam-2": 10.0, "cam-3": 2.5},
                                     camera_fps_last={"cam-1": 10.0, "cam-2": 10.0, "cam-3": 0.0}))[0]
    assert stopped.key == "camera-drop" and "cam-3 stopped sending" in stopped.title and "cam-1" not in stopped.title
    stutter = dx.hypotheses(readings(camera_fps={"cam-1": 10.0, "cam-2": 4.1, "cam-3": 10.0},
                                     camera_fps_last={"cam-1": 10.0, "cam-2": 4.0, "cam-3": 10.0},
                                     camera_gaps={"cam-1": 0.0, "cam-2": 0.6, "cam-3": 0.0}))[0]
    assert stutter.key == "camera-drop" and "cam-2 stutters" in stutter.title
    assert any("60% of its numbered frames" in e.text for e in stutter.evidence)
    # fewer frames by choice (a lower FPS everywhere, no gaps) is not a camera fault of one stream
    slower = dx.hypotheses(readings(camera_fps={"cam-1": 8.0, "cam-2": 8.0, "cam-3": 8.0}))
    assert not [h for h in slower if h.key == "camera-drop"]
    # a camera that was already silent in the baseline is not what changed
    r = readings(camera_fps={"cam-1": 10.0, "cam-2": 10.0, "cam-3": 0.0})
    r["camera_fps"].base["cam-3"] = 0.0
    assert not [h for h in dx.hypotheses(r) if h.key == "camera-drop"]


def test_every_camera_stopping_at_once_is_blamed_on_the_shared_path_not_the_cameras():
    ranked = dx.hypotheses(readings(rate=0.0, model_rate=0.0, camera_fps={"cam-1": 0.0, "cam-2": 0.0, "cam-3": 0.0},
                                    camera_fps_last={"cam-1": 0.0, "cam-2": 0.0, "cam-3": 0.0}))
    assert ranked[0].key == "ingest" and "Every expected camera" in ranked[0].title
    assert not [h for h in ranked if h.key == "camera-drop"]
