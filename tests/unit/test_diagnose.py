"""The diagnose rules on hand-made readings: each incident's signature ranks its cause first."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest

from sightline import diagnose as dx
from sightline.boards_cli import Prometheus

HEALTHY = {
    "rate": 60.0, "model_rate": 60.0, "error_ratio": 0.0, "errors_by_reason": {}, "p95": 0.030,
    "stage_p95": {"preprocess": 0.012, "detector_model": 0.008, "postprocess": 0.003},
    "queue_wait": {"preprocess": 0.002, "detector_model": 0.002, "postprocess": 0.001},
    "batch": 1.5, "cpu": {"tritonserver": 0.2, "stub:preprocess": 0.6}, "gpu": None, "pixels": 307_200.0,
    "brightness": {"cam-1": 0.45, "cam-2": 0.44}, "sharpness": {"cam-1": 300.0, "cam-2": 310.0}, "confidence": 0.9,
    # distance ratio / calibrated limit per camera (1.0 / 1.6), and the limits the monitor exports
    "drift": {"all": 0.625, "cam-1": 0.625, "cam-2": 0.625}, "drift_limit": {"all": 1.6, "cam-1": 1.6, "cam-2": 1.6},
    "rss_slope": {"stub:postprocess": 100.0, "tritonserver": 0.0}, "switches": 0.0,
    "camera_fps": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}, "camera_fps_last": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    "camera_expected": {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    "camera_gaps": {"cam-1": 0.0, "cam-2": 0.0, "cam-3": 0.0},
    "failures": 0.0, "step_failures": {}, "refused_by_camera": {}, "camera_refused": {},
    "monitor_up": {"monitor:9102": 1.0},
}


def readings(since_s=60.0, **now_changes):
    """Baseline = HEALTHY; now = HEALTHY with the given changes, over a 'now' window of since_s."""
    out = {}
    for signal in dx.SIGNALS:
        def as_dict(value):
            if value is None:
                return {}
            return dict(value) if isinstance(value, dict) else {"": float(value)}
        base = as_dict(HEALTHY[signal.key])
        now = as_dict(now_changes.get(signal.key, HEALTHY[signal.key]))
        if signal.key == "failures" and "failures" not in now_changes:  # the failed share of the request rate
            rate = now_changes.get("rate", HEALTHY["rate"])
            now = as_dict(now_changes.get("error_ratio", HEALTHY["error_ratio"]) * rate)
        out[signal.key] = dx.Reading(signal, now, base, signal.over(since_s), signal.over(600), since_s)
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
    ("lowlight", {"drift": {"all": 1.3, "cam-1": 0.625, "cam-2": 1.625}, "brightness": {"cam-1": 0.45, "cam-2": 0.08}, "sharpness": {"cam-1": 300.0, "cam-2": 40.0},
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
    if name in ("batcher", "saturation"):  # batches shrank or queues grew: the advisor is the next step
        assert "sightline advise batching --target-p95" in top.fix


def test_the_lowlight_hypothesis_names_the_dark_camera_and_the_leak_names_the_process():
    lowlight = dx.hypotheses(readings(brightness={"cam-1": 0.45, "cam-2": 0.1},
                                      drift={"all": 1.25, "cam-1": 0.625, "cam-2": 1.25}))[0]
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


def test_a_reload_that_steps_memory_up_a_few_mb_is_not_a_leak_however_steep_over_a_short_window():
    # measured: tritonserver +2.3 MB in the 29 s after the batcher fault reloaded detector_model
    # (78 KiB/s, eleven times the leak floor), with batches of one at unchanged traffic
    step = {"stub:postprocess": 100.0, "tritonserver": 78 * 1024.0}
    ranked = dx.hypotheses(readings(since_s=29.0, rss_slope=step, batch=1.0))
    assert [h.key for h in ranked] == ["batcher"], [(h.key, h.score) for h in ranked]
    # too little growth to name a leak is not enough to rule one out either (a slow leak in a short window)
    assert not any("memory leak" in text for text in dx.ruled_out(readings(since_s=29.0, rss_slope=step)))
    # the same slope held over diagnose's default 30 minutes adds 140 MB: a leak
    leak = dx.hypotheses(readings(since_s=1800.0, rss_slope=step))
    assert [h.key for h in leak] == ["leak"] and "tritonserver" in leak[0].title
    # a 50 MB/hour leak is named from a 10-minute window on
    slow = {"stub:postprocess": 50e6 / 3600, "tritonserver": 0.0}
    assert [h.key for h in dx.hypotheses(readings(since_s=600.0, rss_slope=slow))] == ["leak"]
    # and the demo's leak (64 KiB a request at 60 req/s) is one even over 29 s
    assert dx.hypotheses(readings(since_s=29.0, rss_slope={"stub:postprocess": 3.8e6}))[0].key == "leak"


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


# -- failures: what share the input explains, and which camera (findings 13 and 18) -----------------


def with_baseline(r, **base_changes):
    """Set baseline values on readings (the helper's baseline is HEALTHY)."""
    for key, value in base_changes.items():
        r[key].base = dict(value) if isinstance(value, dict) else {"": float(value)}
    return r


def test_failures_without_a_sightline_reason_point_at_the_server_not_at_a_steady_trickle_of_bad_frames():
    # a camera has sent a few truncated frames all along; now 30 % of requests fail with no
    # Sightline reason: detector_model's executions fail (a crashed stub, a failed batch)
    r = readings(error_ratio=0.30, failures=18.0, errors_by_reason={"truncated": 0.3},
                 step_failures={"detector_model": 17.7}, refused_by_camera={"cam-2": 0.3}, camera_refused={"cam-2": 0.015})
    with_baseline(r, error_ratio=0.005, failures=0.3, errors_by_reason={"truncated": 0.3},
                  step_failures={"detector_model": 0.0},
                  refused_by_camera={"cam-2": 0.3}, camera_refused={"cam-2": 0.015})
    ranked = dx.hypotheses(r)
    assert [h.key for h in ranked] == ["server-fault"], [(h.key, h.title) for h in ranked]
    top = ranked[0]
    assert "inside the server" in top.title and "no Sightline reason" in top.title and "detector_model" in top.title
    assert "corrupt" not in top.title + top.cause and "truncated" not in top.title
    for what in ("stub", "failed batch", "model"):
        assert what in top.cause + top.mitigation
    assert "Stub process" in top.mitigation and "detector_model" in top.mitigation  # what to look at
    assert any("detector_model failures" in e.text for e in top.evidence)


def test_bad_input_is_blamed_only_for_the_share_of_the_rise_its_reasons_explain():
    # truncated frames rise from 0.3 to 6.3 req/s while 12 more req/s fail with no reason
    r = readings(error_ratio=0.31, failures=18.6, errors_by_reason={"truncated": 6.3},
                 step_failures={"detector_model": 12.0})
    with_baseline(r, error_ratio=0.005, failures=0.3, errors_by_reason={"truncated": 0.3})
    ranked = dx.hypotheses(r)
    assert [h.key for h in ranked] == ["server-fault", "outage"], [(h.key, h.title) for h in ranked]
    server, bad_input = ranked
    assert "67% of the rise" in server.title and "(in detector_model)" in server.title
    assert "`truncated`" in bad_input.title and "33% of the rise" in bad_input.title
    assert any("reason `truncated` 0.3 req/s -> 6.3 req/s" in e.text for e in bad_input.evidence)


def test_only_the_reasons_that_rose_take_the_blame():
    # a steady trickle of truncated frames and a new burst of frames that are not images
    r = readings(error_ratio=0.1, failures=6.0, errors_by_reason={"truncated": 0.3, "not_an_image": 5.7})
    with_baseline(r, error_ratio=0.005, failures=0.3, errors_by_reason={"truncated": 0.3})
    top = dx.hypotheses(r)[0]
    assert top.key == "outage" and "`not_an_image`" in top.title and "truncated" not in top.title
    assert "100% of the rise" in top.title


def test_internal_failures_are_the_servers():
    # a step that raises on a valid frame answers with an error: Triton counts no failure in the step
    r = readings(error_ratio=0.2, errors_by_reason={"internal": 12.0})
    ranked = dx.hypotheses(r)
    assert [h.key for h in ranked] == ["server-fault"] and "reason `internal`" in ranked[0].title


def test_the_camera_whose_frames_are_refused_is_named():
    r = readings(error_ratio=0.083, errors_by_reason={"truncated": 5.0}, refused_by_camera={"cam-3": 5.0},
                 camera_refused={"cam-3": 0.5})
    top = dx.hypotheses(r)[0]
    assert top.key == "outage" and top.title.endswith(", from cam-3"), top.title
    assert "cam-3" in top.mitigation and "Find the cameras" not in top.mitigation
    assert "cam-1" not in top.title + top.mitigation and "cam-2" not in top.title + top.mitigation
    assert any(e.series == "cam-3" and e.reading.signal.key == "camera_refused" for e in top.evidence)
    # two cameras: both named, the one that adds the most refusals first
    r = readings(error_ratio=0.1, errors_by_reason={"decode_failed": 6.0}, refused_by_camera={"cam-1": 1.5, "cam-3": 4.5},
                 camera_refused={"cam-1": 0.15, "cam-3": 0.45})
    assert dx.hypotheses(r)[0].title.endswith("from cam-3, cam-1")
    # a camera that always had a few refused frames is not named for a burst elsewhere
    r = readings(error_ratio=0.1, errors_by_reason={"truncated": 6.0}, refused_by_camera={"cam-1": 0.6, "cam-2": 5.4},
                 camera_refused={"cam-1": 0.06, "cam-2": 0.54})
    with_baseline(r, refused_by_camera={"cam-1": 0.6}, camera_refused={"cam-1": 0.06})
    assert dx.hypotheses(r)[0].title.endswith("from cam-2")


def test_every_camera_refused_at_once_points_at_the_shared_gateway():
    r = readings(error_ratio=0.3, errors_by_reason={"truncated": 18.0},
                 refused_by_camera={"cam-1": 6.0, "cam-2": 6.0, "cam-3": 6.0},
                 camera_refused={"cam-1": 0.3, "cam-2": 0.3, "cam-3": 0.3})
    top = dx.hypotheses(r)[0]
    assert top.key == "outage" and top.title.endswith(", from every camera") and "gateway" in top.mitigation


# -- through Prometheus's HTTP API: a fake server that answers each signal's query per window -------

SINCE, BASELINE, AT = 300.0, 1200.0, 1_800_000_000.0


class FakePrometheus(http.server.ThreadingHTTPServer):
    """/api/v1/query answers each signal's PromQL with the scenario's value for that window
    (now: the last SINCE seconds, with their halves; baseline: the BASELINE - SINCE before),
    plus `ALERTS{alertstate="firing"}`; everything else, and every range query, is empty."""

    def __init__(self, now: dict, base: dict, firing: list = ()) -> None:
        self.answers = {'ALERTS{alertstate="firing"}': [{"metric": labels, "value": [AT, "1"]} for labels in firing]}
        for signal in dx.SIGNALS:
            for values, windows in ((now, (SINCE, SINCE / 2, SINCE / 4)), (base, (BASELINE - SINCE,))):
                value = values.get(signal.key)
                value = {} if value is None else value if isinstance(value, dict) else {"": value}
                result = [{"metric": {signal.by: k} if signal.by else {}, "value": [AT, repr(float(v))]}
                          for k, v in value.items()]
                for window in windows:
                    self.answers[signal.over(window)] = result
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                result = server.answers.get(query, []) if url.path == "/api/v1/query" else []
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def prometheus(now: dict, base: dict, firing: list = ()):
    server = FakePrometheus(now, base, firing)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Prometheus(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def scenario(**changes) -> dict:
    out = dict(HEALTHY)
    out.update(changes)
    return out


def test_the_fake_prometheus_serves_a_healthy_window_as_healthy():
    with prometheus(scenario(), scenario()) as prom:
        d = dx.diagnose(prom, SINCE, BASELINE, now=AT)
    assert d.healthy and d.blind == [] and d.summary().startswith("healthy")


SIDECAR_DOWN = {"alertname": "SightlineSidecarDown", "severity": "warning", "instance": "10.0.0.7:9102",
                "job": "sightline-monitor"}


@pytest.mark.parametrize("now, firing", [
    # the alert fires: the sidecar has not been scraped for two minutes and its series are gone
    (scenario(monitor_up={"10.0.0.7:9102": 0.0}, drift=None, gpu=None, switches=None),
     [SIDECAR_DOWN]),
    # the scrape target is down, the alert still pending; the drift series still hold old samples
    (scenario(monitor_up={"10.0.0.7:9102": 0.0}), []),
    # the target vanished since the baseline (no `up` series now)
    (scenario(monitor_up={}, drift=None, switches=None), []),
])
def test_a_dead_monitor_is_a_blind_spot_not_a_healthy_window(now, firing):
    with prometheus(now, scenario(monitor_up={"10.0.0.7:9102": 1.0}), firing) as prom:
        d = dx.diagnose(prom, SINCE, BASELINE, now=AT)
    assert not d.healthy and d.hypotheses == []
    assert d.summary().startswith("not healthy, blind") and "monitor sidecar is down" in d.summary()
    text = dx.render_markdown(d)
    assert "Healthy." not in text and "**Verdict: healthy" not in text
    assert "## Blind spots" in text
    blind = " ".join(d.blind)
    for signal in ("drift", "tap records", "spans"):
        assert signal in blind
    # what the monitor provides rules nothing out while it is down
    flat = " ".join(d.ruled_out)
    assert "camera conditions" not in flat and "a deploy" not in flat
    assert "overload" in flat  # Triton's own signals still do (process memory comes from the steps, through Triton)


def test_a_dead_monitor_is_named_beside_a_real_cause():
    now = scenario(monitor_up={"10.0.0.7:9102": 0.0}, error_ratio=0.3, failures=18.0, errors_by_reason={"truncated": 18.0},
                   refused_by_camera={"cam-2": 18.0}, camera_refused={"cam-2": 0.9})
    with prometheus(now, scenario(), [SIDECAR_DOWN]) as prom:
        d = dx.diagnose(prom, SINCE, BASELINE, now=AT)
    assert d.top.key == "outage" and ", from cam-2" in d.top.title and not d.healthy
    assert d.summary().endswith("(blind to drift, tap records and spans: the monitor sidecar is down)")


def test_diagnose_reads_the_failures_and_their_reasons_from_prometheus():
    # finding 13 end to end: a steady trickle of truncated frames, then the preprocess stubs crash
    # (measured on the local Triton: each failed request counts once as a preprocess failure,
    # reason BACKEND; the stubs' refusals never count there)
    base = scenario(error_ratio=0.005, failures=0.3, errors_by_reason={"truncated": 0.3})
    now = scenario(error_ratio=0.3, failures=18.0, errors_by_reason={"truncated": 0.3}, step_failures={"preprocess": 17.7})
    with prometheus(now, base) as prom:
        d = dx.diagnose(prom, SINCE, BASELINE, now=AT)
    assert [h.key for h in d.hypotheses] == ["server-fault"]
    assert "Requests fail inside the server" in d.summary() and "(in preprocess)" in d.summary()


def test_a_failed_share_that_rose_only_because_traffic_fell_is_judged_by_what_fails_now():
    # the same 0.6 req/s of truncated frames (plus noise) while traffic fell from 60 to 12 req/s
    r = readings(rate=12.0, model_rate=12.0, error_ratio=0.051, failures=0.61, errors_by_reason={"truncated": 0.6})
    with_baseline(r, error_ratio=0.01, failures=0.6, errors_by_reason={"truncated": 0.6})
    ranked = [h for h in dx.hypotheses(r) if h.key in ("outage", "server-fault")]
    assert [h.key for h in ranked] == ["outage"] and "98% of them" in ranked[0].title, [h.title for h in ranked]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_failure_rates_count_each_failed_request_once_as_the_availability_sli_does(tmp_path):
    # Triton counts each failed ensemble request twice under reason="OTHER" (measured: 15 refused
    # frames -> 30; 45 requests failed by a crashed preprocess stub -> 90, and 45 on preprocess).
    # Here 60 requests a minute fail (48 of them in a crashed preprocess stub) and 240 are served.
    exprs = {key: dx.BY_KEY[key].over(300) for key in ("failures", "rate", "error_ratio", "step_failures")}
    tests = {
        "rule_files": [], "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'nv_inference_request_failure{model="detector",version="1",reason="OTHER"}', "values": "0+120x20"},
                {"series": 'nv_inference_request_failure{model="detector",version="1",reason="BACKEND"}', "values": "0+0x20"},
                {"series": 'nv_inference_request_success{model="detector",version="1"}', "values": "0+240x20"},
                {"series": 'nv_inference_request_failure{model="preprocess",version="1",reason="BACKEND"}', "values": "0+48x20"},
                {"series": 'nv_inference_request_success{model="preprocess",version="1"}', "values": "0+252x20"},
            ],
            "promql_expr_test": [
                {"expr": exprs["failures"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1.0}]},
                {"expr": exprs["rate"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 5.0}]},
                {"expr": exprs["error_ratio"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 0.2}]},
                {"expr": exprs["step_failures"], "eval_time": "10m",
                 "exp_samples": [{"labels": '{model="preprocess"}', "value": 0.8}]},
            ],
        }],
    }
    promtool_passes(tmp_path, tests)


