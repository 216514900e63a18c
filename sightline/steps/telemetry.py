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
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from sightline import conventions as names
from sightline import modelspec, procfs

DEFAULT_MAX_CAMERAS = 64


class CameraLabels:
    """Map a request's ``camera_id`` to a bounded label value.

    With an allow-list, only listed ids keep their name. Without one, the first
    ``max_cameras`` distinct ids do; every other id becomes ``other``. An allow-list entry
    may carry the camera's expected frame rate, ``cam-1=30``: those cameras are *expected*
    streams, watched for silence and gaps.

    >>> labels = CameraLabels(["cam-1"], max_cameras=8)
    >>> labels("cam-1"), labels("cam-9"), labels(None), labels("all")
    ('cam-1', 'other', 'other', 'other')
    >>> CameraLabels.from_parameters({"cameras": "cam-1=30, cam-2"}).expected_fps
    {'cam-1': 30.0}
    """

    def __init__(self, allow: Iterable[str] = (), max_cameras: int = DEFAULT_MAX_CAMERAS,
                 expected_fps: Optional[Mapping[str, float]] = None) -> None:
        self.allow = [c for c in allow if c and c != names.ALL_CAMERAS][:max_cameras]  # "all" is the pooled window
        self.fixed = bool(self.allow)
        self.max_cameras = max_cameras
        self._seen = set(self.allow)
        self.expected_fps = {c: float(f) for c, f in (expected_fps or {}).items() if c in self._seen}

    def __call__(self, camera_id: Optional[str]) -> str:
        if not camera_id or camera_id == names.ALL_CAMERAS:
            return names.OTHER_CAMERA
        if camera_id in self._seen:
            return camera_id
        if not self.fixed and len(self._seen) < self.max_cameras:
            self._seen.add(camera_id)
            return camera_id
        return names.OTHER_CAMERA

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> "CameraLabels":
        """``cameras``: ``"cam-1=30,cam-2=30,cam-3"``; a bad rate is a clear error at load time."""
        allow, fps = parse_camera_list(params.get("cameras", ""))
        return cls(allow, int(params.get("max_cameras", DEFAULT_MAX_CAMERAS)), fps)


def parse_camera_list(text: str) -> Tuple[list, Dict[str, float]]:
    """``"cam-1=30,cam-2"`` -> (["cam-1", "cam-2"], {"cam-1": 30.0})."""
    allow: list = []
    fps: Dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        camera, sep, rate = (x.strip() for x in part.partition("="))
        if sep:
            try:
                value = float(rate)
            except ValueError:
                raise ValueError(f"cameras: {part!r}: the expected frame rate must be a number, like {camera}=30") from None
            if not 0.1 <= value <= 1000:  # silence is judged over a minute: slower cameras are always "silent"
                raise ValueError(f"cameras: {part!r}: the expected frame rate must be between 0.1 and 1000")
            fps[camera] = value
        if camera:
            allow.append(camera)
    return allow, fps


# A frame_seq that jumps forward by more than MAX_SEQUENCE_JUMP starts a new sequence (a
# reset counter), not a burst of gaps; so does one that falls back to near zero (a
# restarted camera). Any other frame behind the highest seen is a straggler: it was
# already counted as sent when the sequence moved past it.
MAX_SEQUENCE_JUMP = 10_000
RESTART_BELOW = 256


class SequenceTracker:
    """Frames a camera sent, from the ``frame_seq`` it stamps on each frame.

    ``observe`` returns how far the camera's sequence advanced (the frames it sent since
    the last one seen). Summed, that is "frames sent"; frames processed are counted apart,
    so gaps = sent - processed - refused, and a frame that arrives out of order (behind the
    highest sequence seen) costs nothing twice. One tracker must see every frame of a
    camera, so it lives in a single-instance step.

    >>> t = SequenceTracker()
    >>> [t.observe("cam-1", s) for s in (1000, 1001, 1004, 1003, 1005)]
    [1, 1, 3, 0, 1]
    """

    def __init__(self) -> None:
        self._highest: Dict[str, int] = {}

    def observe(self, camera: str, seq: Optional[int]) -> int:
        if seq is None or camera == names.OTHER_CAMERA:
            return 1  # no sequence (or ids folded together): the frame counts as itself
        highest = self._highest.get(camera)
        if highest is None or seq - highest > MAX_SEQUENCE_JUMP or (seq < highest and seq < RESTART_BELOW < highest):
            self._highest[camera] = seq
            return 1
        if seq > highest:
            self._highest[camera] = seq
            return seq - highest
        return 0


def int_parameter(params: Mapping[str, Any], key: str) -> Optional[int]:
    """An integer request parameter, or None when absent or unreadable (never an error:
    a frame without stream metadata is still served)."""
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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


