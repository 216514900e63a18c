"""Hostile input at the monitor sidecar's listeners (issue 15, findings 4-6).

The tap socket (:9411/udp) and the OTLP receiver (:4318) take whatever anyone on the
network sends. A bad datagram or export is refused alone, counted by reason, and never
stops what good input does next; nothing a sender controls grows without bound.
"""

from __future__ import annotations

import json
import math
import socket
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import CollectorRegistry

from sightline import conventions as names, modelspec
from sightline.sidecars.audit_store import AuditStore
from sightline.sidecars.drift import DriftDetector
from sightline.sidecars.tap_receiver import MAX_SENDERS, TAP_REJECT_REASONS, DriftService, TapReceiver
from sightline.steps.tap import encode_embedding

DIM = modelspec.EMBEDDING_DIM


@pytest.fixture(scope="module")
def detector() -> DriftDetector:
    rng = np.random.default_rng(0)
    quality = {f: rng.random(400) for f in ("brightness", "sharpness", "contrast")}
    return DriftDetector(rng.normal(size=(400, DIM)), quality, np.array([40.0, 30.0, 30.0]), permutations=20)


def drift_service(detector: DriftDetector, tmp_path, window: int = 60) -> DriftService:
    registry = CollectorRegistry()
    service = DriftService(registry, detector, window=window, reference_dir=tmp_path / "drift", recent=200)
    service.test_registry = registry  # type: ignore[attr-defined]
    return service


def value(service: DriftService, name: str, **labels: str) -> float:
    """A sample as /metrics shows it (0 when the series does not exist)."""
    return service.test_registry.get_sample_value(name, labels) or 0.0  # type: ignore[attr-defined]


def good(seq: int, camera: str = "cam-1", sender: str = "s-1", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed * 100_000 + seq)
    return {"v": 1, "sender": sender, "seq": seq, "camera": camera, "request_id": f"r-{seq}",
            "model_version": "1", "ts": 1.0, "embedding": encode_embedding(rng.normal(size=DIM)),
            "quality": {"brightness": 0.5, "sharpness": 0.3, "contrast": 0.2},
            "detections": {"count": 3, "by_class": [1, 0, 2], "mean_confidence": 0.8}}


def datagram(body: dict) -> bytes:
    return json.dumps(body).encode()


def rejected(service: DriftService) -> dict[str, float]:
    return {reason: value(service, "sightline_tap_rejected_total", reason=reason) for reason in TAP_REJECT_REASONS}


# -- finding 6: tap datagrams are validated at accept() -------------------------------------------

BAD_DATAGRAMS = {
    "quality_not_a_number": (lambda b: b["quality"].update(brightness="x"), "invalid_field"),
    "quality_nan": (lambda b: b["quality"].update(brightness="nan"), "not_finite"),
    "quality_infinite": (lambda b: b["quality"].update(contrast="-inf"), "not_finite"),
    "quality_not_a_mapping": (lambda b: b.update(quality=["bx"]), "invalid_field"),
    "embedding_nan": (lambda b: b.update(embedding=encode_embedding(np.full(DIM, np.nan))), "not_finite"),
    "embedding_not_base64": (lambda b: b.update(embedding="%%%"), "invalid_field"),
    "embedding_wrong_size": (lambda b: b.update(embedding=encode_embedding(np.zeros(DIM - 1))), "embedding_shape"),
    "detections_not_a_mapping": (lambda b: b.update(detections=[1]), "invalid_field"),
    "by_class_negative": (lambda b: b["detections"].update(by_class=[-5, 1, 2]), "invalid_field"),
    "by_class_nan": (lambda b: b["detections"].update(by_class=["nan", 0, 1]), "not_finite"),
    "seq_beyond_int64": (lambda b: b.update(seq=10**400), "invalid_field"),
    "seq_negative": (lambda b: b.update(seq=-1), "invalid_field"),
    "camera_not_a_string": (lambda b: b.update(camera={"a": 1}), "invalid_field"),
    "camera_missing": (lambda b: b.pop("camera"), "invalid_field"),
    "camera_huge": (lambda b: b.update(camera="c" * 10_000), "invalid_field"),
    "unknown_version": (lambda b: b.update(v=2), "unsupported_version"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATAGRAMS))
def test_a_bad_tap_datagram_is_refused_alone_and_counted_by_reason(detector, tmp_path, case):
    mutate, reason = BAD_DATAGRAMS[case]
    service = drift_service(detector, tmp_path)
    for seq in range(59):
        assert service.accept(datagram(good(seq)))
    body = good(59)
    mutate(body)
    assert service.accept(datagram(body)) is False
    assert rejected(service)[reason] == 1 and sum(rejected(service).values()) == 1
    assert service.accept(datagram(good(60)))
    service.evaluate()
    # What a user reads: every drift gauge of the window is a number, not NaN.
    assert math.isfinite(value(service, names.DRIFT_DISTANCE_RATIO, camera="all"))
    assert math.isfinite(value(service, "sightline_drift_mmd2", camera="cam-1"))