def promtool_passes(tmp_path, tests: dict) -> None:
    path = tmp_path / "diagnose.test.yaml"
    path.write_text(json.dumps(tests))  # JSON is YAML
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_monitor_up_signal_catches_a_monitor_that_died_inside_the_window(tmp_path):
    expr = dx.BY_KEY["monitor_up"].over(300)
    up = 'up{job="sightline-monitor",instance="10.0.0.7:9102"}'
    other = 'up{job="sightline-monitor",instance="10.0.0.8:9102"}'
    promtool_passes(tmp_path, {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        # one replica's sidecar dies at minute 12 (and stays down), the other's keeps answering
        "input_series": [{"series": up, "values": "1x11 0x8"}, {"series": other, "values": "1x20"}],
        "promql_expr_test": [
            {"expr": expr, "eval_time": "11m", "exp_samples": [{"labels": '{instance="10.0.0.7:9102"}', "value": 1},
                                                               {"labels": '{instance="10.0.0.8:9102"}', "value": 1}]},
            {"expr": expr, "eval_time": "13m", "exp_samples": [{"labels": '{instance="10.0.0.7:9102"}', "value": 0},
                                                               {"labels": '{instance="10.0.0.8:9102"}', "value": 1}]},
        ],
    }]})


# -- drift against each camera's calibrated limit; frame gaps as SightlineCameraFrameGaps counts them ----

