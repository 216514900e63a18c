"""Hostile input at the monitor sidecar's listeners (issue 15, findings 4-6).

The tap socket (:9411/udp) and the OTLP receiver (:4318) take whatever anyone on the
network sends. A bad datagram or export is refused alone, counted by reason, and never
stops what good input does next; nothing a sender controls grows without bound.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import socket
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from prometheus_client import CollectorRegistry

from sightline import conventions as names
from sightline import modelspec
from sightline.datagrams import encode_embedding
from sightline.sidecars import otlp
from sightline.sidecars.audit_store import AuditStore
from sightline.sidecars.drift import DriftDetector
from sightline.sidecars.monitor import Monitor, MonitorConfig, load_config
from sightline.sidecars.otlp import decode
from sightline.sidecars.spans import MAX_VERSIONS_PER_MODEL, SpanMetrics, known_models
from sightline.sidecars.tap_receiver import MAX_SENDERS, TAP_REJECT_REASONS, DriftService, TapReceiver

DIM = modelspec.EMBEDDING_DIM
CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "triton_otlp_ensemble.json"


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
    "by_class_nan": (lambda b: b["detections"].update(by_class=["nan", 0, 1]), "invalid_field"),  # not a count
    "by_class_huge": (lambda b: b["detections"].update(by_class=[10**9, 0, 0]), "invalid_field"),
    "by_class_huge_without_a_count": (lambda b: (b["detections"].pop("count"),
                                                 b["detections"].update(by_class=[9000, 9000, 0])), "invalid_field"),
    "by_class_infinite": (lambda b: b["detections"].update(by_class=[1e308, 1e308, 0]), "invalid_field"),
    "by_class_more_than_counted": (lambda b: b["detections"].update(count=3, by_class=[3, 3, 3]), "invalid_field"),
    "by_class_too_many_classes": (lambda b: b["detections"].update(by_class=[0] * (modelspec.NUM_CLASSES + 1)),
                                  "invalid_field"),
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


def test_a_sequence_that_jumps_is_followed_from_there_and_counts_nothing_lost(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    for seq in (1, 2, 4):  # one datagram lost
        assert service.accept(datagram(good(seq, sender="gateway")))
    assert value(service, "sightline_tap_lost_total") == 1
    assert service.accept(datagram(good(2**63 - 1, sender="gateway")))  # spoofed under the sender's name
    assert value(service, "sightline_tap_lost_total") == 1  # not 9.2e18
    for seq in (5, 7):  # the real sender goes on, one more lost, and is followed again
        assert service.accept(datagram(good(seq, sender="gateway")))
    assert value(service, "sightline_tap_lost_total") == 2


def test_a_camera_named_all_joins_the_others_and_leaves_the_pooled_window_whole(detector, tmp_path):
    service = drift_service(detector, tmp_path, window=60)
    for seq in range(40):
        assert service.accept(datagram(good(seq, camera=f"cam-{seq % 2}")))
    assert service.accept(datagram(good(40, camera="all")))
    service.evaluate()
    assert value(service, "sightline_drift_window_size", camera="all") == 41  # it did not replace the pooled window
    assert value(service, "sightline_drift_window_size", camera="cam-0") == 20


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


# -- finding 5: spans create no series of their own, and a bad span is skipped alone ----------------


def model_span(i: int, model: str = "detector", version: str = "1", trace_id: bytes | None = None) -> Span:
    attrs = {"triton.model_name": model, "triton.model_version": version, "triton.trace_parent_id": "0"}
    return Span(trace_id=trace_id if trace_id is not None else i.to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"), name=model, start_time_unix_nano=1_000_000_000 + i,
                end_time_unix_nano=1_020_000_000 + i,
                attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()])


def export(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def series(registry: CollectorRegistry, name: str) -> set[tuple]:
    return {tuple(sorted(s.labels.items())) for metric in registry.collect() for s in metric.samples
            if s.name == f"{name}_count"}


def traced_requests(registry: CollectorRegistry) -> float:
    return sum(s.value for metric in registry.collect() for s in metric.samples
               if s.name == f"{names.TRACED_REQUEST_DURATION}_count")


def test_one_export_of_5000_made_up_models_creates_one_series_not_5000():
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    request = export([model_span(i, model=f"model-{i}", version=str(i)) for i in range(5000)])
    assert metrics.ingest(decode(request.SerializeToString(), "application/x-protobuf")) == 5000
    assert series(registry, names.TRACED_REQUEST_DURATION) == {(("model", "other"), ("version", "other"))}
    assert traced_requests(registry) == 5000  # still measured, under one label set


def test_versions_of_a_known_model_are_bounded():
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    metrics.ingest(export([model_span(i, version=str(i)) for i in range(1000)]
                          + [model_span(2000, version="v<script>")]))
    versions = {dict(labels)["version"] for labels in series(registry, names.TRACED_REQUEST_DURATION)}
    assert versions == {str(i) for i in range(MAX_VERSIONS_PER_MODEL)} | {"other"}
    metrics.ingest(export([model_span(3000, version="3")]))  # a version already seen keeps its own label
    assert registry.get_sample_value(f"{names.TRACED_REQUEST_DURATION}_count",
                                     {"model": "detector", "version": "3"}) == 2


def test_the_known_models_are_the_model_repositorys_or_an_allow_list():
    assert known_models() == {"detector", "preprocess", "detector_model", "postprocess"}
    registry = CollectorRegistry()
    SpanMetrics(registry, models=["yolo"]).ingest(export([model_span(1, model="yolo"), model_span(2)]))
    assert series(registry, names.TRACED_REQUEST_DURATION) == {
        (("model", "yolo"), ("version", "1")), (("model", "other"), ("version", "other"))}


def test_a_span_with_an_overlong_trace_id_is_skipped_and_the_rest_of_the_export_is_read():
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    spans = [model_span(i) for i in range(10)]
    spans.insert(3, model_span(99, trace_id=b"\x01" * 65))  # 130 hex characters: too long for an exemplar
    spans.insert(6, model_span(98, trace_id=b""))
    spans.append(Span(trace_id=(7).to_bytes(16, "big"), span_id=(7).to_bytes(8, "big"), name="detector",
                      start_time_unix_nano=2, end_time_unix_nano=1,
                      attributes=[KeyValue(key="triton.model_name", value=AnyValue(string_value="detector"))]))
    body = export(spans).SerializeToString()
    assert metrics.ingest(decode(body, "application/x-protobuf")) == 13
    assert traced_requests(registry) == 10
    assert registry.get_sample_value(f"{names.SPANS_SKIPPED}", {"reason": "bad_id"}) == 2
    assert registry.get_sample_value(f"{names.SPANS_SKIPPED}", {"reason": "bad_timestamps"}) == 1


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(st.fixed_dictionaries({
    "trace_id": st.binary(max_size=80), "span_id": st.binary(max_size=12), "parent": st.binary(max_size=12),
    "name": st.sampled_from(["compute", "detector", "preprocess", ""]) | st.text(max_size=10),
    "start": st.integers(0, 2**64 - 1), "end": st.integers(0, 2**64 - 1),
    "attrs": st.dictionaries(st.sampled_from(["triton.model_name", "triton.model_version", "triton.trace_parent_id"])
                             | st.text(max_size=5), st.text(max_size=30), max_size=4),
    "events": st.dictionaries(st.sampled_from(["COMPUTE_START", "COMPUTE_END", "QUEUE_START"]),
                              st.integers(0, 2**64 - 1), max_size=3),
}), max_size=30))
def test_any_crafted_export_is_read_span_by_span_and_creates_bounded_series(spans):
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    request = export([Span(trace_id=s["trace_id"], span_id=s["span_id"], parent_span_id=s["parent"], name=s["name"],
                           start_time_unix_nano=s["start"], end_time_unix_nano=s["end"],
                           attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in s["attrs"].items()],
                           events=[Span.Event(name=k, time_unix_nano=v) for k, v in s["events"].items()])
                      for s in spans])
    assert metrics.ingest(request) == len(spans)  # never raises
    metrics.flush(force=True)
    allowed = {m for m in known_models()} | {"other"}
    for name in (names.TRACED_REQUEST_DURATION, names.TRACED_STAGE_DURATION, names.TRACED_STAGE_COMPUTE):
        for labels in series(registry, name):
            assert dict(labels)["model"] in allowed


# -- finding 4: the OTLP receiver reads and inflates within bounds ---------------------------------


def reader_of(data: bytes, keep_open: bool = True):
    """A socket's read side holding ``data``; the writer stays open (a client that never closes)."""
    ours, theirs = socket.socketpair()
    ours.sendall(data)
    if not keep_open:
        ours.shutdown(socket.SHUT_WR)
    theirs.settimeout(5)  # a read that waits for the client to close fails the test instead of hanging
    return ours, theirs, theirs.makefile("rb")


