"""Audit frames: downscaled and redacted (failing closed) before they leave Triton; stored bounded; expired."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sightline import conventions as names
from sightline.redaction import TokenBucket, downscale, load_cascades, mask, redact
from sightline.sidecars.audit_store import AuditStore


def test_frames_are_downscaled_to_at_most_320_pixels_wide():
    assert downscale(np.zeros((720, 1280, 3), np.uint8)).shape == (180, 320, 3)
    assert downscale(np.zeros((100, 200, 3), np.uint8)).shape == (100, 200, 3)


def test_masked_regions_are_blacked_out_with_a_margin():
    image = np.full((100, 100, 3), 200, np.uint8)
    out = mask(image, [(40, 40, 20, 20)])
    assert (out[37:63, 37:63] == 0).all()  # 15 % margin around the box
    assert (out[:30] == 200).all() and image.min() == 200  # the input is untouched


def test_the_bundled_cascades_load_and_a_scene_without_faces_keeps_its_pixels():
    from sightline.export.scenes import generate_scene

    cascades = load_cascades()
    frame = generate_scene(seed=0).image
    result = redact(frame, cascades)
    assert result.frame.shape[1] == 320 and result.label == "none_found" and result.regions == 0
    assert np.array_equal(result.frame, downscale(frame))


def test_a_flat_frame_the_cascades_cannot_judge_is_blurred_whole():
    result = redact(np.full((480, 640, 3), 128, np.uint8), load_cascades())
    assert (result.label, result.reason) == ("blurred_whole", "too_flat")


def test_the_token_bucket_limits_the_audit_rate():
    bucket = TokenBucket(per_minute=6, burst=2, tokens=2, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(5.0) is False and bucket.take(10.1) is True  # one token per 10 s


def audit_body(request_id="r-1", redaction="none_found"):
    jpeg = cv2.imencode(".jpg", np.zeros((24, 32, 3), np.uint8))[1].tobytes()
    return {"kind": "audit", "request_id": request_id, "camera": "cam-1", "ts": 1.0,
            "redaction": redaction, "masked_regions": 0, "jpeg": base64.b64encode(jpeg).decode()}


@pytest.fixture()
def store(tmp_path):
    now = [1_000.0]
    registry = CollectorRegistry()
    return AuditStore(tmp_path / "audit", registry, ttl_s=60, max_files=3, clock=lambda: now[0],
                       per_minute=60, burst=10), registry, now  # the rate limit has its own tests


def test_an_unredacted_frame_is_never_written(store):
    audit, registry, _ = store
    assert audit.accept(audit_body(redaction=None)) is False
    old_style = dict(audit_body(redaction=None), redacted=True)  # a bare claim is not a redaction label
    assert audit.accept(old_style) is False
    assert list(audit.directory.iterdir()) == []
    assert registry.get_sample_value(names.AUDIT_REFUSED, {"reason": "not_redacted"}) == 2


def test_frames_are_stored_with_metadata_counted_and_bounded(store):
    audit, registry, now = store
    for i in range(5):
        now[0] += 1
        assert audit.accept(audit_body(f"req/{i}"))
    jpegs = sorted(audit.directory.glob("*.jpg"))
    assert len(jpegs) == 3  # the two oldest went over budget
    meta = json.loads(jpegs[-1].with_suffix(".json").read_text())
    assert meta["request_id"] == "req/4" and meta["expires_at"] == meta["stored_at"] + 60
    assert "/" not in jpegs[-1].name
    assert registry.get_sample_value("sightline_audit_frames_stored_total") == 5
    assert registry.get_sample_value("sightline_audit_frames_removed_total", {"reason": "over_budget"}) == 2


def test_frames_expire_after_their_time_to_live(store):
    audit, registry, now = store
    audit.accept(audit_body())
    now[0] += 61
    audit.sweep()
    assert list(audit.directory.iterdir()) == []
    assert registry.get_sample_value("sightline_audit_frames_removed_total", {"reason": "expired"}) == 1
    assert registry.get_sample_value("sightline_audit_frames") == 0


def test_structured_logs_are_json_lines_without_image_data():
    import io

    from sightline.sidecars import logs

    stream = io.StringIO()
    logs.configure(stream)
    logs.event("info", "sampled request", request_id="r-9", stage="postprocess", jpeg="AAAA", embedding=[1, 2])
    line = json.loads(stream.getvalue().strip())
    assert line["request_id"] == "r-9" and line["severity"] == "info" and line["stage"] == "postprocess"
    assert "jpeg" not in line and "embedding" not in line