def test_not_json_not_an_object_and_oversized_datagrams_are_refused(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    assert not service.accept(b"{broken")
    assert not service.accept(b"[1, 2]")
    assert not service.accept(b"\xff\xfe")
    assert not service.accept(b" " * 65_001)
    assert rejected(service)["decode_error"] == 3 and rejected(service)["too_large"] == 1


def test_a_datagram_without_a_version_field_is_still_read(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    body = good(1)
    del body["v"], body["detections"], body["quality"]
    assert service.accept(datagram(body))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from(["v", "sender", "seq", "camera", "embedding", "quality",
                                                   "detections", "request_id", "model_version"]), _json, max_size=4))
def test_any_crafted_datagram_is_either_a_finite_record_or_one_counted_rejection(detector, tmp_path, overrides):
    service = drift_service(detector, tmp_path, window=20)
    for seq in range(20):
        service.accept(datagram(good(seq)))
    body = dict(good(20), **overrides)
    try:
        raw = json.dumps(body, allow_nan=True).encode()
    except (TypeError, ValueError):
        return
    before = sum(rejected(service).values())
    accepted = service.accept(raw)  # never raises
    assert sum(rejected(service).values()) == before + (0 if accepted else 1)
    service.evaluate()  # never raises either
    assert math.isfinite(value(service, names.DRIFT_DISTANCE_RATIO, camera="all"))


def test_per_sender_sequence_state_is_bounded_and_still_counts_losses(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    assert service.accept(datagram(good(1, sender="camera-gateway")))
    for i in range(5 * MAX_SENDERS):
        service.accept(datagram(good(1, sender=f"spoofed-{i}")))
        if i % 100 == 0:  # the real sender keeps sending: it stays among the recently heard
            assert service.accept(datagram(good(2 + i // 100, sender="camera-gateway")))
    assert service.senders() == MAX_SENDERS
    assert value(service, "sightline_tap_lost_total") == 0
    assert service.accept(datagram(good(2 + 5 * MAX_SENDERS // 100 + 3, sender="camera-gateway")))
    assert value(service, "sightline_tap_lost_total") == 2


# -- finding 6: the evaluation thread outlives any failure ------------------------------------------

def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_an_evaluation_that_raises_is_counted_and_the_loop_goes_on(detector, tmp_path, monkeypatch):
    service = drift_service(detector, tmp_path, window=60)
    audit = AuditStore(tmp_path / "audit", CollectorRegistry(), ttl_s=3600, max_files=10)
    sweeps = []
    monkeypatch.setattr(audit, "sweep", lambda: sweeps.append(1))
    real_decide = service.decide
    calls = []

    def decide(records, detector=None):
        calls.append(1)
        if len(calls) <= 4:  # both windows fail, on each of the first two passes
            raise FloatingPointError("a record the statistic cannot take")
        return real_decide(records, detector)

    monkeypatch.setattr(service, "decide", decide)
    for seq in range(60):
        assert service.accept(datagram(good(seq)))
    receiver = TapReceiver(service, port=0, evaluate_every_s=0.05, audit=audit).start()
    try:
        assert wait_for(lambda: value(service, "sightline_drift_last_evaluation_timestamp_seconds", camera="all") > 0), \
            "drift was never evaluated after a failing evaluation"
        assert value(service, names.DRIFT_EVALUATION_ERRORS, camera="all") == 2
        assert value(service, names.DRIFT_EVALUATION_ERRORS, camera="cam-1") == 2
        first = value(service, "sightline_drift_last_evaluation_timestamp_seconds", camera="all")
        assert wait_for(lambda: value(service, "sightline_drift_last_evaluation_timestamp_seconds", camera="all") > first)
        assert len(sweeps) >= 3  # audit expiry kept running with it
    finally:
        receiver.stop()


def test_a_whole_pass_that_raises_does_not_stop_audit_expiry_or_the_next_pass(detector, tmp_path, monkeypatch):
    service = drift_service(detector, tmp_path, window=20)
    audit = AuditStore(tmp_path / "audit", CollectorRegistry(), ttl_s=3600, max_files=10)
    sweeps = []
    monkeypatch.setattr(audit, "sweep", lambda: sweeps.append(1))
    passes = []

    def evaluate():
        passes.append(1)
        raise RuntimeError("broken pass")

    monkeypatch.setattr(service, "evaluate", evaluate)
    receiver = TapReceiver(service, port=0, evaluate_every_s=0.05, audit=audit).start()
    try:
        assert wait_for(lambda: len(passes) >= 3 and len(sweeps) >= 3)
        assert value(service, names.DRIFT_EVALUATION_ERRORS, camera="all") >= 3
    finally:
        receiver.stop()


def test_the_receive_thread_survives_a_datagram_of_the_wrong_shape(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    receiver = TapReceiver(service, port=0, evaluate_every_s=60).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bad = good(1)
        bad["detections"] = [1]
        sock.sendto(datagram(bad), ("127.0.0.1", receiver.port))
        sock.sendto(datagram(dict(good(2), seq=10**30)), ("127.0.0.1", receiver.port))
        sock.sendto(datagram(good(3)), ("127.0.0.1", receiver.port))
        assert wait_for(lambda: value(service, "sightline_tap_received_total") == 1), "a good record after bad ones was lost"
        assert sum(rejected(service).values()) == 2
    finally:
        sock.close()
        receiver.stop()


def test_the_evaluation_errors_counter_is_named_in_conventions():
    assert names.DRIFT_EVALUATION_ERRORS == "sightline_drift_evaluation_errors_total"
