"""Step metrics: bounded camera labels and the right families, through a fake pb_utils."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sightline.steps.telemetry import (
    CameraLabels,
    SequenceTracker,
    StepTelemetry,
    parse_camera_list,
    request_parameters,
)


class FakeMetric:
    def __init__(self, labels, buckets=None):
        self.labels, self.buckets, self.values = labels, buckets, []

    def observe(self, value):
        self.values.append(value)

    def increment(self, value):
        self.values.append(value)

    def set(self, value):
        self.values = [value]


class FakeFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    created: list["FakeFamily"] = []

    def __init__(self, name, description, kind):
        self.name, self.kind, self.metrics = name, kind, []
        FakeFamily.created.append(self)

    def Metric(self, labels, buckets=None):  # noqa: N802 - Triton's spelling
        metric = FakeMetric(labels, buckets)
        self.metrics.append(metric)
        return metric


class FakePbUtils:
    MetricFamily = FakeFamily


class FakeRequest:
    def __init__(self, params):
        self._params = params

    def parameters(self):
        return json.dumps(self._params)


def family(name):
    return next(f for f in FakeFamily.created if f.name == name)


def test_unknown_cameras_fold_into_other_and_the_label_set_stays_bounded():
    labels = CameraLabels([], max_cameras=10)
    values = {labels(f"cam-{i}") for i in range(100_000)}
    assert len(values) == 11 and "other" in values


def test_an_allow_list_keeps_only_listed_cameras():
    labels = CameraLabels.from_parameters({"cameras": "cam-1, cam-2", "max_cameras": "64"})
    assert [labels(c) for c in ("cam-1", "cam-2", "cam-3", "")] == ["cam-1", "cam-2", "other", "other"]


def test_request_parameters_are_read_and_bad_ones_ignored():
    assert request_parameters(FakeRequest({"camera_id": "cam-1"})) == {"camera_id": "cam-1"}

    class Broken:
        def parameters(self):
            return "{not json"

    assert request_parameters(Broken()) == {}


def series(name, **labels):
    """The value pushed to Triton for one series of a family (summed over flushes)."""
    found = [m for m in family(name).metrics if all(m.labels.get(k) == v for k, v in labels.items())]
    return sum(sum(m.values) for m in found)


def test_observations_wait_in_the_stub_and_flush_as_prometheus_histogram_series():
    FakeFamily.created = []
    now = [0.0]
    telemetry = StepTelemetry(FakePbUtils, "preprocess", "1", "preprocess", CameraLabels(["cam-1"]),
                              flush_interval_s=1.0, clock=lambda: now[0])
    camera = telemetry.camera(FakeRequest({"camera_id": "cam-1"}))
    telemetry.quality({"brightness": 0.12, "sharpness": 120.0}, camera)
    telemetry.quality({"brightness": 0.6}, camera)
    assert telemetry.flush() == 0  # not yet: a flush at most once a second
    assert series("sightline_frame_brightness_ratio_count") == 0
    now[0] = 1.5
    assert telemetry.flush() > 0
    labels = {"model": "preprocess", "version": "1", "stage": "preprocess", "camera": "cam-1"}
    assert series("sightline_frame_brightness_ratio_count", **labels) == 2
    assert series("sightline_frame_brightness_ratio_sum", **labels) == 0.72
    assert series("sightline_frame_brightness_ratio_bucket", le="0.1", **labels) == 0
    assert series("sightline_frame_brightness_ratio_bucket", le="0.15", **labels) == 1
    assert series("sightline_frame_brightness_ratio_bucket", le="0.6", **labels) == 2  # le is inclusive
    assert series("sightline_frame_brightness_ratio_bucket", le="+Inf", **labels) == 2
    # histograms are counters underneath; the one gauge is the expected-FPS configuration
    assert all(f.kind == "counter" for f in FakeFamily.created if f.name != "sightline_camera_expected_fps")
    # a second flush pushes only what is new
    telemetry.quality({"brightness": 0.95}, camera)
    telemetry.flush(force=True)
    assert series("sightline_frame_brightness_ratio_bucket", le="0.6", **labels) == 2
    assert series("sightline_frame_brightness_ratio_bucket", le="1.0", **labels) == 3


def test_rejections_and_batch_sizes_are_counted_with_bounded_labels():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "preprocess", "1", "preprocess", CameraLabels(["cam-1"]))
    telemetry.batch(4)
    telemetry.rejected("truncated", telemetry.camera(FakeRequest({"camera_id": "stranger"})))
    telemetry.rejected("truncated", telemetry.camera(FakeRequest({"camera_id": "stranger-2"})))
    telemetry.flush(force=True)
    assert series("sightline_rejected_requests_total", reason="truncated", camera="other") == 2
    assert series("sightline_step_batch_size_sum") == 4
    assert series("sightline_step_batch_size_bucket", le="4.0") == 1


def test_postprocess_records_detections_per_frame_confidence_and_class():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "postprocess", "1", "postprocess", CameraLabels())
    rows = np.array([[0, 0, 1, 1, 0.9, 0], [0, 0, 1, 1, 0.8, 0], [0, 0, 1, 1, 0.7, 2]], np.float32)
    telemetry.detections(rows, "cam-1")
    telemetry.detections(rows[:0], "cam-1")
    telemetry.flush(force=True)
    assert series("sightline_detections_per_frame_count") == 2
    assert series("sightline_detections_per_frame_sum") == 3
    assert series("sightline_detections_total", **{"class": "car"}) == 2
    assert series("sightline_detections_total", **{"class": "pedestrian"}) == 1
    assert series("sightline_detection_confidence_count") == 3


def test_metrics_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("SIGHTLINE_STEP_METRICS", "0")
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "postprocess", "1", "postprocess", CameraLabels())
    telemetry.batch(3)
    assert telemetry.flush(force=True) == 0


def test_expected_cameras_come_from_the_allow_list_with_their_frame_rate():
    labels = CameraLabels.from_parameters({"cameras": "cam-1=30, cam-2=12.5, cam-3"})
    assert labels.allow == ["cam-1", "cam-2", "cam-3"]
    assert labels.expected_fps == {"cam-1": 30.0, "cam-2": 12.5}
    with pytest.raises(ValueError, match="cam-1=fast.*must be a number"):
        parse_camera_list("cam-1=fast")
    with pytest.raises(ValueError, match="between 0.1 and 1000"):
        parse_camera_list("cam-1=0")


def test_expected_streams_publish_fps_and_zero_frames_so_a_silent_camera_has_a_series():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "preprocess", "1", "preprocess",
                              CameraLabels.from_parameters({"cameras": "cam-1=30,cam-2=10,cam-3"}))
    telemetry.expect_streams()
    assert series("sightline_camera_expected_fps", camera="cam-1") == 30
    assert series("sightline_camera_expected_fps", camera="cam-2") == 10
    assert {m.labels["camera"] for m in family("sightline_camera_frames_total").metrics} == {"cam-1", "cam-2"}
    assert family("sightline_camera_frames_total").metrics[1].values == [0.0]  # created at zero, not absent


def test_arrivals_count_per_camera_and_late_frames_by_capture_time():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "preprocess", "1", "preprocess", CameraLabels(["cam-1"]))
    now = 1_800_000_000.0
    fresh = FakeRequest({"camera_id": "cam-1", "capture_time_ms": int((now - 0.1) * 1000)})
    late = FakeRequest({"camera_id": "cam-1", "capture_time_ms": int((now - 5) * 1000)})
    unstamped = FakeRequest({"camera_id": "cam-1"})
    garbage = FakeRequest({"camera_id": "cam-1", "capture_time_ms": "yesterday"})
    for request in (fresh, late, unstamped, garbage):
        params = request_parameters(request)
        telemetry.frame_arrived(params, telemetry.camera_of(params), late_after_s=2.0, now_s=now)
    telemetry.frame_arrived({"camera_id": "cam-7"}, "other", 2.0, now_s=now)
    telemetry.flush(force=True)
    assert series("sightline_camera_frames_total", camera="cam-1") == 4
    assert series("sightline_camera_frames_late_total", camera="cam-1") == 1
    assert series("sightline_camera_frames_total", camera="other") == 1


def test_sequence_tracker_counts_gaps_once_and_forgives_reordering_and_restarts():
    tracker = SequenceTracker()
    sent = [tracker.observe("cam-1", s) for s in (1000, 1001, 1005, 1004, 1006)]
    assert sum(sent) == 7  # 1000..1006 were sent; 5 arrived, so 2 gaps (1002, 1003)
    assert tracker.observe("cam-1", 700) == 0  # a straggler long overdue was already counted as sent
    assert tracker.observe("cam-1", 1007) == 1  # ... and it does not move the sequence back
    assert tracker.observe("cam-1", 3) == 1  # a restarted camera starts a new sequence near zero
    assert tracker.observe("cam-1", 4) == 1
    assert tracker.observe("cam-1", 4 + 50_000) == 1  # an absurd jump is a reset, not 50k gaps
    assert tracker.observe("cam-2", None) == 1  # no frame_seq: the frame counts as itself
    assert tracker.observe("other", 10) == tracker.observe("other", 500) == 1  # folded ids never track


def _buckets(name, **labels):
    """{le: cumulative count} of one flushed histogram series (empty buckets are never written)."""
    from collections import defaultdict
    out = defaultdict(float)
    for metric in family(f"{name}_bucket").metrics:
        if all(metric.labels.get(k) == v for k, v in labels.items()):
            out[metric.labels["le"]] = sum(metric.values)
    return out


def test_four_stamps_give_the_request_and_every_stage_their_latency():
    FakeFamily.created.clear()
    telemetry = StepTelemetry(FakePbUtils, "postprocess", "1", "postprocess", CameraLabels(), flush_interval_s=0)
    ms = 1_000_000
    # preprocess 10 ms, model gap 50 ms, postprocess 70 ms: 130 ms end to end
    assert telemetry.latency(np.array([1_000 * ms, 1_010 * ms], np.int64), 1_060 * ms, 1_130 * ms)
    telemetry.flush(force=True)
    request = _buckets("sightline_request_duration_seconds", model="detector", stage="pipeline")
    assert request["0.12"] == 0 and request["0.15"] == 1  # over a 120 ms SLO threshold
    assert _buckets("sightline_stage_duration_seconds", stage="preprocess")["0.01"] == 1
    model = _buckets("sightline_stage_duration_seconds", stage="detector_model")
    assert model["0.03"] == 0 and model["0.05"] == 1
    assert _buckets("sightline_stage_duration_seconds", stage="postprocess")["0.075"] == 1


@pytest.mark.parametrize("stamps", [None, np.array([]), np.array([5]), np.array([0, 1]),
                                    np.array([30, 20]), np.array([10, 2_000_000_000]), np.array(["a", "b"])])
def test_stamps_that_are_missing_or_out_of_order_are_not_observed(stamps):
    FakeFamily.created.clear()
    telemetry = StepTelemetry(FakePbUtils, "postprocess", "1", "postprocess", CameraLabels(), flush_interval_s=0)
    assert not telemetry.latency(stamps, 1_000_000_000, 1_000_000_500)
    telemetry.flush(force=True)
    assert family("sightline_request_duration_seconds_count").metrics == []