# The metric of each quality feature; the features and their order are names.QUALITY_FIELDS
# (a feature without a metric here fails at import).
_QUALITY_METRICS = {
    "brightness": (names.FRAME_BRIGHTNESS, "Mean luma of the frame, 0..1.", names.RATIO_BUCKETS),
    "contrast": (names.FRAME_CONTRAST, "Standard deviation of luma, 0..1.", names.RATIO_BUCKETS),
    "sharpness": (names.FRAME_SHARPNESS, "Variance of the Laplacian of the downscaled grey frame.", names.SHARPNESS_BUCKETS),
    "width": (names.FRAME_WIDTH, "Frame width in pixels.", names.SIDE_BUCKETS),
    "height": (names.FRAME_HEIGHT, "Frame height in pixels.", names.SIDE_BUCKETS),
    "pixels": (names.FRAME_PIXELS, "Frame size in pixels (width x height).", names.PIXEL_BUCKETS),
    "aspect_ratio": (names.FRAME_ASPECT, "Frame width / height.", names.ASPECT_BUCKETS),
}
_QUALITY = tuple((field, *_QUALITY_METRICS[field]) for field in names.QUALITY_FIELDS)


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


class ProcessReport:
    """This stub's resident memory (heap and shared apart) and CPU time, and with ``server``
    those of tritonserver, its parent, as metrics in Triton's ``/metrics``.

    A step reads its own ``/proc/self`` (and its parent's, the same user), so no other
    container needs to see Triton's processes: the pod does not share its process namespace
    and the monitor cannot read Triton's command line. Reading costs tens of microseconds
    and runs on the flush thread, once a second, never on a request.
    """

    def __init__(self, pb_utils: Any, process: str, worker: str, server: bool = False,
                 proc: Path = Path("/proc")) -> None:
        family = pb_utils.MetricFamily
        self.proc = proc
        self.memory = family(name=names.PROCESS_MEMORY, description="Resident memory of Triton's processes by kind: "
                             "heap (RssAnon) or shared (RssShmem, the Python backend's shared-memory pools).",
                             kind=family.GAUGE)
        self.resident = family(name=names.PROCESS_RESIDENT_MEMORY, description="Resident memory of Triton's processes.",
                               kind=family.GAUGE)
        self.cpu = family(name=names.PROCESS_CPU_SECONDS, description="CPU time of Triton's processes.",
                          kind=family.COUNTER)
        self.count = family(name=names.PROCESS_COUNT, description="Running Triton processes of this kind.",
                            kind=family.GAUGE)
        self.targets = [("self", process, worker)]
        if server and procfs.classify_pid(os.getppid(), proc) == "tritonserver":
            self.targets.append((str(os.getppid()), "tritonserver", "tritonserver"))
        self._handles: Dict[str, Tuple[Any, ...]] = {}
        self._cpu_reported: Dict[str, float] = {}

    def update(self) -> None:
        for pid, process, worker in self.targets:
            try:
                memory = procfs.memory_of(pid, self.proc)
                cpu = procfs.cpu_seconds_of(pid, self.proc)
            except (OSError, ValueError, IndexError):
                continue  # the parent went away: the stub is about to
            handles = self._handles.get(pid)
            if handles is None:
                labels = {"process": process, "worker": worker}
                handles = (self.memory.Metric(labels={**labels, "kind": "heap"}),
                           self.memory.Metric(labels={**labels, "kind": "shared"}),
                           self.resident.Metric(labels=labels), self.cpu.Metric(labels=labels),
                           self.count.Metric(labels=labels))
                handles[4].set(1.0)
                self._handles[pid] = handles
            heap, shared, resident, cpu_counter, _ = handles
            heap.set(float(memory["RssAnon"]))
            shared.set(float(memory["RssShmem"]))
            resident.set(float(memory["VmRSS"]))
            added = cpu - self._cpu_reported.get(pid, 0.0)
            if added > 0:
                cpu_counter.increment(added)
                self._cpu_reported[pid] = cpu


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
        self.process_report: Optional[ProcessReport] = None

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
            counter(names.AUDIT_FRAMES, "Audit frames sampled, by outcome (sent: queued for redaction; dropped: "
                    "the queue was full; lost: queued, then not sent).")
            counter(names.CAMERA_FRAMES, "Frames that reached the server, per camera (refused ones too).")
            counter(names.CAMERA_FRAMES_LATE, "Frames that arrived more than late_after_s after capture, per camera.")
            self._families[names.CAMERA_EXPECTED_FPS] = family(
                name=names.CAMERA_EXPECTED_FPS, description="Expected frames per second, per camera (allow-list).",
                kind=family.GAUGE)
            for _, name, description, buckets in _QUALITY:
                histogram(name, description, buckets)
        if stage == modelspec.POSTPROCESS_NAME:
            histogram(names.REQUEST_DURATION, "Time from the start of preprocess to the end of postprocess, "
                      "every request (the steps' own CLOCK_MONOTONIC stamps).", names.LATENCY_BUCKETS_SECONDS)
            histogram(names.STAGE_DURATION, "Time in one stage, every request; detector_model is the gap from "
                      "preprocess's end to postprocess's start (model queue and compute, hand-offs).",
                      names.LATENCY_BUCKETS_SECONDS)
            histogram(names.DETECTIONS_PER_FRAME, "Detections per frame after NMS.", names.COUNT_BUCKETS)
            histogram(names.DETECTION_CONFIDENCE, "Confidence of each detection.", names.CONFIDENCE_BUCKETS)
            counter(names.DETECTIONS, "Detections, by class.")
            counter(names.TAP_RECORDS, "Sampled tap records, by outcome (sent or dropped).")
            counter(names.CAMERA_FRAMES_SENT, "Frames each camera sent, from its frame_seq (sent - processed - refused = gaps).")
        if stage in (modelspec.PREPROCESS_NAME, modelspec.POSTPROCESS_NAME):
            counter(names.CAMERA_FRAMES_REFUSED, "Numbered frames this step refused, counted once the camera's frame_seq "
                    "moved past them in postprocess (sent - processed - refused = gaps).")
        # Refused frames for gap accounting (see frame_arrived): the request in hand, the
        # refusals of each camera not yet matched by postprocess's sequence, whether each
        # camera's latest frame here was refused, and the cameras whose series exist.
        self._arrival: Optional[Tuple[str, Optional[int]]] = None
        self._refusals_held: Dict[str, int] = {}
        self._latest_refused: Dict[str, bool] = {}
        self._refused_published: set = set()

    def start_background_flush(self, worker: str = "", report_server: bool = False) -> None:
        """Flush from a daemon thread too, so an idle step's last observations still arrive.
        The same thread reports this stub's memory and CPU time (``worker``: the model
        instance's name), and with ``report_server`` tritonserver's too (one step does)."""
        if self._flusher is None and self.enabled:
            try:
                self.process_report = ProcessReport(self.pb, f"stub:{self.base['model']}", worker or self.base["model"],
                                                    report_server)
                self.process_report.update()
            except Exception:  # noqa: BLE001 - a /proc without these files must not stop the step
                self.process_report = None
            self._flusher = threading.Thread(target=self._flush_loop, name="sightline-metrics", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
                if self.process_report is not None:
                    self.process_report.update()
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
        if self._refusals_held and threading.current_thread() is not self._flusher:
            self._settle_refusals()
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
        return self.camera_of(request_parameters(request))

    def camera_of(self, params: Mapping[str, Any]) -> str:
        """The camera label from already-read request parameters (read them once per request)."""
        return self.cameras(str(params.get(names.PARAM_CAMERA, "") or ""))

    def expect_streams(self) -> None:
        """Publish each expected camera's FPS and a zero frame count, so a camera that never
        sends is visible as silent rather than absent. Only allow-listed cameras get series."""
        if not self.enabled:
            return
        for camera, fps in self.cameras.expected_fps.items():
            self._handle(names.CAMERA_EXPECTED_FPS, (("camera", camera),)).set(fps)
            self._handle(names.CAMERA_FRAMES, (("camera", camera),)).increment(0.0)
        for camera in self.cameras.allow:
            self._publish_refused(camera)

    def frame_arrived(self, params: Mapping[str, Any], camera: str, late_after_s: float,
                      now_s: Optional[float] = None) -> None:
        """Count a frame on arrival; late when its ``capture_time_ms`` is ``late_after_s`` old.

        Also settles the refusals held for gap accounting: when this camera's previous
        frame here was served, the refusals before it are counted now (see :meth:`rejected`).
        """
        self._metric(names.CAMERA_FRAMES, camera=camera).increment(1.0)
        if self.enabled and camera != names.OTHER_CAMERA:
            self._publish_refused(camera)
            self._settle_refusals()
            self._latest_refused[camera] = False
        self._arrival = (camera, int_parameter(params, names.PARAM_FRAME_SEQ))
        captured_ms = int_parameter(params, names.PARAM_CAPTURE_TIME_MS)
        if captured_ms is not None:
            age = (time.time() if now_s is None else now_s) - captured_ms / 1000.0
            if age > late_after_s:
                self._metric(names.CAMERA_FRAMES_LATE, camera=camera).increment(1.0)

    def frames_sent(self, camera: str, count: int) -> None:
        if count:
            self._metric(names.CAMERA_FRAMES_SENT, camera=camera).increment(float(count))

    def latency(self, stamps: Optional[np.ndarray], started_ns: int, finished_ns: int,
                ensemble: str = modelspec.ENSEMBLE_NAME) -> bool:
        """Observe one request's latency from four monotonic stamps: preprocess start and end
        (``stamps``, the TIMING tensor's first row), this step's start and end.

        Returns False (and observes nothing) when the stamps are missing or out of order:
        a clock cannot run backwards on one host, so such stamps were not ours.

        >>> class Family:
        ...     COUNTER = GAUGE = 0
        ...     def __init__(self, **kw): pass
        >>> class Pb: MetricFamily = Family
        >>> t = StepTelemetry(Pb, "postprocess", "1", "postprocess", CameraLabels())
        >>> t.latency(np.array([1_000_000, 6_000_000]), 40_000_000, 46_000_000)
        True
        >>> t._metric(names.REQUEST_DURATION, model="detector", stage="pipeline").sum
        0.045
        >>> t.latency(np.array([9, 5]), 40, 45)
        False
        """
        try:
            pre_start, pre_end = int(stamps[0]), int(stamps[1])  # type: ignore[index]
        except (TypeError, IndexError, ValueError, OverflowError):
            return False
        if not 0 < pre_start <= pre_end <= started_ns <= finished_ns:
            return False
        self._metric(names.REQUEST_DURATION, model=ensemble, stage=names.PIPELINE_STAGE).observe(
            (finished_ns - pre_start) / 1e9)
        for stage, begin, end in ((modelspec.PREPROCESS_NAME, pre_start, pre_end),
                                  (modelspec.MODEL_NAME, pre_end, started_ns),
                                  (modelspec.POSTPROCESS_NAME, started_ns, finished_ns)):
            self._metric(names.STAGE_DURATION, model=stage, stage=stage).observe((end - begin) / 1e9)
        return True

    def batch(self, size: int) -> None:
        self._metric(names.STEP_BATCH_SIZE).observe(float(size))

    def rejected(self, reason: str, camera: str) -> None:
        """Count a refused request, and the frame for gap accounting.

        Postprocess (one step with the sequence: sent - processed - refused = gaps) counts
        a frame it refuses at once. A frame preprocess refused never reaches postprocess,
        whose sequence moves past it only when the camera's next frame is served there:
        after a run of refused frames the whole run lands in "sent" at that moment. So
        preprocess holds a numbered frame's refusal and counts it when this camera's next
        frame here is served (at its next arrival), not when it was refused: otherwise
        the refusals and the jump in "sent" fall into different rate windows, and every
        run of bad frames longer than a few seconds looks like gaps for one window.
        """
        self._metric(names.REJECTED, camera=camera, reason=reason).increment(1.0)
        if camera == names.OTHER_CAMERA:
            return
        if self.base["stage"] == modelspec.POSTPROCESS_NAME:
            self._metric(names.CAMERA_FRAMES_REFUSED, camera=camera).increment(1.0)
            return
        self._latest_refused[camera] = True
        arrival = self._arrival
        if arrival is not None and arrival[0] == camera and arrival[1] is not None:
            # a frame without frame_seq never moves the sequence: it is not a gap either way
            self._refusals_held[camera] = self._refusals_held.get(camera, 0) + 1

    def _settle_refusals(self) -> None:
        """Count the held refusals of every camera whose latest frame here was served: the
        sequence in postprocess has moved past them with that frame. Runs on the thread
        that calls the step (its arrivals and the flush at the end of each execute), never
        on the background flusher, which could see a request between its arrival and its
        refusal."""
        for camera in [c for c, held in self._refusals_held.items() if held and self._latest_refused.get(c) is False]:
            self._metric(names.CAMERA_FRAMES_REFUSED, camera=camera).increment(float(self._refusals_held.pop(camera)))

    def _publish_refused(self, camera: str) -> None:
        """Create the camera's refused-frame series at zero before its first refusal: a
        counter that first appears holding N loses those N to ``rate()``, and here they
        would read as N gaps."""
        if camera in self._refused_published:
            return
        self._refused_published.add(camera)
        self._handle(names.CAMERA_FRAMES_REFUSED, (("camera", camera),)).increment(0.0)

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

    def audit(self, outcome: str, frames: int = 1) -> None:
        self._metric(names.AUDIT_FRAMES, outcome=outcome).increment(float(frames))

    def tap(self, outcome: str) -> None:
        self._metric(names.TAP_RECORDS, outcome=outcome).increment(1.0)

    def cost(self, started: float) -> None:
        self._metric(names.STEP_METRICS_SECONDS).increment(time.perf_counter() - started)
