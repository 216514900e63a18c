"""`sightline up` + `sightline infer`: Prometheus shows stage histograms, quality and drift."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from sightline.client import DetectorClient
from sightline.export.scenes import Conditions, generate_scene
from sightline.runtime import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else "sightline up exited"
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never became ready")


def test_prometheus_shows_stage_histograms_quality_and_drift_from_a_running_stack(tmp_path):
    ports = {name: free_port() for name in ("http", "grpc", "metrics", "otlp", "monitor", "prometheus", "tap")}
    command = [sys.executable, "-m", "sightline.cli", "up", "--state-dir", str(tmp_path / "state"),
               "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
               "--metrics-port", str(ports["metrics"]), "--otlp-port", str(ports["otlp"]),
               "--monitor-port", str(ports["monitor"]), "--prometheus-port", str(ports["prometheus"]),
               "--tap-port", str(ports["tap"]), "--alertmanager-port", str(free_port()), "--pager-port", str(free_port())]
    env = {**os.environ, "SIGHTLINE_TAP_RATE": "1.0", "SIGHTLINE_MONITOR_DRIFT_EVERY_S": "1",
           "SIGHTLINE_MONITOR_DRIFT_MIN_WINDOW": "20", "SIGHTLINE_MONITOR_AUDIT_DIR": str(tmp_path / "audit")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    try:
        wait_ready(f"{prometheus}/-/ready", process)
        wait_ready(f"http://127.0.0.1:{ports['http']}/v2/health/ready", process)
        frames = [generate_scene(seed=9_500_000 + i, conditions=Conditions(brightness="night")).image for i in range(30)]
        with DetectorClient(f"127.0.0.1:{ports['grpc']}") as client:
            for frame in frames:
                client.infer(frame, camera_id="cam-4")
        wanted = {
            "stage": 'sum by (stage) (sightline_stage_duration_seconds_count)',
            "quality": 'sightline_frame_brightness_ratio_count{camera="cam-4"}',
            "drift": 'sightline_drift_p_value{camera="cam-4",test="mmd"}',
            "p95": 'histogram_quantile(0.95, sum by (le) (sightline_request_duration_seconds_bucket))',
        }
        deadline = time.monotonic() + 60
        results: dict[str, list] = {}
        while time.monotonic() < deadline:
            results = {key: query(prometheus, expr) for key, expr in wanted.items()}
            if all(results.values()) and len(results["stage"]) == 3:
                break
            time.sleep(2)
        assert {r["metric"]["stage"] for r in results["stage"]} == {"preprocess", "detector_model", "postprocess"}
        assert float(results["quality"][0]["value"][1]) >= len(frames)
        assert float(results["drift"][0]["value"][1]) < 0.01  # night frames against the daylight reference
        assert 0 < float(results["p95"][0]["value"][1]) < 10
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    assert "Prometheus UI" in output