def close(*parts) -> None:
    for part in parts:
        part.close()


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "", " 12 34", "99999999999999999999999"])
def test_a_content_length_that_is_not_a_byte_count_is_refused_before_reading(length):
    ours, theirs, rfile = reader_of(b"x" * 100)
    try:
        with pytest.raises(otlp.OtlpDecodeError, match="Content-Length") as refused:
            otlp.read_body({"Content-Length": length}, rfile)
        assert refused.value.status == 400 and refused.value.reason == "bad_content_length"
    finally:
        close(rfile, ours, theirs)


def test_a_body_over_the_cap_is_413_without_reading_it():
    ours, theirs, rfile = reader_of(b"x" * 10)
    try:
        with pytest.raises(otlp.OtlpTooLarge) as refused:
            otlp.read_body({"Content-Length": str(otlp.MAX_BODY_BYTES + 1)}, rfile)
        assert refused.value.status == 413 and refused.value.reason == "too_large"
    finally:
        close(rfile, ours, theirs)


def test_exactly_the_declared_length_is_read_and_a_short_body_is_refused():
    ours, theirs, rfile = reader_of(b"0123456789more", keep_open=True)
    try:
        assert otlp.read_body({"Content-Length": "10"}, rfile) == b"0123456789"
    finally:
        close(rfile, ours, theirs)
    ours, theirs, rfile = reader_of(b"0123", keep_open=False)
    try:
        with pytest.raises(otlp.OtlpDecodeError, match="ended after 4 of its 10 bytes"):
            otlp.read_body({"Content-Length": "10"}, rfile)
    finally:
        close(rfile, ours, theirs)
    with pytest.raises(otlp.OtlpDecodeError) as refused:
        otlp.read_body({"Content-Length": "5", "Transfer-Encoding": "chunked"}, None)  # type: ignore[arg-type]
    assert refused.value.status == 411


def gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join([packer.compress(block) for _ in range(inflated >> 20)] + [packer.flush()])


def test_a_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip_bomb(4 * otlp.MAX_INFLATED_BYTES)  # 256 MiB of zeros in about 250 KiB
    assert len(bomb) * 500 < 4 * otlp.MAX_INFLATED_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(otlp.OtlpTooLarge, match="inflates to more than") as refused:
            otlp.decode(bomb, "application/x-protobuf", "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < otlp.MAX_INFLATED_BYTES + (8 << 20), f"inflating the bomb took {peak >> 20} MiB"


def test_gzip_within_the_limit_and_concatenated_members_still_decode():
    body = CAPTURE.read_bytes()
    expected = otlp.decode(body, "application/json")
    assert otlp.decode(gzip.compress(body), "application/json", "gzip") == expected
    half = len(body) // 2
    assert otlp.decode(gzip.compress(body[:half]) + gzip.compress(body[half:]), "application/json", "gzip") == expected
    with pytest.raises(otlp.OtlpTooLarge):
        otlp.decode(gzip.compress(body), "application/json", "gzip", max_inflated=len(body) - 1)
    with pytest.raises(otlp.OtlpDecodeError, match="not gzip"):
        otlp.decode(gzip.compress(body)[:-20], "application/json", "gzip")
    with pytest.raises(otlp.OtlpDecodeError, match="Content-Encoding") as refused:
        otlp.decode(body, "application/json", "br")
    assert refused.value.status == 415


MALFORMED = [b'{"resourceSpans": "x"}', b'{"resourceSpans": [1]}', b'{"resourceSpans": [{"scopeSpans": "x"}]}',
             b'{"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}',
             b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"links": "x"}]}]}]}',
             b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 1e400}]}]}]}',
             b"[" * 100_000 + b"]" * 100_000]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_json_export_is_a_decode_error(body):
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.decode(body, "application/json")


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                                st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId",
                                                 "attributes", "events", "links", "key", "value", "kind",
                                                 "stringValue", "intValue", "status", "code"]), inner, max_size=3),
                            max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(st.just("resourceSpans"), _json_values, max_size=1),
       raw=st.binary(max_size=200), encoding=st.sampled_from(["", "gzip", "identity", "x"]))
