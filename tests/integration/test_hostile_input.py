"""Hostile input against the real Triton server: lying headers, extreme geometry, garbage
parameters and fuzzed frames, sent while good requests share their dynamic batches.

Every hostile request gets its own result or its own INVALID_ARG naming a reason; every good
request is served; the server stays live. See docs/hostile-input.md.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hostile_frames import (
    GOOD,
    GOOD_PER_ROUND,
    REQUESTS,
    Tally,
    fuzz_round,
    hidden_frame_jpeg,
    many_scans_jpeg,
    narrow_jpeg,
    narrow_png,
    refused_reason,
    send,
)
from hypothesis import HealthCheck, given, settings
from tritonclient.utils import InferenceServerException

from sightline import modelspec

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name, frame, reason", [
    ("a 16000x16000 frame behind a stuffed FF 00 and a 1x1 decoy", hidden_frame_jpeg(16000, 16000), "too_many_pixels"),
    ("a 1x8192 JPEG", narrow_jpeg(1, 8192), "extreme_aspect_ratio"),
    ("a 1x1 000 000 PNG", narrow_png(1, 1_000_000), "extreme_aspect_ratio"),
    ("a 2048x2048 JPEG of 2006 scans", many_scans_jpeg(2048, 2000), "too_many_scans"),
])
def test_a_small_hostile_frame_is_refused_by_name_in_a_blink(triton, name, frame, reason):
    started = time.perf_counter()
    outcome = send(triton.grpc_url, [frame], {"camera_id": "cam-1"})
    elapsed = time.perf_counter() - started
    assert refused_reason(outcome) == reason, name
    assert elapsed < 2.0, f"{name} took {elapsed:.1f} s to refuse"
    assert len(frame) < 50_000


def test_a_request_with_a_401_digit_capture_time_fails_alone_while_its_batch_is_served(triton):
    hostile = {"camera_id": "cam-2", "capture_time_ms": "9" * 401}
    jobs = []
    for round_ in range(4):
        jobs += [([GOOD], {"camera_id": "cam-1", "frame_seq": round_ * 16 + i}) for i in range(15)]
        jobs.append(([GOOD], hostile))
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda job: send(triton.grpc_url, *job), jobs))
    for (_frames, params), outcome in zip(jobs, outcomes):
        if params is hostile:
            assert refused_reason(outcome) == "bad_parameter"
            assert "capture_time_ms" in outcome[1]
        else:
            assert outcome == ("ok", ""), f"a good request failed beside a hostile one: {outcome}"


FUZZ_ROUNDS = 1500  # about two minutes on two cores
tally = Tally()


@settings(max_examples=FUZZ_ROUNDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(REQUESTS)
def test_fuzzed_requests_never_fail_their_batch_mates_or_the_server(triton, hostile):
    fuzz_round(triton.grpc_url, hostile, tally)


def test_the_server_is_live_and_serving_after_the_fuzz(triton):
    client = grpcclient.InferenceServerClient(url=triton.grpc_url)
    try:
        assert client.is_server_live() and client.is_model_ready(modelspec.ENSEMBLE_NAME)
    finally:
        client.close()
    assert send(triton.grpc_url, [GOOD], {"camera_id": "cam-1"}) == ("ok", "")
    print(f"\nhostile-input fuzz: {tally}")
    if tally.rounds:
        assert tally.good == tally.rounds * GOOD_PER_ROUND


def send_postprocess(url: str, letterbox_scale: float, params: dict) -> tuple[str, str]:
    """One frame straight to the postprocess step, as a client that skips the ensemble would."""
    rows = 16
    predictions = np.zeros((1, rows, 4 + modelspec.NUM_CLASSES), np.float32)
    predictions[0, 0, :5] = [10, 10, 60, 60, 0.9]
    tensors = {
        "predictions": predictions,
        "LETTERBOX": np.array([[letterbox_scale, 0, 0, 640, 480]], np.float32),
        "QUALITY": np.zeros((1, 7), np.float32),
        "embedding": np.zeros((1, modelspec.EMBEDDING_DIM), np.float32),
    }
    client = grpcclient.InferenceServerClient(url=url)
    try:
        inputs = []
        for name, value in tensors.items():
            tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        response = client.infer(modelspec.POSTPROCESS_NAME, inputs, parameters=params, client_timeout=60)
        return ("ok", "") if response.as_numpy("DETECTIONS").shape[0] == 1 else ("wrong_rows", "")
    except InferenceServerException as exc:
        return str(exc.status()), exc.message() or str(exc)
    finally:
        client.close()


def test_postprocess_refuses_a_hostile_request_alone_while_its_batch_is_served(triton):
    """Postprocess called directly: garbage is refused by name (it served a 401-digit frame_seq
    and boxes divided by a zero scale), and each refusal stays its own: the ensemble's
    requests sharing its batches are served."""
    jobs = []
    for round_ in range(3):
        jobs += [("ensemble", 1.0, {"camera_id": "cam-1"}) for _ in range(8)]
        jobs += [("direct", 1.0, {"camera_id": "cam-3", "frame_seq": round_}),
                 ("direct", 1.0, {"camera_id": "cam-3", "frame_seq": "9" * 401}),
                 ("direct", 0.0, {"camera_id": "cam-3"})]
    jobs = jobs[::2] + jobs[1::2]  # hostile ones in the middle of the traffic

    def one(job):
        kind, scale, params = job
        return send(triton.grpc_url, [GOOD], params) if kind == "ensemble" else send_postprocess(triton.grpc_url, scale, params)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(one, jobs))
    for (kind, scale, params), outcome in zip(jobs, outcomes):
        if scale == 0.0:
            assert refused_reason(outcome) == "bad_letterbox"
        elif params.get("frame_seq") == "9" * 401:
            assert refused_reason(outcome) == "bad_parameter" and "frame_seq" in outcome[1]
        else:
            assert outcome == ("ok", ""), f"a good {kind} request failed beside hostile ones: {outcome}"
