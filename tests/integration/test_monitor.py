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
    audit_dir = tmp_path_factory.mktemp("audit")
    monitor = Monitor(MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, drift_every_s=1.0,
                                    drift_window=200, drift_min_window=50, audit_dir=audit_dir)).start()
    options = ServerOptions(
        model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=tmp_path_factory.mktemp("traced"),
        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), ready_timeout_s=180,
        trace_url=f"127.0.0.1:{monitor.otlp_port}/v1/traces", trace_rate=1,
        env={"SIGHTLINE_TAP_ADDRESS": f"127.0.0.1:{monitor.tap.port}", "SIGHTLINE_TAP_RATE": "1.0",
             "SIGHTLINE_AUDIT_RATE": "1.0",
             # one a minute per instance (the committed 0.25 would make the refill test wait 4 min)
             "SIGHTLINE_AUDIT_PER_MINUTE": "1"},
    )
    with TritonServer(options) as server:
        yield monitor, server
    monitor.stop()


def monitor_url(monitor: Monitor) -> str:
    return f"http://127.0.0.1:{monitor.metrics_port}/metrics"


def test_every_traced_request_lands_in_the_end_to_end_histogram_with_its_stages(traced):
    monitor, server = traced
    key = f'sightline_traced_request_duration_seconds_count{{model="{modelspec.ENSEMBLE_NAME}",version="1"}}'
    before = samples(monitor_url(monitor)).get(key, 0.0)
    frames = [generate_scene(seed=8_000_000 + i).image for i in range(24)]
    with DetectorClient(server.grpc_url) as client:
        results = client.infer_many(frames, concurrency=8)
    assert not [r for r in results if isinstance(r, InferenceError)]
    assert wait_for(lambda: samples(monitor_url(monitor)).get(key, 0.0) - before == len(frames))
    stages = {m for m in re.findall(r'sightline_traced_stage_duration_seconds_count\{[^}]*stage="([^"]+)"',
                                    urllib.request.urlopen(monitor_url(monitor)).read().decode())}
    assert stages == set(STEPS)


def test_recovered_batch_sizes_match_tritons_execution_count(traced):
    monitor, server = traced
    frames = [generate_scene(seed=8_100_000 + i).image for i in range(48)]

    def executions() -> float:
        return samples(server.metrics_url)[f'nv_inference_exec_count{{model="{modelspec.MODEL_NAME}",version="1"}}']

    batch_key = (f'sightline_traced_stage_batch_size_count{{model="{modelspec.MODEL_NAME}",'
                 f'stage="{modelspec.MODEL_NAME}",version="1"}}')
    time.sleep(3)  # let earlier batch groups close
    exec_before, groups_before = executions(), samples(monitor_url(monitor)).get(batch_key, 0.0)
    sum_before_holder = [samples(monitor_url(monitor)).get(batch_key.replace("_count{", "_sum{"), 0.0)]
    with DetectorClient(server.grpc_url) as client:
        client.infer_many(frames, concurrency=16)
    sum_key = batch_key.replace("_count{", "_sum{")
    sum_before = sum_before_holder[0]
    # First every request must be accounted for (all spans arrived and their groups closed) ...
    assert wait_for(lambda: samples(monitor_url(monitor)).get(sum_key, 0.0) - sum_before == len(frames), 30), (
        f"batch sizes sum to {samples(monitor_url(monitor)).get(sum_key, 0.0) - sum_before}, not {len(frames)}")
    # ... then the number of recovered executions is Triton's own execution count, read
    # now that its statistics have settled too.
    exec_delta = executions() - exec_before
    assert exec_delta < len(frames)  # Triton really batched
    groups = samples(monitor_url(monitor)).get(batch_key, 0.0) - groups_before
    assert groups == exec_delta, f"{groups} recovered executions, Triton counted {exec_delta}"


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


