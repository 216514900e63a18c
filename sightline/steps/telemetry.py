"""Custom metrics of the Python steps, exported through Triton's own ``/metrics``.

Cheap, per-request signals live inside Triton (``pb_utils.MetricFamily``: COUNTER, GAUGE,
HISTOGRAM); statistical work happens in the sidecar on a sample. ``pb_utils`` is passed
in, so the logic is testable without a server. Labels: ``model``, ``version``, ``stage``,
``camera`` (+ ``reason`` / ``class`` where they apply). The camera label comes from an
allow-list; unknown ids fold into ``other``, with a hard cap on distinct values.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from sightline import conventions as names
from sightline import modelspec

DEFAULT_MAX_CAMERAS = 64


class CameraLabels:
    """Map a request's ``camera_id`` to a bounded label value.

    With an allow-list, only listed ids keep their name. Without one, the first
    ``max_cameras`` distinct ids do; every other id becomes ``other``.

    >>> labels = CameraLabels(["cam-1"], max_cameras=8)
    >>> labels("cam-1"), labels("cam-9"), labels(None)
    ('cam-1', 'other', 'other')
    """

    def __init__(self, allow: Iterable[str] = (), max_cameras: int = DEFAULT_MAX_CAMERAS) -> None:
        self.allow = [c for c in allow if c][:max_cameras]
        self.fixed = bool(self.allow)
        self.max_cameras = max_cameras
        self._seen = set(self.allow)

    def __call__(self, camera_id: Optional[str]) -> str:
        if not camera_id:
            return names.OTHER_CAMERA
        if camera_id in self._seen:
            return camera_id
        if not self.fixed and len(self._seen) < self.max_cameras:
            self._seen.add(camera_id)
            return camera_id
        return names.OTHER_CAMERA

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> "CameraLabels":
        allow = [c.strip() for c in params.get("cameras", "").split(",") if c.strip()]
        return cls(allow, int(params.get("max_cameras", DEFAULT_MAX_CAMERAS)))


def request_parameters(request: Any) -> Dict[str, Any]:
    """A Triton request's parameters (``camera_id`` ...) as a dict; {} when unreadable."""
    try:
        raw = request.parameters()
    except Exception:  # noqa: BLE001 - a request without parameters is still served
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw or {})
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def model_parameters(model_config: Mapping[str, Any]) -> Dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


_QUALITY = (
    ("brightness", names.FRAME_BRIGHTNESS, "Mean luma of the frame, 0..1.", names.RATIO_BUCKETS),
    ("contrast", names.FRAME_CONTRAST, "Standard deviation of luma, 0..1.", names.RATIO_BUCKETS),
    ("sharpness", names.FRAME_SHARPNESS, "Variance of the Laplacian of the downscaled grey frame.", names.SHARPNESS_BUCKETS),
    ("width", names.FRAME_WIDTH, "Frame width in pixels.", names.SIDE_BUCKETS),
    ("height", names.FRAME_HEIGHT, "Frame height in pixels.", names.SIDE_BUCKETS),
    ("pixels", names.FRAME_PIXELS, "Frame size in pixels (width x height).", names.PIXEL_BUCKETS),
    ("aspect_ratio", names.FRAME_ASPECT, "Frame width / height.", names.ASPECT_BUCKETS),
)


class StepTelemetry:
    """The custom metrics of one step. Metric handles are cached per label set."""

    def __init__(self, pb_utils: Any, model: str, version: str, stage: str, cameras: CameraLabels) -> None:
        self.pb = pb_utils
        self.base = {"model": model, "version": str(version), "stage": stage}
        self.cameras = cameras
        family = pb_utils.MetricFamily
        self._families: Dict[str, Tuple[Any, Optional[Sequence[float]]]] = {}
        self._handles: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Any] = {}

        def define(name: str, description: str, kind: Any, buckets: Optional[Sequence[float]] = None) -> None:
            self._families[name] = (family(name=name, description=description, kind=kind), buckets)

        define(names.STEP_BATCH_SIZE, "Requests per execute() call of this step.", family.HISTOGRAM,
               names.BATCH_SIZE_BUCKETS)
        define(names.REJECTED, "Requests refused by this step, by reason.", family.COUNTER)
        define(names.STEP_METRICS_SECONDS, "Seconds this step spent recording its own metrics.", family.COUNTER)
        if stage == modelspec.PREPROCESS_NAME:
            define(names.AUDIT_FRAMES, "Audit frames sampled, by outcome (sent or dropped).", family.COUNTER)
            for _, name, description, buckets in _QUALITY:
                define(name, description, family.HISTOGRAM, buckets)
        if stage == modelspec.POSTPROCESS_NAME:
            define(names.DETECTIONS_PER_FRAME, "Detections per frame after NMS.", family.HISTOGRAM, names.COUNT_BUCKETS)
            define(names.DETECTION_CONFIDENCE, "Confidence of each detection.", family.HISTOGRAM, names.CONFIDENCE_BUCKETS)
            define(names.DETECTIONS, "Detections, by class.", family.COUNTER)
            define(names.TAP_RECORDS, "Sampled tap records, by outcome (sent or dropped).", family.COUNTER)

    def _metric(self, name: str, **labels: str) -> Any:
        key = (name, tuple(sorted(labels.items())))
        handle = self._handles.get(key)
        if handle is None:
            family, buckets = self._families[name]
            all_labels = {**self.base, **labels}
            handle = family.Metric(labels=all_labels, buckets=list(buckets)) if buckets else family.Metric(labels=all_labels)
            self._handles[key] = handle
        return handle

    def camera(self, request: Any) -> str:
        return self.cameras(str(request_parameters(request).get("camera_id", "") or ""))

    def batch(self, size: int) -> None:
        self._metric(names.STEP_BATCH_SIZE).observe(float(size))

    def rejected(self, reason: str, camera: str) -> None:
        self._metric(names.REJECTED, camera=camera, reason=reason).increment(1.0)

    def quality(self, features: Mapping[str, float], camera: str) -> None:
        for key, name, _, _ in _QUALITY:
            if key in features:
                self._metric(name, camera=camera).observe(float(features[key]))

    def detections(self, rows: np.ndarray, camera: str) -> None:
        """``rows``: one frame's [K, 6] detections, padding already removed."""
        self._metric(names.DETECTIONS_PER_FRAME, camera=camera).observe(float(len(rows)))
        if len(rows) == 0:
            return
        confidence = self._metric(names.DETECTION_CONFIDENCE, camera=camera)
        for score in rows[:, 4]:
            confidence.observe(float(score))
        classes, counts = np.unique(rows[:, 5].astype(np.int64), return_counts=True)
        for cls, count in zip(classes, counts):
            label = modelspec.CLASS_NAMES[cls] if 0 <= cls < modelspec.NUM_CLASSES else "unknown"
            self._metric(names.DETECTIONS, camera=camera, **{"class": label}).increment(float(count))

    def audit(self, outcome: str) -> None:
        self._metric(names.AUDIT_FRAMES, outcome=outcome).increment(1.0)

    def tap(self, outcome: str) -> None:
        self._metric(names.TAP_RECORDS, outcome=outcome).increment(1.0)

    def cost(self, started: float) -> None:
        self._metric(names.STEP_METRICS_SECONDS).increment(time.perf_counter() - started)