def test_decode_answers_any_body_with_an_export_or_a_decode_error(document, raw, encoding):
    for body, content_type in ((json.dumps(document).encode(), "application/json"),
                               (raw, "application/x-protobuf"), (raw, "application/json")):
        if encoding == "gzip" and body is not raw:
            body = gzip.compress(body)
        try:
            otlp.decode(body, content_type, encoding)
        except otlp.OtlpRejected as exc:
            assert exc.status in (400, 413, 415) and exc.reason in otlp.REJECT_REASONS


@pytest.fixture()
def monitor(tmp_path):
    config = MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                           triton_url="http://127.0.0.1:9", watch_processes=False)
    with Monitor(config) as running:
        yield running


def post_raw(port: int, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/traces", skip_accept_encoding=True)
        for key, item in headers.items():
            connection.putheader(key, item)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def rejects(monitor: Monitor) -> float:
    return sum(monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": reason}) or 0.0
               for reason in otlp.REJECT_REASONS)


def test_malformed_exports_get_400_and_are_counted_and_good_exports_still_pass(monitor):
    for body in MALFORMED[:6]:
        assert post_raw(monitor.otlp_port, body, {"Content-Type": "application/json",
                                                  "Content-Length": str(len(body))}) == 400
    assert rejects(monitor) == 6
    good_body = CAPTURE.read_bytes()
    assert post_raw(monitor.otlp_port, good_body, {"Content-Type": "application/json",
                                                   "Content-Length": str(len(good_body))}) == 200
    assert monitor.registry.get_sample_value(names.SPANS_RECEIVED) == 8


def test_a_gzip_bomb_posted_to_the_receiver_is_refused_and_counted(monitor):
    bomb = gzip_bomb(2 * otlp.MAX_INFLATED_BYTES)
    status = post_raw(monitor.otlp_port, bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                                                "Content-Length": str(len(bomb))})
    assert status in (400, 413) and rejects(monitor) == 1



@pytest.mark.parametrize("length", ["-1", "abc"])
def test_the_receiver_refuses_a_content_length_that_is_not_a_byte_count(monitor, length):
    body = CAPTURE.read_bytes()
    with socket.create_connection(("127.0.0.1", monitor.otlp_port), timeout=10) as client:
        client.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {length}\r\n\r\n".encode() + body)
        client.shutdown(socket.SHUT_WR)
        reply = client.recv(200)
    assert reply.startswith(b"HTTP/1.1 400")
    assert monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": "bad_content_length"}) == 1


def test_the_receiver_answers_a_gzip_bomb_with_413_too_large(monitor):
    bomb = gzip_bomb(2 * otlp.MAX_INFLATED_BYTES)
    status = post_raw(monitor.otlp_port, bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                                                "Content-Length": str(len(bomb))})
    assert status == 413
    assert monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": "too_large"}) == 1