RULES_FILE = Path(__file__).resolve().parents[2] / "prometheus" / "rules" / "sightline-operations.yaml"


def test_drift_is_judged_against_each_cameras_calibrated_limit():
    # cam-1's ratio 1.8 is over the old fixed 1.5x but under its calibrated limit 2.3: healthy
    calm = readings(drift={"all": 0.7, "cam-1": 1.8 / 2.3, "cam-2": 0.625},
                    drift_limit={"all": 1.6, "cam-1": 2.3, "cam-2": 1.6})
    assert [h.key for h in dx.hypotheses(calm)] == []
    assert any(text.startswith("camera conditions") for text in dx.ruled_out(calm))
    # cam-2's ratio 1.4 is under the old fixed 1.5x but over its calibrated limit 1.25: drifted
    r = readings(drift={"all": 0.9, "cam-1": 0.625, "cam-2": 1.4 / 1.25},
                 drift_limit={"all": 1.6, "cam-1": 1.6, "cam-2": 1.25})
    ranked = dx.hypotheses(r)
    assert [h.key for h in ranked] == ["lowlight"], [(h.key, h.title) for h in ranked]
    assert "cam-2" in ranked[0].title and "cam-1" not in ranked[0].title
    texts = [e.text for e in ranked[0].evidence if e.reading.signal.key == "drift"]
    assert texts == ["cam-2: embedding distance ratio 1.40, 1.12 x its calibrated limit 1.25 (baseline 0.625 x)"]
    assert not any(text.startswith("camera conditions") for text in dx.ruled_out(r))


