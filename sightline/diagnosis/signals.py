"""Signals of ``sightline diagnose``: each one PromQL expression, read now and over a baseline."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from sightline import conventions as names
from sightline.boards_cli import Prometheus
from sightline.durations import parse_seconds

# -- windows -----------------------------------------------------------------------------------

parse_duration = parse_seconds  # ``"30m"`` -> 1800.0; a bare number is seconds


def _window(seconds: float) -> str:
    return f"{max(1, int(round(seconds)))}s"


# -- signals -----------------------------------------------------------------------------------

DETECTOR = 'model="detector"'
STEPS = 'model=~"preprocess|detector_model|postprocess"'
# Failed requests of the ensemble, each counted once: the availability SLI's failure query,
# so diagnose's failure rates agree with the SLO it explains. Triton counts every request that
# fails inside the ensemble twice, both times under reason="OTHER" (when the ensemble answers
# with the error and when it releases the request; measured on 2.51), hence the halving.
FAILURES = f'(sum(rate({names.NV_REQUEST_FAILURE}{{{DETECTOR}}}[{{w}}])) / 2)'
# Per step, the failures Triton itself counts: a crashed stub ("Stub process ... is not
# healthy"), a backend or model error. A Python step's refusal is a response, not a failure
# of the step: Triton counts it on the ensemble only.
STEP_FAILURES = f'sum by (model) (rate({names.NV_REQUEST_FAILURE}{{{STEPS}}}[{{w}}]))'
# Every request that reached the ensemble: served, or failed (once).
REQUESTS = f'(sum(rate({names.NV_REQUEST_SUCCESS}{{{DETECTOR}}}[{{w}}])) + ({FAILURES} or vector(0)))'
# Refusal reasons a step gives when it fails on valid input; every other reason refuses the input.
SERVER_REASONS = frozenset({"internal"})

# Embedding drift per camera (the pooled window is camera="all"; cameras outside the allow-list,
# camera="other", are judged only inside it): the distance ratio over the limit the monitor
# calibrated for it, sightline_drift_distance_limit{camera}, as the drift SLO compares them.
# A monitor that exports no limit (older than the calibration) is judged by the fixed 1.5x
# threshold it used to be, for that camera only.
DRIFT_FIXED_LIMIT = 1.5
DRIFT_LIMIT_METRIC = names.DRIFT_DISTANCE_LIMIT
DRIFT_RATIO = f'avg_over_time({names.DRIFT_DISTANCE_RATIO}{{camera!="other"}}[{{w}}])'
DRIFT_LIMIT = f'avg_over_time({DRIFT_LIMIT_METRIC}{{camera!="other"}}[{{w}}])'
DRIFT = (f"max by (camera) ({DRIFT_RATIO} / {DRIFT_LIMIT}) "
         f"or max by (camera) ({DRIFT_RATIO}) / {DRIFT_FIXED_LIMIT:g}")
# Numbered frames that never arrived: camera:sightline_camera_frame_gaps:ratio_5m (the
# SightlineCameraFrameGaps alert) over the window. Refused frames were delivered; the steps
# count them (sightline_camera_frames_refused_total) when postprocess's sequence moves past
# them, so they land in the same window as the jump in "sent" they cause. No sample while a
# camera sends nothing (silence, not gaps).
_SENT = f'max by (camera) (rate({names.CAMERA_FRAMES_SENT}{{camera!="other"}}[{{w}}]))'
CAMERA_GAPS = (f"clamp_min({_SENT} "
               f'- sum by (camera) (rate({names.DETECTIONS_PER_FRAME}_count{{camera!="other"}}[{{w}}])) '
               f'- (sum by (camera) (rate({names.CAMERA_FRAMES_REFUSED}{{camera!="other"}}[{{w}}])) '
               f"or 0 * {_SENT}), 0) "
               f"/ ({_SENT} > 0)")


@dataclass(frozen=True)
class Signal:
    key: str
    title: str
    expr: str  # PromQL with {w} for the window
    unit: str = ""
    by: Optional[str] = None  # the label that names each series, if several
    halves: bool = False  # the smallest over the window and its recent half and quarter (a change that holds)

    def over(self, seconds: float) -> str:
        return self.expr.replace("{w}", _window(seconds))


SIGNALS: Tuple[Signal, ...] = (
    Signal("rate", "Request rate", REQUESTS, "req/s"),
    Signal("error_ratio", "Failed share of requests", f"{FAILURES} / {REQUESTS}", "ratio"),
    Signal("failures", "Failed requests", FAILURES, "req/s"),
    Signal("errors_by_reason", "Refused requests by reason", f"sum by (reason) (rate({names.REJECTED}[{{w}}]))",
           "req/s", by="reason"),
    Signal("step_failures", "Failed requests by step", STEP_FAILURES, "req/s", by="model"),
    Signal("refused_by_camera", "Refused input by camera",
           f'sum by (camera) (rate({names.REJECTED}{{reason!="internal"}}[{{w}}]))', "req/s", by="camera"),
    Signal("camera_refused", "Refused share of each camera's frames",
           f'sum by (camera) (rate({names.REJECTED}{{reason!="internal"}}[{{w}}])) '
           f'/ sum by (camera) (rate({names.CAMERA_FRAMES}[{{w}}]))', "ratio", by="camera"),
    Signal("p95", "End-to-end latency P95",
           f"histogram_quantile(0.95, sum by (le) (rate({names.REQUEST_DURATION}_bucket[{{w}}])))", "s"),
    Signal("stage_p95", "Stage latency P95",
           f"histogram_quantile(0.95, sum by (stage, le) (rate({names.STAGE_DURATION}_bucket[{{w}}])))", "s",
           by="stage"),
    # Triton keeps per-model cumulative queue time: an exact mean over every request.
    Signal("queue_wait", "Mean queue wait",
           f'sum by (stage) (label_replace(rate({names.NV_QUEUE_DURATION_US}{{model=~"preprocess|detector_model|postprocess"}}[{{w}}]), '
           f'"stage", "$1", "model", "(.*)")) / sum by (stage) (label_replace(rate({names.NV_REQUEST_SUCCESS}'
           '{model=~"preprocess|detector_model|postprocess"}[{w}]), "stage", "$1", "model", "(.*)")) / 1e6', "s",
           by="stage"),
    Signal("model_rate", "Requests reaching detector_model", f'sum(rate({names.NV_INFERENCE_COUNT}{{model="detector_model"}}[{{w}}]))',
           "req/s"),
    Signal("batch", "Average batch size of detector_model",
           f'sum(rate({names.NV_INFERENCE_COUNT}{{model="detector_model"}}[{{w}}])) '
           f'/ sum(rate({names.NV_EXEC_COUNT}{{model="detector_model"}}[{{w}}]))', "requests"),
    Signal("cpu", "CPU use by process", f"sum by (process) (rate({names.PROCESS_CPU_SECONDS}[{{w}}]))", "cores",
           by="process"),
    Signal("gpu", "GPU utilisation", f"avg(avg_over_time({names.GPU_UTILIZATION}[{{w}}]))", "ratio"),
    Signal("pixels", "Mean frame size",
           f"sum(rate({names.FRAME_PIXELS}_sum[{{w}}])) / sum(rate({names.FRAME_PIXELS}_count[{{w}}]))",
           "pixels"),
    Signal("brightness", "Mean brightness by camera",
           f"sum by (camera) (rate({names.FRAME_BRIGHTNESS}_sum[{{w}}])) "
           f"/ sum by (camera) (rate({names.FRAME_BRIGHTNESS}_count[{{w}}]))", "ratio", by="camera"),
    Signal("sharpness", "Mean sharpness by camera",
           f"sum by (camera) (rate({names.FRAME_SHARPNESS}_sum[{{w}}])) "
           f"/ sum by (camera) (rate({names.FRAME_SHARPNESS}_count[{{w}}]))",
           "", by="camera"),
    Signal("confidence", "Mean detection confidence",
           f"sum(rate({names.DETECTION_CONFIDENCE}_sum[{{w}}])) / sum(rate({names.DETECTION_CONFIDENCE}_count[{{w}}]))",
           "ratio"),
    # Each camera's distance ratio over its calibrated limit (above 1: beyond it), as the drift
    # SLO judges it; a camera without a limit (an older monitor) is judged by the fixed 1.5x.
    Signal("drift", "Embedding distance to the reference, over its limit, by camera", DRIFT, "x limit", by="camera"),
    Signal("drift_limit", "Calibrated embedding-distance limit by camera", f"max by (camera) ({DRIFT_LIMIT})", "x",
           by="camera"),
    # Heap only: the shared-memory pool (kind="shared") grows in steps to hold a backlog and
    # keeps its high-water mark; that is not a leak, and under a backlog it is what grows.
    Signal("rss_slope", "Heap memory growth by process",
           f'sum by (process) (deriv({names.PROCESS_MEMORY}{{kind="heap"}}[{{w}}]))', "B/s", by="process", halves=True),
    Signal("switches", "Model version switches", f"sum(increase({names.MODEL_VERSION_SWITCHES}[{{w}}]))", "count"),
    Signal("camera_fps", "Frames per second by camera",
           f'sum by (camera) (rate({names.CAMERA_FRAMES}{{camera!="other"}}[{{w}}]))', "fps", by="camera"),
    Signal("camera_fps_last", "Frames per second by camera, last minute (recorded)", names.CAMERA_FRAMES_RATE,
           "fps", by="camera"),
    Signal("camera_expected", "Expected frames per second by camera",
           f'max by (camera) ({names.CAMERA_EXPECTED_FPS}{{camera!="other"}})',
           "fps", by="camera"),
    Signal("camera_gaps", "Numbered frames that never arrived, by camera",
           CAMERA_GAPS, "ratio", by="camera"),
    # 0 while a monitor sidecar was not scraped at some point of the window: blind to what it provides.
    Signal("monitor_up", "Monitor sidecar scraped (lowest over the window)",
           'min by (instance) (min_over_time(up{job="sightline-monitor"}[{w}]))', "", by="instance"),
)
BY_KEY = {signal.key: signal for signal in SIGNALS}


@dataclass
class Reading:
    signal: Signal
    now: Dict[str, float]
    base: Dict[str, float]
    expr_now: str
    expr_base: str
    since_s: Optional[float] = None  # the length of the "now" window

    def get(self, series: str = "") -> Tuple[Optional[float], Optional[float]]:
        return self.now.get(series), self.base.get(series)


def _values(result: List[dict], by: Optional[str]) -> Dict[str, float]:
    out = {}
    for series in result:
        value = float(series["value"][1])
        if math.isnan(value) or math.isinf(value):
            continue
        out[series["metric"].get(by, "") if by else ""] = value
    return out


def read_signals(prom: Prometheus, since_s: float, baseline_s: float, now: Optional[float] = None,
                 signals: Sequence[Signal] = SIGNALS) -> Dict[str, Reading]:
    """Each signal over [now - since, now] and over [now - baseline, now - since]."""
    if baseline_s <= since_s:
        raise ValueError(f"the baseline ({baseline_s:g}s) must be longer than --since ({since_s:g}s)")
    now = time.time() if now is None else now
    readings = {}
    for signal in signals:
        expr_now = signal.over(since_s)
        expr_base = signal.over(baseline_s - since_s)
        current = _values(prom.query(expr_now, at=now), signal.by)
        if signal.halves:  # growth that holds over the whole window and its recent half and quarter,
            # so neither a step at the window's start (a restart, a reload) nor a short burst is a slope
            half, quarter = signal.over(since_s / 2), signal.over(since_s / 4)
            for expr in (half, quarter):
                recent = _values(prom.query(expr, at=now), signal.by)
                current = {k: min(v, recent[k]) for k, v in current.items() if k in recent}
            expr_now = f"smallest of {expr_now} ; {half} ; {quarter}"
        readings[signal.key] = Reading(signal, current, _values(prom.query(expr_base, at=now - since_s), signal.by),
                                       expr_now, expr_base, since_s)
    return readings