def test_deeply_nested_datagrams_neither_stop_the_receive_thread_nor_count_as_records(detector, tmp_path):
    service = drift_service(detector, tmp_path)
    audit = AuditStore(tmp_path / "audit", CollectorRegistry(), ttl_s=3600, max_files=10)
    receiver = TapReceiver(service, port=0, evaluate_every_s=60, audit=audit).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for bad in (b'{"kind":"audit","x":' + b"[" * 30_000, b'{"camera":' + b"[" * 30_000):
            sock.sendto(bad, ("127.0.0.1", receiver.port))
        sock.sendto(datagram(good(3)), ("127.0.0.1", receiver.port))
        assert wait_for(lambda: value(service, "sightline_tap_received_total") == 1), "the receive thread died"
        assert rejected(service)["decode_error"] == 1
    finally:
        sock.close()
        receiver.stop()


def test_an_operators_models_are_named_in_the_monitor_config(tmp_path):
    # span_models (SIGHTLINE_MONITOR_SPAN_MODELS) is the allow-list for a repository the sidecar cannot read.
    config = load_config(environ={"SIGHTLINE_MONITOR_SPAN_MODELS": "yolo, detector", "SIGHTLINE_MONITOR_OTLP_PORT": "0",
                                  "SIGHTLINE_MONITOR_METRICS_PORT": "0", "SIGHTLINE_MONITOR_TAP_PORT": "0",
                                  "SIGHTLINE_MONITOR_WATCH_PROCESSES": "false",
                                  "SIGHTLINE_MONITOR_AUDIT_DIR": str(tmp_path / "audit")})
    monitor = Monitor(config)
    monitor.spans.ingest(export([model_span(1, model="yolo"), model_span(2, model="made-up")]))
    assert {dict(labels)["model"] for labels in series(monitor.registry, names.TRACED_REQUEST_DURATION)} == {"yolo", "other"}


def test_a_repeated_content_length_is_refused_before_reading(monitor):
    body = CAPTURE.read_bytes()
    with socket.create_connection(("127.0.0.1", monitor.otlp_port), timeout=10) as client:
        client.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\nContent-Length: 5\r\n\r\n".encode() + body)
        reply = client.recv(200)
    assert reply.startswith(b"HTTP/1.1 400") and b"Content-Length" in reply
    assert monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": "bad_content_length"}) == 1


