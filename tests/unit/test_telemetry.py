"""Step metrics: bounded camera labels and the right families, through a fake pb_utils."""

from __future__ import annotations

import json

import numpy as np

from sightline.steps.telemetry import CameraLabels, StepTelemetry, request_parameters


class FakeMetric:
    def __init__(self, labels, buckets=None):
        self.labels, self.buckets, self.values = labels, buckets, []

    def observe(self, value):
        self.values.append(value)

    def increment(self, value):
        self.values.append(value)


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


def test_preprocess_records_quality_rejections_and_batch_size():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "preprocess", "1", "preprocess", CameraLabels(["cam-1"]))
    camera = telemetry.camera(FakeRequest({"camera_id": "cam-1"}))
    telemetry.batch(4)
    telemetry.quality({"brightness": 0.4, "sharpness": 120.0, "width": 640.0}, camera)
    telemetry.quality({"brightness": 0.6}, camera)
    telemetry.rejected("truncated", telemetry.camera(FakeRequest({"camera_id": "stranger"})))
    brightness = family("sightline_frame_brightness_ratio")
    assert brightness.kind == "histogram" and len(brightness.metrics) == 1  # handle reused
    assert brightness.metrics[0].values == [0.4, 0.6]
    assert brightness.metrics[0].labels == {"model": "preprocess", "version": "1", "stage": "preprocess", "camera": "cam-1"}
    rejected = family("sightline_rejected_requests_total").metrics[0]
    assert rejected.labels["reason"] == "truncated" and rejected.labels["camera"] == "other"
    assert family("sightline_step_batch_size").metrics[0].values == [4.0]


def test_postprocess_records_detections_per_frame_confidence_and_class():
    FakeFamily.created = []
    telemetry = StepTelemetry(FakePbUtils, "postprocess", "1", "postprocess", CameraLabels())
    rows = np.array([[0, 0, 1, 1, 0.9, 0], [0, 0, 1, 1, 0.8, 0], [0, 0, 1, 1, 0.7, 2]], np.float32)
    telemetry.detections(rows, "cam-1")
    telemetry.detections(rows[:0], "cam-1")
    assert family("sightline_detections_per_frame").metrics[0].values == [3.0, 0.0]
    by_class = {m.labels["class"]: m.values for m in family("sightline_detections_total").metrics}
    assert by_class == {"car": [2.0], "pedestrian": [1.0]}
    assert len(family("sightline_detection_confidence").metrics[0].values) == 3
