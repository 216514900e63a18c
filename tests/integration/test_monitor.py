"""The monitor sidecar against the real Triton: spans become histograms, taps become drift."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from sightline import modelspec
from sightline.client import DetectorClient, InferenceError
from sightline.export.scenes import Conditions, generate_scene
from sightline.runtime import DEFAULT_MODEL_REPOSITORY, ServerOptions, TritonServer, free_port
from sightline.sidecars.monitor import Monitor, MonitorConfig

pytestmark = pytest.mark.integration
STEPS = (modelspec.PREPROCESS_NAME, modelspec.MODEL_NAME, modelspec.POSTPROCESS_NAME)


def samples(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+\{[^}]*\}|\S+) (\S+)$", text, re.M)
            if not m.group(1).startswith("#")}


def wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A monitor (drift every second) and a Triton that traces every request to it and taps 100 %."""
    monitor = Monitor(MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, drift_every_s=1.0,
                                    drift_window=200, drift_min_window=50)).start()
    options = ServerOptions(
        model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=tmp_path_factory.mktemp("traced"),
        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), ready_timeout_s=180,
        trace_url=f"127.0.0.1:{monitor.otlp_port}/v1/traces", trace_rate=1,
        env={"SIGHTLINE_TAP_ADDRESS": f"127.0.0.1:{monitor.tap.port}", "SIGHTLINE_TAP_RATE": "1.0"},
    )
    with TritonServer(options) as server:
        yield monitor, server
    monitor.stop()


def monitor_url(monitor: Monitor) -> str:
    return f"http://127.0.0.1:{monitor.metrics_port}/metrics"


def test_every_traced_request_lands_in_the_end_to_end_histogram_with_its_stages(traced):
    monitor, server = traced
    key = f'sightline_request_duration_seconds_count{{model="{modelspec.ENSEMBLE_NAME}",version="1"}}'
    before = samples(monitor_url(monitor)).get(key, 0.0)
    frames = [generate_scene(seed=8_000_000 + i).image for i in range(24)]
    with DetectorClient(server.grpc_url) as client:
        results = client.infer_many(frames, concurrency=8)
    assert not [r for r in results if isinstance(r, InferenceError)]
    assert wait_for(lambda: samples(monitor_url(monitor)).get(key, 0.0) - before == len(frames))
    stages = {m for m in re.findall(r'sightline_stage_duration_seconds_count\{[^}]*stage="([^"]+)"',
                                    urllib.request.urlopen(monitor_url(monitor)).read().decode())}
    assert stages == set(STEPS)


def test_recovered_batch_sizes_match_tritons_execution_count(traced):
    monitor, server = traced
    frames = [generate_scene(seed=8_100_000 + i).image for i in range(48)]

    def executions() -> float:
        return samples(server.metrics_url)[f'nv_inference_exec_count{{model="{modelspec.MODEL_NAME}",version="1"}}']

    batch_key = (f'sightline_stage_batch_size_count{{model="{modelspec.MODEL_NAME}",'
                 f'stage="{modelspec.MODEL_NAME}",version="1"}}')
    time.sleep(3)  # let earlier batch groups close
    exec_before, groups_before = executions(), samples(monitor_url(monitor)).get(batch_key, 0.0)
    with DetectorClient(server.grpc_url) as client:
        client.infer_many(frames, concurrency=16)
    exec_delta = executions() - exec_before
    assert exec_delta < len(frames)  # Triton really batched
    assert wait_for(lambda: samples(monitor_url(monitor)).get(batch_key, 0.0) - groups_before == exec_delta, 30)


def drift_of(monitor: Monitor, camera: str) -> dict[str, float]:
    values = samples(monitor_url(monitor))
    return {
        "p": values.get(f'sightline_drift_p_value{{camera="{camera}",test="mmd"}}', float("nan")),
        "ratio": values.get(f'sightline_drift_distance_ratio{{camera="{camera}"}}', float("nan")),
        "window": values.get(f'sightline_drift_window_size{{camera="{camera}"}}', 0.0),
    }


def test_night_frames_drift_and_daylight_frames_do_not(traced):
    monitor, server = traced
    day = [generate_scene(seed=8_200_000 + i).image for i in range(60)]
    night = [generate_scene(seed=8_300_000 + i, conditions=Conditions(brightness="night")).image for i in range(60)]
    with DetectorClient(server.grpc_url) as client:
        client.infer_many(day, camera_ids=["cam-1"] * len(day), concurrency=8)
        client.infer_many(night, camera_ids=["cam-4"] * len(night), concurrency=8)
    assert wait_for(lambda: drift_of(monitor, "cam-4")["window"] >= 60 and drift_of(monitor, "cam-1")["window"] >= 60, 30)
    time.sleep(2.5)  # one more evaluation over the full windows
    night_drift, day_drift = drift_of(monitor, "cam-4"), drift_of(monitor, "cam-1")
    assert night_drift["p"] < 0.01 and night_drift["ratio"] > 1.5, night_drift
    assert day_drift["p"] > 0.01 and day_drift["ratio"] < 1.5, day_drift