def median_latency(client: DetectorClient, frames: list) -> float:
    latencies = sorted(client.infer(frame).latency_s for frame in frames)
    return latencies[len(latencies) // 2]


def test_a_dead_sidecar_costs_nothing_and_a_restarted_one_resumes(tmp_path):
    otlp_port, metrics_port, tap_port = free_port(), free_port(), free_port()
    options = ServerOptions(
        model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=tmp_path / "state",
        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), ready_timeout_s=180,
        trace_url=f"127.0.0.1:{otlp_port}/v1/traces", trace_rate=1,
        env={"SIGHTLINE_TAP_ADDRESS": f"127.0.0.1:{tap_port}", "SIGHTLINE_TAP_RATE": "1.0"},
    )
    frames = [generate_scene(seed=8_400_000 + i).image for i in range(30)]
    with TritonServer(options) as server, DetectorClient(server.grpc_url) as client:
        median_latency(client, frames[:5])  # warm-up
        dead = median_latency(client, frames)  # nothing listens for spans or taps
        config = MonitorConfig(otlp_port=otlp_port, metrics_port=metrics_port, tap_port=tap_port,
                               drift_every_s=1.0, audit_dir=tmp_path / "audit")
        with Monitor(config) as monitor:
            alive = median_latency(client, frames)
            key = f'sightline_traced_request_duration_seconds_count{{model="{modelspec.ENSEMBLE_NAME}",version="1"}}'
            assert wait_for(lambda: samples(monitor_url(monitor)).get(key, 0.0) >= len(frames) - 2, 20)
            assert wait_for(lambda: samples(monitor_url(monitor)).get("sightline_tap_received_total", 0.0) >= len(frames))
        assert client.is_ready()
    assert dead <= alive * 1.5 + 0.005, f"median latency {dead * 1000:.1f} ms with the sidecar down vs {alive * 1000:.1f} ms up"


def test_audit_frames_arrive_redacted_downscaled_rate_limited_and_counted(traced):
    monitor, server = traced
    stored_key = "sightline_audit_frames_stored_total"

    def triton_sent() -> float:
        return sum(v for k, v in samples(server.metrics_url).items()
                   if k.startswith("sightline_audit_frames_sampled_total") and 'outcome="sent"' in k)

    sent_before, stored_before = triton_sent(), samples(monitor_url(monitor)).get(stored_key, 0.0)
    frames = [generate_scene(seed=8_500_000 + i, conditions=Conditions(width=1280, height=720)).image for i in range(20)]
    with DetectorClient(server.grpc_url) as client:
        client.infer_many(frames, camera_ids=["cam-2"] * len(frames), concurrency=4)  # all sampled at once
        burst = triton_sent() - sent_before
        # The module's earlier tests may have emptied the buckets, which refill at one frame a
        # minute per instance (audit_per_minute): send one request a second until one is sent.
        for i in range(75):
            if triton_sent() > sent_before:
                break
            time.sleep(1.0)
            client.infer(frames[i % len(frames)], camera_id="cam-2")
    # Each preprocess instance (2) has its own bucket: a burst of 2 each, plus refill.
    assert burst <= 5, f"{burst} audit frames from a burst of 20 sampled requests: no rate limit"
    assert wait_for(lambda: samples(monitor_url(monitor)).get(stored_key, 0.0) > stored_before)
    # Triton's step metrics are flushed from the stub once a second
    def counts() -> tuple[float, float]:
        return triton_sent() - sent_before, samples(monitor_url(monitor))[stored_key] - stored_before

    assert wait_for(lambda: counts()[0] == counts()[1] >= 1, 10), counts()
    for jpeg in monitor.audit.directory.glob("*.jpg"):
        import cv2
        assert cv2.imread(str(jpeg)).shape[1] <= 320
        assert jpeg.with_suffix(".json").exists()


def test_model_version_events_come_through_tritons_restricted_repository_api(tmp_path, caplog):
    """The cluster's Triton restricts the repository index to the admin token (deployment.yaml);
    the monitor with the token sees the served versions, one without it says why it sees none."""
    import logging

    token = "integration-admin-token"
    options = ServerOptions(
        model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=tmp_path / "state",
        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), ready_timeout_s=180,
        extra_args=[f"--http-restricted-api=model-repository,shared-memory,logging,trace:admin-token={token}"],
    )
    with TritonServer(options) as server:
        def monitor(**token_config) -> Monitor:
            return Monitor(MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                                         watch_processes=False, triton_url=server.http_url, **token_config))

        allowed = monitor(triton_admin_token=token)
        allowed.poller.poll_once()
        ready = allowed.registry.get_sample_value("sightline_model_ready", {"model": modelspec.ENSEMBLE_NAME, "version": "1"})
        assert ready == 1.0
        assert allowed.registry.get_sample_value("sightline_model_index_errors_total") == 0.0
        refused = monitor()
        with caplog.at_level(logging.INFO, logger="sightline.monitor"):
            refused.poller.poll_once()
            refused.poller.poll_once()
        said = [r.getMessage() for r in caplog.records if "refuses the repository index" in r.getMessage()]
        assert len(said) == 1 and ("HTTP 403" in said[0] or "HTTP 401" in said[0]), said
        assert refused.registry.get_sample_value("sightline_model_index_errors_total") == 2.0
        assert refused.registry.get_sample_value("sightline_model_ready", {"model": modelspec.ENSEMBLE_NAME,
                                                                           "version": "1"}) is None