@pytest.fixture()
def strict_monitor(tmp_path, monkeypatch):
    """A monitor with small limits: 3 connections, a 1 s body deadline, a 0.2 s wait for a decode slot."""
    from sightline.sidecars import monitor as monitor_module
    monkeypatch.setattr(monitor_module, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(monitor_module, "BODY_DEADLINE_S", 1.0)
    monkeypatch.setattr(monitor_module, "DECODE_WAIT_S", 0.2)
    config = MonitorConfig(otlp_port=0, metrics_port=0, tap_port=0, audit_dir=tmp_path / "audit",
                           triton_url="http://127.0.0.1:9", watch_processes=False)
    with Monitor(config) as running:
        yield running


def good_post(port: int) -> int:
    body = CAPTURE.read_bytes()
    return post_raw(port, body, {"Content-Type": "application/json", "Content-Length": str(len(body))})


def test_a_client_that_trickles_its_body_is_cut_off_at_the_deadline_not_per_byte(strict_monitor):
    with socket.create_connection(("127.0.0.1", strict_monitor.otlp_port), timeout=10) as client:
        client.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n")
        reply = b""
        for _ in range(40):  # a byte every 0.1 s: each receive is quick, the whole body never comes
            try:
                client.sendall(b"{")
            except OSError:
                break
            client.settimeout(0.1)
            try:
                reply += client.recv(200)
            except socket.timeout:
                continue
            if reply:
                break
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert strict_monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": "timeout"}) == 1
    assert good_post(strict_monitor.otlp_port) == 200


def test_a_newcomer_cuts_off_the_connection_that_waited_longest_and_is_served(strict_monitor):
    stalled = [socket.create_connection(("127.0.0.1", strict_monitor.otlp_port), timeout=5) for _ in range(3)]
    try:
        for client in stalled:  # three requests whose bodies never come take the three slots
            client.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert wait_for(lambda: _answered(strict_monitor.otlp_port) == 200)  # Triton's exporter still gets in
        evicted = strict_monitor.registry.get_sample_value(names.MONITOR_REQUESTS_REFUSED,
                                                           {"reason": "evicted_waiting_connection"})
        assert evicted == 1
        cut = 0
        for client in stalled:
            client.settimeout(0.5)
            try:
                cut += client.recv(100) == b""  # shut down under it: no answer, just the end
            except ConnectionResetError:
                cut += 1
            except socket.timeout:
                pass  # still waiting for its body: not the one cut off
        assert cut == 1
    finally:
        for client in stalled:
            client.close()


def _answered(port: int) -> int:
    try:
        return good_post(port)
    except (ConnectionError, http.client.HTTPException):
        return 0  # closed unanswered


def _toy_server(max_connections: int):
    """A bounded server whose GET handler is busy until ``release`` is set."""
    import threading

    from sightline.sidecars import monitor as monitor_module

    release, entered, counted = threading.Event(), threading.Semaphore(0), []

    class Busy(monitor_module._QuietHandler):
        def do_GET(self):  # noqa: N802
            self.busy()
            entered.release()
            release.wait(10)
            self.reply(200, b"ok")

    server = monitor_module._BoundedServer(("127.0.0.1", 0), Busy, counted.append, max_connections)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, release, entered, counted


def test_when_every_connection_is_busy_being_served_a_newcomer_is_closed_unanswered_and_counted():
    server, release, entered, counted = _toy_server(2)
    port = server.server_address[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)  # both busy
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(100) == b""  # closed unanswered (nothing sent, so no reset either)
        assert counted == ["too_many_connections"]
        release.set()
        assert all(client.recv(100).startswith(b"HTTP/1.1 200") for client in clients)
    finally:
        release.set()
        for client in clients:
            client.close()
        server.shutdown()
        server.server_close()


def test_an_idle_keep_alive_connection_makes_way_for_a_new_one():
    server, release, entered, counted = _toy_server(2)
    release.set()  # GETs answer at once
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as newcomer:
            newcomer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert newcomer.recv(100).startswith(b"HTTP/1.1 200")
        assert counted == ["evicted_waiting_connection"]
    finally:
        for client in idle:
            client.close()
        server.shutdown()
        server.server_close()


def test_an_export_that_finds_every_decode_slot_taken_gets_503_and_the_next_one_passes(strict_monitor):
    from sightline.sidecars import monitor as monitor_module
    taken = [strict_monitor.decoding.acquire(timeout=1) for _ in range(monitor_module.DECODE_SLOTS)]
    assert all(taken)
    try:
        assert good_post(strict_monitor.otlp_port) == 503
        assert strict_monitor.registry.get_sample_value(names.SPANS_REJECTED, {"reason": "busy"}) == 1
    finally:
        for _ in taken:
            strict_monitor.decoding.release()
    assert good_post(strict_monitor.otlp_port) == 200


def test_a_flood_of_bad_spans_logs_a_line_then_one_with_how_many_were_held_back(monkeypatch):
    import logging

    from sightline.sidecars import logs

    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(logs, "_limits", {})
    logger = logging.getLogger(logs.LOGGER_NAME)
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        metrics = SpanMetrics(CollectorRegistry(), models={"detector"})
        bad = [Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 3, name="x") for _ in range(5000)]
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=bad)])])
        metrics.ingest(request)
        assert metrics.spans_skipped.labels("bad_id")._value.get() == 5000  # every one counted
        assert len(lines) == 1  # one line, not 5000
        clock[0] += 11
        metrics.ingest(request)
        assert len(lines) == 2 and lines[1].fields["suppressed"] == 4999  # the first export's others
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
