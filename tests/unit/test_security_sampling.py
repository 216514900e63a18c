"""Tap and audit sampling run at the configured rate whatever the request ids: empty (what a
default tritonclient call sends), reused, or unique."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sightline.steps.audit import AuditSampler
from sightline.steps.tap import TapSender

N = 4000


def within(count: int, rate: float, n: int = N) -> bool:
    """Six standard deviations of a binomial draw: fails by chance about once in 10^9 runs."""
    sd = (n * rate * (1 - rate)) ** 0.5
    return abs(count - n * rate) <= 6 * sd


def tapped(ids, rate=0.25) -> int:
    sender = TapSender(("127.0.0.1", 9), rates={"*": rate})
    try:
        return sum(sender.wants(request_id, "cam-1") for request_id in ids)
    finally:
        sender.close()


def audited(ids, rate=0.25) -> int:
    sampler = AuditSampler(("127.0.0.1", 9), rate=rate, per_minute=1e12)
    sampler.bucket.burst = sampler.bucket.tokens = float(N)  # the rate, not the bucket, is under test
    try:
        return sum(sampler.wants(request_id) for request_id in ids)
    finally:
        sampler.close()


def test_requests_without_an_id_are_tapped_and_audited_at_the_configured_rate():
    assert within(tapped([""] * N), 0.25)
    assert within(audited([""] * N), 0.25)


def test_a_client_reusing_one_id_gets_the_configured_share_sampled_not_all_or_none():
    for request_id in ("1", "frame", "same-id-every-time"):
        assert within(tapped([request_id] * N), 0.25), request_id
        assert within(audited([request_id] * N), 0.25), request_id


def test_unique_ids_keep_the_configured_rate_and_per_camera_rates_still_apply():
    assert within(tapped([f"req-{i}" for i in range(N)]), 0.25)
    sender = TapSender(("127.0.0.1", 9), rates={"*": 0.0, "cam-4": 1.0})
    try:
        assert not any(sender.wants("", "cam-1") for _ in range(200))
        assert all(sender.wants("", "cam-4") for _ in range(200))
    finally:
        sender.close()


def test_tap_and_audit_samples_are_independent():
    tap = TapSender(("127.0.0.1", 9), rates={"*": 0.5}, rng=random.Random(1))
    sampler = AuditSampler(("127.0.0.1", 9), rate=0.5, per_minute=1e12, rng=random.Random(2))
    sampler.bucket.burst = sampler.bucket.tokens = float(N)
    try:
        both = sum(tap.wants("", "cam-1") and sampler.wants("") for _ in range(N))
    finally:
        tap.close()
        sampler.close()
    assert within(both, 0.25)


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.text(max_size=12), min_size=1, max_size=8), rate=st.sampled_from([0.1, 0.5, 0.9]))
def test_whatever_ids_a_client_sends_the_sampled_share_is_the_rate(ids, rate):
    stream = [ids[i % len(ids)] for i in range(2000)]
    assert within(tapped(stream, rate), rate, 2000)


@pytest.mark.integration
def test_the_real_server_taps_and_audits_default_tritonclient_calls_that_carry_no_request_id(tmp_path):
    """A plain tritonclient call (no request id, no parameters) is tapped and audited at rate 1."""
    import json
    import socket

    import cv2
    import numpy as np
    import tritonclient.grpc as grpcclient

    from sightline import modelspec
    from sightline.export.scenes import generate_scene
    from sightline.runtime import DEFAULT_MODEL_REPOSITORY, ServerOptions, TritonServer, free_port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(0.5)
        options = ServerOptions(model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=tmp_path / "state",
                                http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                                ready_timeout_s=180,
                                env={"SIGHTLINE_TAP_ADDRESS": f"127.0.0.1:{sink.getsockname()[1]}",
                                     "SIGHTLINE_TAP_RATE": "1.0", "SIGHTLINE_AUDIT_RATE": "1.0"})
        with TritonServer(options) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            for seed in range(3):
                jpeg = cv2.imencode(".jpg", generate_scene(seed=seed).image)[1].tobytes()
                tensor = grpcclient.InferInput(modelspec.ENSEMBLE_INPUT, [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
                client.infer(modelspec.ENSEMBLE_NAME, [tensor])
            client.close()
            received: list[dict] = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (sum(r.get("kind", "tap") == "tap" for r in received) >= 3
                                                        and any(r.get("kind") == "audit" for r in received)):
                try:
                    received.append(json.loads(sink.recv(65536)))
                except socket.timeout:
                    continue
    taps = [r for r in received if r.get("kind", "tap") == "tap"]
    audits = [r for r in received if r.get("kind") == "audit"]
    assert len(taps) == 3 and {r["request_id"] for r in taps} == {""}
    assert audits and audits[0]["redaction"] in ("masked", "none_found", "blurred_whole")
