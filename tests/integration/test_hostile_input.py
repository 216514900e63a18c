"""Hostile input against the real Triton server: lying headers, extreme geometry, garbage
parameters and fuzzed frames, sent while good requests share their dynamic batches.

Every hostile request gets its own result or its own INVALID_ARG naming a reason; every good
request is served; the server stays live. See docs/hostile-input.md.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from corpus import good_jpeg
from hostile_frames import hidden_frame_jpeg, narrow_jpeg, narrow_png, oversized_jpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from sightline import modelspec

pytestmark = pytest.mark.integration

REASON = re.compile(r"\[reason=([a-z_]+)\]")
GOOD = good_jpeg(160, 120, seed=7)


def send(url: str, frames: list, params: dict, timeout_s: float = 60.0) -> tuple[str, str]:
    """("ok", "") when the request was served with one detection list per frame, else
    (gRPC status, message)."""
    client = grpcclient.InferenceServerClient(url=url)
    try:
        payload = np.array([[f] for f in frames], dtype=np.object_)
        tensor = grpcclient.InferInput(modelspec.ENSEMBLE_INPUT, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        response = client.infer(modelspec.ENSEMBLE_NAME, [tensor], parameters=params, client_timeout=timeout_s)
        detections = response.as_numpy(modelspec.ENSEMBLE_DETECTIONS)
        if detections.shape[0] != len(frames):
            return "wrong_rows", f"{detections.shape[0]} detection lists for {len(frames)} frames"
        return "ok", ""
    except InferenceServerException as exc:
        return str(exc.status()), exc.message() or str(exc)
    finally:
        client.close()


def refused_reason(outcome: tuple[str, str]) -> str:
    status, message = outcome
    assert "INVALID_ARGUMENT" in status, f"not an INVALID_ARG refusal: {status} {message[:300]}"
    found = REASON.search(message)
    assert found, f"a refusal without a reason: {message[:300]}"
    return found.group(1)


@pytest.mark.parametrize("name, frame, reason", [
    ("a 16000x16000 frame behind a stuffed FF 00 and a 1x1 decoy", hidden_frame_jpeg(16000, 16000), "too_many_pixels"),
    ("a 1x8192 JPEG", narrow_jpeg(1, 8192), "extreme_aspect_ratio"),
    ("a 1x1 000 000 PNG", narrow_png(1, 1_000_000), "extreme_aspect_ratio"),
])
def test_a_small_hostile_frame_is_refused_by_name_in_a_blink(triton, name, frame, reason):
    started = time.perf_counter()
    outcome = send(triton.grpc_url, [frame], {"camera_id": "cam-1"})
    elapsed = time.perf_counter() - started
    assert refused_reason(outcome) == reason, name
    assert elapsed < 2.0, f"{name} took {elapsed:.1f} s to refuse"
    assert len(frame) < 8000


def test_a_request_with_a_401_digit_capture_time_fails_alone_while_its_batch_is_served(triton):
    hostile = {"camera_id": "cam-2", "capture_time_ms": "9" * 401}
    jobs = []
    for round_ in range(4):
        jobs += [([GOOD], {"camera_id": "cam-1", "frame_seq": round_ * 16 + i}) for i in range(15)]
        jobs.append(([GOOD], hostile))
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda job: send(triton.grpc_url, *job), jobs))
    for (frames, params), outcome in zip(jobs, outcomes):
        if params is hostile:
            assert refused_reason(outcome) == "bad_parameter"
            assert "capture_time_ms" in outcome[1]
        else:
            assert outcome == ("ok", ""), f"a good request failed beside a hostile one: {outcome}"


# --- the fuzz: random, mutated and lying frames with random parameters ---------------------

def _mutate(data: bytes, edits: list) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            out[at] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 7)
        else:  # "ff": a marker byte pair where there was none
            out[at:at] = b"\xff" + bytes([value])
    return bytes(out)


_SMALL_PNG = narrow_png(24, 16)
_BASES = [good_jpeg(64, 48, seed=1), good_jpeg(200, 150, seed=2), _SMALL_PNG, oversized_jpeg(300, 200)]
_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "ff"]), st.integers(0, 1 << 16),
                            st.integers(0, 255)), max_size=4)
_SIDES = st.sampled_from([1, 2, 15, 16, 17, 255, 256, 4095, 4096, 4097, 16000, 65535])

FRAMES = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(lambda tail: b"\xff\xd8" + tail + b"\xff\xd9"),
    st.binary(max_size=300).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),
    st.builds(_mutate, st.sampled_from(_BASES), _EDITS),
    st.builds(oversized_jpeg, _SIDES, _SIDES),
    st.builds(hidden_frame_jpeg, _SIDES, _SIDES),
    st.builds(narrow_png, st.sampled_from([1, 3, 40]), st.sampled_from([1, 64, 700, 20000])),
    st.just(GOOD),
)
_INT64 = st.integers(-(2**63), 2**63 - 1)
PARAM_VALUES = st.one_of(_INT64, st.booleans(), st.text(max_size=80), st.text(alphabet="0123456789", min_size=1, max_size=500),
                         st.sampled_from(["cam-1", "cam-3", "", "\u00e9\u20ac", "1" * 5000]))
RANDOM_PARAMS = st.dictionaries(st.sampled_from(["camera_id", "frame_seq", "capture_time_ms", "trace", "x" * 64]),
                                PARAM_VALUES, max_size=4)
VALID_PARAMS = st.fixed_dictionaries({"camera_id": st.sampled_from(["cam-1", "cam-2", "rogue", "9"])},
                                     optional={"frame_seq": st.integers(0, 2**63 - 1),
                                               "capture_time_ms": st.integers(0, 2**63 - 1)})
# Two draws in three carry readable parameters, so that their frames are judged too.
PARAMS = st.one_of(VALID_PARAMS, VALID_PARAMS, RANDOM_PARAMS)
REQUESTS = st.lists(st.tuples(st.lists(FRAMES, min_size=1, max_size=4), PARAMS), min_size=1, max_size=4)

GOOD_PER_ROUND = 4
FUZZ_ROUNDS = 600  # about two minutes on two cores
ran = {"rounds": 0, "hostile": 0, "good": 0, "served": 0, "refused": {}}


@settings(max_examples=FUZZ_ROUNDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(REQUESTS)
def test_fuzzed_requests_never_fail_their_batch_mates_or_the_server(triton, hostile):
    jobs = [(frames, params, False) for frames, params in hostile]
    jobs += [([GOOD], {"camera_id": "cam-1", "frame_seq": i}, True) for i in range(GOOD_PER_ROUND)]
    jobs = [job for pair in zip(jobs[::2], jobs[1::2]) for job in pair] + (jobs[-1:] if len(jobs) % 2 else [])
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outcomes = list(pool.map(lambda job: send(triton.grpc_url, job[0], job[1]), jobs))
    ran["rounds"] += 1
    for (frames, params, good), outcome in zip(jobs, outcomes):
        if good:
            ran["good"] += 1
            assert outcome == ("ok", ""), f"a good request failed beside hostile ones: {outcome}"
            continue
        ran["hostile"] += 1
        if outcome == ("ok", ""):
            ran["served"] += 1
            continue
        reason = refused_reason(outcome)
        assert reason != "internal", outcome
        ran["refused"][reason] = ran["refused"].get(reason, 0) + 1


def test_the_server_is_live_and_serving_after_the_fuzz(triton):
    client = grpcclient.InferenceServerClient(url=triton.grpc_url)
    try:
        assert client.is_server_live() and client.is_model_ready(modelspec.ENSEMBLE_NAME)
    finally:
        client.close()
    assert send(triton.grpc_url, [GOOD], {"camera_id": "cam-1"}) == ("ok", "")
    print(f"\nhostile-input fuzz: {ran['rounds']} rounds, {ran['hostile']} hostile requests "
          f"({ran['served']} served, refused by reason {dict(sorted(ran['refused'].items()))}), "
          f"{ran['good']} good requests beside them, all served")
    if ran["rounds"]:
        assert ran["good"] == ran["rounds"] * GOOD_PER_ROUND
