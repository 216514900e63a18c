"""The tap receiver's drift service: the calibrated limit as a gauge, and a rebaseline that warns only when its buffer cut the window short."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sightline import conventions as names
from sightline import modelspec
from sightline.datagrams import encode_embedding
from sightline.sidecars import logs
from sightline.sidecars.drift import DriftDetector
from sightline.sidecars.tap_receiver import DriftService, build_detector

DIM = modelspec.EMBEDDING_DIM


@pytest.fixture(scope="module")
def detector() -> DriftDetector:
    return DriftDetector(np.random.default_rng(0).normal(size=(400, DIM)), permutations=20)


@pytest.fixture()
def events():
    logger = logging.getLogger(logs.LOGGER_NAME)
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield captured
    logger.removeHandler(handler)
    logger.setLevel(level)


def service(detector: DriftDetector, tmp_path, window: int = 100, buffer: int = 250) -> DriftService:
    return DriftService(CollectorRegistry(), detector, window=window, reference_dir=tmp_path / "drift", recent=buffer)


def send(drift: DriftService, count: int, camera: str = "cam-1", shift: float = 0.0, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for seq in range(count):
        body = {"sender": f"s-{seed}", "seq": seq, "camera": camera,
                "embedding": encode_embedding(rng.normal(size=DIM) + shift),
                "quality": {"brightness": 0.5, "sharpness": 0.3, "contrast": 0.2}}
        assert drift.accept(json.dumps(body).encode())


def rebuilt(events) -> dict:
    record = [r for r in events if r.getMessage() == "drift reference rebuilt"][-1]
    return dict(record.fields, severity=record.levelname.lower())


# -- finding 23: the rebaseline_buffer warning ---------------------------------------------------

def test_traffic_shorter_than_the_window_is_not_a_truncated_buffer(detector, tmp_path, events):
    drift = service(detector, tmp_path)
    send(drift, 100)  # the sidecar has run for seconds; the buffer (250) is far from full
    summary = drift.rebaseline(3600, min_records=50)
    assert summary["records"] == 100 and summary["covered_s"] < 60
    assert summary["truncated"] is False and "warning" not in summary
    assert rebuilt(events)["severity"] == "info"


def test_a_buffer_that_overwrote_records_of_the_window_warns(detector, tmp_path, events):
    drift = service(detector, tmp_path)  # ring of max(250, 100) records
    send(drift, 400)
    summary = drift.rebaseline(3600, min_records=50)
    assert summary["records"] == 250 and summary["truncated"] is True
    assert "keeps the latest 250 records" in summary["warning"]
    assert rebuilt(events)["severity"] == "warning" and rebuilt(events)["truncated"] is True


def test_a_window_longer_than_the_buffer_is_cut_to_the_buffer_and_warns(detector, tmp_path):
    drift = service(detector, tmp_path, window=300, buffer=250)  # ring of 300, buffer of 250
    send(drift, 280)
    summary = drift.rebaseline(3600, min_records=50)
    assert summary["records"] == 250 and summary["truncated"] is True and "warning" in summary


def test_records_overwritten_before_the_window_began_are_no_truncation(detector, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("sightline.sidecars.tap_receiver.time.monotonic", lambda: clock[0])
    drift = service(detector, tmp_path)
    send(drift, 300)  # 50 records overwritten, all at t=1000
    clock[0] = 2000.0
    send(drift, 60, seed=2)
    summary = drift.rebaseline(600, min_records=50)  # the window starts at t=1400
    assert summary["records"] == 60 and summary["truncated"] is False and "warning" not in summary


# -- finding 12: the calibrated limit next to the ratio ---------------------------------------

def test_the_limit_is_exported_per_camera_next_to_the_ratio(detector, tmp_path):
    registry = CollectorRegistry()
    drift = DriftService(registry, detector, window=100, reference_dir=tmp_path / "drift")
    send(drift, 80, camera="cam-1")
    send(drift, 60, camera="cam-2", seed=3)
    drift.evaluate()

    def sample(name: str, camera: str) -> float:
        return registry.get_sample_value(name, {names.LABEL_CAMERA: camera})

    for camera in ("cam-1", "cam-2", "all"):
        assert sample(names.DRIFT_DISTANCE_LIMIT, camera) == pytest.approx(detector.distance_limit(100))
        assert sample(names.DRIFT_DISTANCE_RATIO, camera) < sample(names.DRIFT_DISTANCE_LIMIT, camera)
        assert sample(names.DRIFT_DETECTED, camera) == 0.0


def test_drift_detected_follows_the_calibrated_limit(tmp_path):
    rng = np.random.default_rng(4)
    scale = np.r_[10.0, np.ones(DIM - 1)]  # most variance in one direction, as in the real embeddings
    detector = DriftDetector(rng.normal(size=(2000, DIM)) * scale, permutations=20)
    registry = CollectorRegistry()
    drift = DriftService(registry, detector, window=100, reference_dir=tmp_path / "drift")
    window = rng.normal(size=(100, DIM)) * scale
    window += detector.reference_mean - window.mean(axis=0)
    window[:, 0] += 1.9 * detector.baseline_distance(100)  # over the old 1.5x, under the calibrated limit
    for seq, embedding in enumerate(window):
        drift.accept(json.dumps({"sender": "s", "seq": seq, "camera": "cam-1",
                                 "embedding": encode_embedding(embedding)}).encode())
    decision = drift.evaluate()["cam-1"]
    ratio = registry.get_sample_value(names.DRIFT_DISTANCE_RATIO, {names.LABEL_CAMERA: "cam-1"})
    limit = registry.get_sample_value(names.DRIFT_DISTANCE_LIMIT, {names.LABEL_CAMERA: "cam-1"})
    assert 1.5 < ratio < limit
    assert not any(r.startswith("mean embedding distance") for r in decision.reasons)


def test_a_refreshed_reference_carries_its_calibration(detector, tmp_path):
    drift = service(detector, tmp_path)
    send(drift, 200)
    summary = drift.rebaseline(3600, min_records=50)
    with np.load(summary["path"]) as data:
        assert float(data["distance_false_alarm"]) == detector.thresholds.distance_false_alarm
        stored = float(data["distance_limit"])
    assert drift.detector.distance_limit(100) == stored
    assert build_detector(summary["path"]).distance_limit(100) == stored


# -- the drift SLO's events: each full window counted once ----------------------------------------

def test_overlapping_evaluations_count_each_disjoint_window_once_with_its_verdict(detector, tmp_path):
    registry = CollectorRegistry()
    drift = DriftService(registry, detector, window=100, reference_dir=tmp_path / "drift")

    def windows(camera: str, result: str) -> float:
        return registry.get_sample_value(names.DRIFT_WINDOWS, {names.LABEL_CAMERA: camera,
                                                               names.LABEL_RESULT: result}) or 0.0

    # The SLO's series exist, at 0, before any record: rate() reads 0, not absent.
    assert windows("all", names.DRIFT_WITHIN_LIMIT) == 0.0
    assert registry.get_sample_value(names.DRIFT_WINDOWS, {names.LABEL_CAMERA: "all",
                                                           names.LABEL_RESULT: names.DRIFT_OVER_LIMIT}) == 0.0
    # 250 healthy records, evaluated every 25 records as the sidecar does every few seconds:
    # ten overlapping evaluations, two disjoint full windows (records 1-100 are not full
    # until the 100th; 101-200 are the next window that is entirely new).
    for step in range(10):
        send(drift, 25, seed=10 + step)
        drift.evaluate()
    assert windows("all", names.DRIFT_WITHIN_LIMIT) == 2 and windows("cam-1", names.DRIFT_WITHIN_LIMIT) == 2
    assert windows("all", names.DRIFT_OVER_LIMIT) == 0
    # A shifted camera: the next full, new window is over the limit, once, however often it is evaluated.
    send(drift, 100, shift=3.0, seed=99)
    for _ in range(3):
        drift.evaluate()
    assert windows("all", names.DRIFT_OVER_LIMIT) == 1 and windows("cam-1", names.DRIFT_OVER_LIMIT) == 1
    assert windows("all", names.DRIFT_WITHIN_LIMIT) == 2