def test_a_monitor_without_a_calibrated_limit_is_judged_by_the_fixed_threshold_and_says_so():
    # an older monitor exports no sightline_drift_distance_limit: the query divides by 1.5
    base = scenario(drift={"all": 1.0 / 1.5, "cam-1": 1.0 / 1.5, "cam-2": 1.0 / 1.5}, drift_limit=None)
    now = scenario(drift={"all": 1.2, "cam-1": 1.0 / 1.5, "cam-2": 2.4 / 1.5}, drift_limit=None,
                   brightness={"cam-1": 0.45, "cam-2": 0.1})
    with prometheus(now, base) as prom:
        d = dx.diagnose(prom, SINCE, BASELINE, now=AT)
    assert d.top.key == "lowlight" and "cam-2" in d.top.title and "cam-1" not in d.top.title
    texts = [e.text for e in d.top.evidence if e.reading.signal.key == "drift"]
    assert len(texts) == 2 and texts[0].startswith("cam-2: embedding distance ratio 2.40, 1.6 x the fixed 1.5x threshold")
    assert texts[1].startswith("every camera pooled (all): embedding distance ratio 1.80, 1.2 x the fixed 1.5x")
    assert all("exports no sightline_drift_distance_limit" in t and "old fixed threshold" in t for t in texts)
    assert "sightline_drift_distance_limit" in dx.render_markdown(d)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_drift_signal_divides_each_cameras_ratio_by_its_limit_or_by_the_fixed_threshold(tmp_path):
    ratio, limit = "sightline_drift_distance_ratio", "sightline_drift_distance_limit"
    pod = 'job="sightline-monitor",pod="detector-0"'
    promtool_passes(tmp_path, {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'{ratio}{{{pod},camera="all"}}', "values": "1.2x20"},
            {"series": f'{limit}{{{pod},camera="all"}}', "values": "1.6x20"},
            {"series": f'{ratio}{{{pod},camera="cam-1"}}', "values": "1.8x20"},  # over 1.5, under its limit
            {"series": f'{limit}{{{pod},camera="cam-1"}}', "values": "2.25x20"},
            {"series": f'{ratio}{{{pod},camera="cam-2"}}', "values": "1.4x20"},  # under 1.5, over its limit
            {"series": f'{limit}{{{pod},camera="cam-2"}}', "values": "1.25x20"},
            # an older monitor's pod: a ratio and no limit
            {"series": f'{ratio}{{job="sightline-monitor",pod="detector-1",camera="cam-3"}}', "values": "1.8x20"},
            {"series": f'{ratio}{{{pod},camera="other"}}', "values": "9x20"},  # judged only inside "all"
            {"series": f'{limit}{{{pod},camera="other"}}', "values": "1.6x20"},
        ],
        "promql_expr_test": [
            {"expr": f'round({dx.BY_KEY["drift"].over(300)}, 0.001)', "eval_time": "10m", "exp_samples": [
                {"labels": '{camera="all"}', "value": 0.75}, {"labels": '{camera="cam-1"}', "value": 0.8},
                {"labels": '{camera="cam-2"}', "value": 1.12}, {"labels": '{camera="cam-3"}', "value": 1.2}]},
            {"expr": dx.BY_KEY["drift_limit"].over(300), "eval_time": "10m", "exp_samples": [
                {"labels": '{camera="all"}', "value": 1.6}, {"labels": '{camera="cam-1"}', "value": 2.25},
                {"labels": '{camera="cam-2"}', "value": 1.25}]},
        ],
    }]})


