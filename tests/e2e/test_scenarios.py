"""Each incident, for real, on the time-compressed local stack.

One fresh stack per scenario (demo profile, SLO windows and hand-written alert timings
compressed 60x). Simulated cameras run a warm-up and a baseline, then the fault goes live:
a server-side switch (batcher, leak) or a change in what the cameras send. The test waits
for the scenario's alert, runs ``sightline diagnose`` over the fault's window while the
cameras keep sending, and checks that the expected cause ranks first and that nothing
unrelated paged. A healthy run pages nothing and is diagnosed healthy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from sightline.incident import EXPECTED, fps_for, render_camera_frames, run_incident
from sightline.stack import MONITOR_TOKEN_FILE, LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# (cameras, fps): each scenario at the rate `sightline demo` uses for it (sightline.incident.fps_for).
CAMERAS = {name: (4, fps_for(name)) for name in EXPECTED}


@pytest.fixture()
def demo_stack(scaled_stack_options, monkeypatch, request):
    monkeypatch.setenv("SIGHTLINE_TAP_RATE", "0.5")  # drift windows fill within the compressed minutes
    monkeypatch.setenv("SIGHTLINE_MONITOR_DRIFT_EVERY_S", "2")
    scaled_stack_options.triton.demo_faults = True
    scenario = request.node.callspec.params.get("scenario") if hasattr(request.node, "callspec") else None
    render_camera_frames(scenario, *CAMERAS.get(scenario, (4, 10.0)))  # before the server starts
    with LocalStack(scaled_stack_options) as stack:
        yield stack, scaled_stack_options


def _run(demo_stack, scenario, tmp_path, **kwargs):
    stack, options = demo_stack
    events = []
    cameras, fps = CAMERAS.get(scenario, (4, 10.0))
    run = run_incident(stack.triton.grpc_url, stack.triton.http_url, f"http://127.0.0.1:{options.prometheus_port}",
                       f"http://127.0.0.1:{options.pager_port}", scenario, cameras=cameras, fps=fps,
                       report_dir=tmp_path / "incidents", on_event=events.append, **kwargs)
    record = {"scenario": scenario or "healthy", "first_firing_s": {k: run.fired_after_s(k) for k in run.first_firing},
              "fired_before_fault": run.fired_before_fault,
              "pages": run.pages, "pages_before_fault": run.pages_before_fault, "diagnosis": run.diagnosis.summary(),
              "ranked": [(h.key, round(h.score, 2)) for h in run.diagnosis.hypotheses]}
    if os.environ.get("SIGHTLINE_SCENARIO_LOG"):  # for the closing table: one JSON line per scenario
        with open(os.environ["SIGHTLINE_SCENARIO_LOG"], "a") as log:
            log.write(json.dumps(record) + "\n")
    return run, record, events


def test_healthy_cameras_page_nothing_and_are_diagnosed_healthy(demo_stack, tmp_path):
    run, record, events = _run(demo_stack, None, tmp_path, timeout_s=75)
    assert run.pages == [], (record, events)
    # 2.5 hours of SLO time (bench/healthy_day.py runs a whole day): no page and no ticket
    assert run.healthy_alerts() == {}, (record, events)
    # four cameras at their expected 10 frames/s: no camera is silent and none loses frames
    assert not [name for name in run.first_firing if name.startswith("SightlineCamera")], (record, events)
    assert run.diagnosis.healthy, (record, run.report_path.read_text())
    assert "**Verdict: healthy" in run.report_path.read_text()
    assert run.load is not None and run.load.errors == {} and run.load.dropped == 0


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_each_incident_fires_its_alert_and_diagnose_ranks_its_cause_first(demo_stack, tmp_path, scenario):
    expected = EXPECTED[scenario]
    run, record, events = _run(demo_stack, scenario, tmp_path)
    assert run.fault_at is not None, events
    assert run.fired_after_s(expected.alert) is not None, (record, events)  # fired, and only after the fault
    assert run.diagnosis.top is not None and run.diagnosis.top.key == expected.cause, (record, run.report_path.read_text())
    unrelated = set(run.pages) - set(expected.related_pages) - {expected.alert}
    assert not unrelated and not run.pages_before_fault, (record, events)
    assert run.healthy_alerts() == {}, (record, events)  # the healthy baseline before the fault fired nothing
    report = run.report_path.read_text()
    assert "## Most likely root cause" in report and "## Alert to add" in report
    assert (run.report_path.parent / f"{run.report_path.stem}.png").stat().st_size > 10_000
    if scenario.startswith("camera-"):
        assert "cam-4" in run.diagnosis.top.title and "cam-1" not in run.diagnosis.top.title, run.diagnosis.top.title
    if scenario == "lowlight":  # drift fires now: refreshing the reference must refuse, unless forced
        _rebaseline_refuses_while_drift_fires(demo_stack[1])


def _rebaseline(options, *extra):
    command = [sys.executable, "-m", "sightline.cli", "drift", "rebaseline", "--window", "10m", "--min-records", "50",
               "--monitor", f"http://127.0.0.1:{options.monitor_metrics_port}",
               "--prometheus", f"http://127.0.0.1:{options.prometheus_port}",
               "--token-file", str(options.triton.state_dir / MONITOR_TOKEN_FILE), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _reference_version(options) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{options.monitor_metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("sightline_drift_reference_info{"))
    return line.split('version="')[1].split('"')[0]


def _rebaseline_refuses_while_drift_fires(options):
    before = _reference_version(options)
    refused = _rebaseline(options, "--reason", "new cameras")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "SightlineEmbeddingDrift" in refused.stdout + refused.stderr and "--force" in refused.stdout + refused.stderr
    assert _reference_version(options) == before
    forced = _rebaseline(options, "--force", "--reason", "accepted: cameras re-aimed")
    assert forced.returncode == 0, (forced.stdout, forced.stderr)
    assert _reference_version(options).startswith("rb-")
    log = (options.triton.state_dir / "monitor.log").read_text()
    assert "drift reference refresh refused" in log and "drift reference rebuilt" in log
