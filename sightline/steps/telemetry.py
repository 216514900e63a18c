"""Custom metrics of the Python steps, exported through Triton's own ``/metrics``.

Cheap, per-request signals live inside Triton (``pb_utils.MetricFamily``: COUNTER, GAUGE,
HISTOGRAM); statistical work happens in the sidecar on a sample. ``pb_utils`` is passed
in, so the logic is testable without a server. Labels: ``model``, ``version``, ``stage``,
``camera`` (+ ``reason`` / ``class`` where they apply). The camera label comes from an
allow-list; unknown ids fold into ``other``, with a hard cap on distinct values.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
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


def le_label(bound: float) -> str:
    """A bucket bound as Prometheus writes it: 0.05, 1.0, 100.0, +Inf."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Counter:
    """A counter whose increments wait in the stub until the next flush."""

    def __init__(self, lock: threading.Lock) -> None:
        self.pending = 0.0
        self._lock = lock

    def increment(self, value: float) -> None:
        with self._lock:
            self.pending += value


class _Histogram:
    """Bucket counts kept in the stub; flushed as cumulative ``_bucket``/``_sum``/``_count``."""

    def __init__(self, bounds: Sequence[float], lock: threading.Lock) -> None:
        self.bounds = [float(b) for b in bounds]
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self._lock = lock

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.sum += value


class StepTelemetry:
    """The custom metrics of one step.

    Every ``pb_utils`` metric call is a round trip from the stub to the Triton process
    (tens of microseconds), which per observation cost a fifth of the pipeline's
    throughput. So observations accumulate in the stub and :meth:`flush` pushes the deltas
    at most once per ``flush_interval_s``. Histograms are therefore exported as three
    COUNTER families, ``<name>_bucket{le=...}``, ``<name>_sum`` and ``<name>_count``: the
    exact series a Prometheus histogram has, so ``histogram_quantile`` works unchanged.
    """

    def __init__(self, pb_utils: Any, model: str, version: str, stage: str, cameras: CameraLabels,
                 flush_interval_s: Optional[float] = None, clock: Any = time.monotonic) -> None:
        self.pb = pb_utils
        # SIGHTLINE_STEP_METRICS=0 turns the custom metrics off (the overhead benchmark's baseline).
        self.enabled = os.environ.get("SIGHTLINE_STEP_METRICS", "1") != "0"
        self.flush_interval_s = (float(os.environ.get("SIGHTLINE_STEP_METRICS_FLUSH_S", "1.0"))
                                 if flush_interval_s is None else flush_interval_s)
        self._clock = clock
        self._last_flush = clock()
        self.base = {"model": model, "version": str(version), "stage": stage}
        self.cameras = cameras
        family = pb_utils.MetricFamily
        self._families: Dict[str, Any] = {}
        self._buckets: Dict[str, Sequence[float]] = {}
        self._series: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: Optional[threading.Thread] = None
        self._handles: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Any] = {}

        def counter(name: str, description: str) -> None:
            self._families[name] = family(name=name, description=description, kind=family.COUNTER)

        def histogram(name: str, description: str, buckets: Sequence[float]) -> None:
            self._buckets[name] = buckets
            counter(f"{name}_bucket", f"{description} Cumulative count of observations <= le.")
            counter(f"{name}_sum", f"{description} Sum of observations.")
            counter(f"{name}_count", f"{description} Count of observations.")

        histogram(names.STEP_BATCH_SIZE, "Requests per execute() call of this step.", names.BATCH_SIZE_BUCKETS)
        counter(names.REJECTED, "Requests refused by this step, by reason.")
        counter(names.STEP_METRICS_SECONDS, "Seconds this step spent recording its own metrics.")
        if stage == modelspec.PREPROCESS_NAME:
            counter(names.AUDIT_FRAMES, "Audit frames sampled, by outcome (sent or dropped).")
            for _, name, description, buckets in _QUALITY:
                histogram(name, description, buckets)
        if stage == modelspec.POSTPROCESS_NAME:
            histogram(names.DETECTIONS_PER_FRAME, "Detections per frame after NMS.", names.COUNT_BUCKETS)
            histogram(names.DETECTION_CONFIDENCE, "Confidence of each detection.", names.CONFIDENCE_BUCKETS)
            counter(names.DETECTIONS, "Detections, by class.")
            counter(names.TAP_RECORDS, "Sampled tap records, by outcome (sent or dropped).")

    def start_background_flush(self) -> None:
        """Flush from a daemon thread too, so an idle step's last observations still arrive."""
        if self._flusher is None and self.enabled:
            self._flusher = threading.Thread(target=self._flush_loop, name="sightline-metrics", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - metrics must never take the step down
                pass

    def close(self) -> None:
        self._stop.set()
        self.flush(force=True)

    def _metric(self, name: str, **labels: str) -> Any:
        key = (name, tuple(sorted(labels.items())))
        series = self._series.get(key)
        if series is None:
            series = _Histogram(self._buckets[name], self._lock) if name in self._buckets else _Counter(self._lock)
            with self._lock:
                self._series[key] = series
        return series

    def _handle(self, family_name: str, labels: Tuple[Tuple[str, str], ...]) -> Any:
        key = (family_name, labels)
        handle = self._handles.get(key)
        if handle is None:
            handle = self._families[family_name].Metric(labels={**self.base, **dict(labels)})
            self._handles[key] = handle
        return handle

    def flush(self, force: bool = False) -> int:
        """Push what accumulated since the last flush; returns the number of metric calls."""
        with self._lock:
            now = self._clock()
            if not self.enabled or (not force and now - self._last_flush < self.flush_interval_s):
                return 0
            self._last_flush = now
            return self._flush_locked()

    def _flush_locked(self) -> int:
        calls = 0
        for (name, labels), series in self._series.items():
            if isinstance(series, _Counter):
                if series.pending:
                    self._handle(name, labels).increment(series.pending)
                    series.pending = 0.0
                    calls += 1
                continue
            total = sum(series.counts)
            if not total:
                continue
            cumulative = 0
            for bound, count in zip([*series.bounds, float("inf")], series.counts):
                cumulative += count
                if cumulative:
                    self._handle(f"{name}_bucket", labels + (("le", le_label(bound)),)).increment(float(cumulative))
                    calls += 1
            self._handle(f"{name}_sum", labels).increment(series.sum)
            self._handle(f"{name}_count", labels).increment(float(total))
            calls += 2
            series.counts = [0] * len(series.counts)
            series.sum = 0.0
        return calls

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