def test_the_camera_gaps_signal_is_the_frame_gaps_rule_over_the_window():
    import yaml

    rules = [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]
    recorded = [rule["expr"] for rule in rules if rule.get("record") == "camera:sightline_camera_frame_gaps:ratio_5m"]
    assert len(recorded) == 1

    def compact(expr: str) -> str:
        return "".join(expr.split())

    assert compact(dx.BY_KEY["camera_gaps"].over(300).replace("[300s]", "[5m]")) == compact(recorded[0])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_camera_gaps_subtract_refused_frames_as_the_frame_gaps_alert_does(tmp_path):
    # cam-1 sends 6 minutes of refused frames (10m-16m); the steps count them when postprocess's
    # sequence moves past them (at 17m), as the operations test of SightlineCameraFrameGaps has it.
    # cam-2 loses a fifth of its numbered frames and has requests refused that carry no sequence.
    expr = dx.BY_KEY["camera_gaps"].over(300)
    sent = [0, 600, 1200, 1800, 2400, 3000, 3600, 4200, 4800, 5400] + [6000] * 7 + [10200 + 600 * i for i in range(24)]
    done = [600 * i for i in range(11)] + [6000] * 6 + [6600 + 600 * i for i in range(24)]
    refused = [0] * 17 + [3600] * 24
    rejected = [0] * 11 + [600 * i for i in range(1, 7)] + [3600] * 24
    series = lambda values: " ".join(str(v) for v in values)  # noqa: E731
    gaps = 'camera:sightline_camera_frame_gaps:ratio_5m'
    promtool_passes(tmp_path, {"rule_files": [str(RULES_FILE)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'sightline_camera_frames_sent_total{camera="cam-1",model="postprocess"}', "values": series(sent)},
            {"series": 'sightline_detections_per_frame_count{camera="cam-1",model="postprocess"}', "values": series(done)},
            {"series": 'sightline_camera_frames_refused_total{camera="cam-1",model="preprocess"}', "values": series(refused)},
            {"series": 'sightline_rejected_requests_total{camera="cam-1",model="preprocess",reason="not_an_image"}',
             "values": series(rejected)},
            {"series": 'sightline_camera_frames_sent_total{camera="cam-2",model="postprocess"}', "values": "0+600x40"},
            {"series": 'sightline_detections_per_frame_count{camera="cam-2",model="postprocess"}', "values": "0+480x40"},
            {"series": 'sightline_rejected_requests_total{camera="cam-2",model="preprocess",reason="decode_failed"}',
             "values": "0+60x40"},
        ],
        "promql_expr_test": [
            *({"expr": f"round({e}, 0.001)", "eval_time": t, "exp_samples": [
                {"labels": '{camera="cam-1"}', "value": 0}, {"labels": '{camera="cam-2"}', "value": 0.2}]}
              for e in (expr, gaps) for t in ("9m", "20m", "30m")),
            # silence is not gaps: no sample for cam-1 while it sends nothing (rule and diagnose alike)
            *({"expr": f"round({e}, 0.001)", "eval_time": "16m", "exp_samples": [
                {"labels": '{camera="cam-2"}', "value": 0.2}]} for e in (expr, gaps)),
        ],
    }]})
