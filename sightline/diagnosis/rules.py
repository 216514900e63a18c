"""Rules of ``sightline diagnose``: an on-call engineer's reasoning over the signals, as hypotheses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from sightline import conventions as names
from sightline.diagnosis.signals import DRIFT_FIXED_LIMIT, DRIFT_LIMIT_METRIC, SERVER_REASONS, Reading

# -- rules -------------------------------------------------------------------------------------


@dataclass
class Evidence:
    text: str
    reading: Reading
    series: str = ""


@dataclass
class Hypothesis:
    key: str
    title: str
    score: float
    cause: str
    mitigation: str
    fix: str
    alert: str
    evidence: List[Evidence] = field(default_factory=list)
    charts: Tuple[str, ...] = ()


def _ratio(now: Optional[float], base: Optional[float]) -> Optional[float]:
    if now is None or base is None or base <= 0:
        return None
    return now / base


def _fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "no data"
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "B/s":
        return f"{value / 1024:.1f} KiB/s"
    if unit == "pixels":
        return f"{value:,.0f} px"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


# The SightlineProcessMemoryGrowing threshold (25 MB/hour); the demo's leak is 50 MB/hour.
LEAK_FLOOR_BYTES_PER_S = 25e6 / 3600
# A leak must also add up over the "now" window: a model reload or an ONNX Runtime arena that
# warms up to new batch shapes moves RSS by a few MB once, which over a short window reads as a
# steep slope (tritonserver +2.3 MB in the 29 s after the batcher fault's reload, 78 KiB/s).
# A 50 MB/hour leak adds 8 MB in 10 minutes and 25 MB in diagnose's default 30; the demo's leak
# (64 KiB a request at 40 req/s) about 150 MB a minute.
LEAK_MIN_GROWTH_BYTES = 8e6


@dataclass
class FailureSplit:
    """What the incident's extra failures are made of, each reason against its own baseline."""

    ratio_now: float
    ratio_base: Optional[float]
    failures_now: float
    failures_base: float
    input_rise: Dict[str, Tuple[float, float]]  # reason -> (baseline, now) req/s, input refusals that rose
    internal: Tuple[float, float]  # `internal` (a step raised on a valid frame): (baseline, now)
    unreasoned: Tuple[float, float]  # failures with no Sightline reason at all: (baseline, now)
    input_share: float  # of the rise in failures: refused input ...
    server_share: float  # ... and the server (internal + no reason); they add up to 1
    rose: bool  # False: failures did not grow, the share rose because fewer requests succeed

    def counted(self, pair: Tuple[float, float]) -> float:
        """What a (baseline, now) rate adds to the incident: its rise, or its rate when nothing rose."""
        return pair[1] - pair[0] if self.rose else pair[1]


def _rise(before: float, after: float) -> float:
    return max(0.0, after - before)


def failure_split(r: Dict[str, Reading]) -> Optional[FailureSplit]:
    """None unless the failed share moved (the old trigger: at least 1 % and 3x the baseline
    plus half a percent). Each reason counts for what it added over its baseline rate, so a
    steady trickle of `truncated` frames explains none of a new burst; failures that carry no
    Sightline reason (nothing refused them: a crashed stub, a failed batch, a model error)
    are the server's."""
    ratio_now, ratio_base = r["error_ratio"].get()
    if ratio_now is None or ratio_now < 0.01 or ratio_now < 3 * (ratio_base or 0) + 0.005:
        return None
    failures_now, failures_base = r["failures"].get()
    rate_now, rate_base = r["rate"].get()
    if failures_now is None:
        failures_now = ratio_now * (rate_now or 0.0)
    if failures_base is None:
        failures_base = (ratio_base or 0.0) * (rate_base or 0.0)
    reasons = r["errors_by_reason"]
    unreasoned = (max(0.0, failures_base - sum(reasons.base.values())), max(0.0, failures_now - sum(reasons.now.values())))
    internal = (sum(v for k, v in reasons.base.items() if k in SERVER_REASONS),
                sum(v for k, v in reasons.now.items() if k in SERVER_REASONS))
    inputs = {k: (reasons.base.get(k, 0.0), v) for k, v in reasons.now.items() if k not in SERVER_REASONS}

    def split(measure: Callable[[float, float], float]) -> Tuple[Dict[str, Tuple[float, float]], float, float]:
        grown = {k: pair for k, pair in inputs.items() if measure(*pair) > 0}
        return grown, sum(measure(*pair) for pair in grown.values()), measure(*internal) + measure(*unreasoned)

    grown, input_part, server_part = split(_rise)
    rose = input_part + server_part >= 0.25 * failures_now and input_part + server_part > 0
    if not rose:  # failures barely grew (the share rose as fewer requests succeed): judge what fails now
        grown, input_part, server_part = split(lambda before, after: after)
    total = input_part + server_part
    if total <= 0:
        return None
    return FailureSplit(ratio_now, ratio_base, failures_now, failures_base, grown, internal, unreasoned,
                        input_part / total, server_part / total, rose)


# A hypothesis is named for a share of the failures once it explains this much of their rise.
MIN_SHARE = 0.25


def failing_cameras(r: Dict[str, Reading]) -> Tuple[List[str], int]:
    """The cameras whose frames are refused far more than in their baseline (most added
    refusals first), and how many cameras sent frames in the window."""
    share, refused = r["camera_refused"], r["refused_by_camera"]
    named = [camera for camera, now in share.now.items()
             if now >= 0.05 and now >= 2 * share.base.get(camera, 0.0) + 0.01]
    named.sort(key=lambda c: (-(refused.now.get(c, 0.0) - refused.base.get(c, 0.0)), c))
    sending = {c for c, fps in r["camera_fps"].now.items() if fps > 0} | set(share.now)
    return named, len(sending)


def _camera_names(cameras: Sequence[str]) -> str:
    return ", ".join("cameras outside the allow-list (camera=\"other\")" if c == names.OTHER_CAMERA else c for c in cameras)


def _bad_input(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    split = failure_split(r)
    if split is None or split.input_share < MIN_SHARE:
        return None
    ranked = sorted(split.input_rise, key=lambda k: (-split.counted(split.input_rise[k]), k))
    reasons = ", ".join(f"`{k}`" for k in ranked)
    cameras, sending = failing_cameras(r)
    everywhere = bool(cameras) and sending > 1 and len(cameras) >= sending
    if cameras and not everywhere:
        named = _camera_names(cameras)
        where = f", from {named}"
        cause_where = (f"The refused frames come from {named}, while the other cameras' frames decode as before: "
                       "that camera's encoder, firmware or link corrupts them.")
        mitigation = (f"Take {named} out of rotation (or restart its encoder) and check its firmware, resolution and "
                      "link; the other cameras are unaffected.")
    elif everywhere:
        where = ", from every camera"
        cause_where = (f"Every camera that sends ({sending}) has its frames refused at once: the path they share, the "
                       "camera gateway or an encoder setting pushed to all of them, not one camera.")
        mitigation = "Check the camera gateway (its last deploy, its re-encoding) and the encoder settings shared by all cameras."
        named = "every camera"
    else:
        where, named = "", ""
        cause_where = "No camera stands out in the per-camera refusal counters (they have no data for this window)."
        mitigation = ("Find the cameras whose frames are refused (refused requests by camera on the pipeline board) and "
                      "take them out of rotation.")
    share_text = (f"{split.input_share:.0%} of the rise" if split.rose else f"{split.input_share:.0%} of them")
    h = Hypothesis(
        "outage", f"Requests fail: {_fmt(split.ratio_now, 'ratio')} of them; refused input ({reasons}) explains "
                  f"{share_text}{where}",
        5 + 10 * min(split.ratio_now, 1.0) * split.input_share,
        cause=(f"Triton refuses the frames themselves with reason {reasons} (they do not decode), so this share of the "
               f"failures is upstream: a camera or gateway sends corrupt frames. {cause_where}"
               + ("" if split.input_share > 1 - MIN_SHARE else
                  f" The other {split.server_share:.0%} carry no input reason: see the server-side hypothesis.")),
        mitigation=mitigation + (" Server-side failures are a separate cause (see below)."
                                 if split.server_share >= MIN_SHARE else ""),
        fix="Validate frames at the gateway and alert on its decode errors; add the failing frames to the test corpus.",
        alert="The availability burn-rate page already covers this; add a per-reason ticket on "
              f"`{names.REJECTED_RATIO} > 0.01` for early warning.",
        charts=("error_ratio", "errors_by_reason", "refused_by_camera"))
    h.evidence.append(Evidence(f"failed share {_fmt(split.ratio_base, 'ratio')} -> {_fmt(split.ratio_now, 'ratio')}",
                               r["error_ratio"]))
    h.evidence.append(Evidence(f"failed requests {_fmt(split.failures_base, 'req/s')} -> {_fmt(split.failures_now, 'req/s')}",
                               r["failures"]))
    for reason in ranked:
        before, after = split.input_rise[reason]
        h.evidence.append(Evidence(f"reason `{reason}` {_fmt(before, 'req/s')} -> {_fmt(after, 'req/s')}",
                                   r["errors_by_reason"], reason))
    for camera in cameras:
        now, base = r["camera_refused"].get(camera)
        h.evidence.append(Evidence(f"{camera}: {_fmt(base or 0.0, 'ratio')} -> {_fmt(now, 'ratio')} of its frames refused",
                                   r["camera_refused"], camera))
    return h


def _server_fault(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    split = failure_split(r)
    if split is None or split.server_share < MIN_SHARE:
        return None
    # Which step fails them: the failures Triton counts in a step (refusals never count there).
    steps = r["step_failures"]
    grown = {step: split.counted((steps.base.get(step, 0.0), now)) for step, now in steps.now.items()}
    failing = sorted((s for s, v in grown.items() if v > 0.05 * max(split.failures_now, 1e-9)), key=lambda s: -grown[s])
    label = ("with no Sightline reason" if split.counted(split.unreasoned) >= split.counted(split.internal)
             else "with reason `internal`")
    share_text = f"{split.server_share:.0%} of the rise" if split.rose else f"{split.server_share:.0%} of them"
    in_step = f" (in {', '.join(failing)})" if failing else ""
    h = Hypothesis(
        "server-fault", f"Requests fail inside the server: {_fmt(split.ratio_now, 'ratio')} of them; "
                        f"{share_text} {label}{in_step}",
        5 + 10 * min(split.ratio_now, 1.0) * split.server_share,
        cause=("These failures were not refused as bad input: no step named an input problem. Failures without a "
               "Sightline reason come from Triton or a step's process itself: a Python stub that crashed or was "
               "restarted (its requests in flight fail), a batch that failed as a whole, or a model execution error "
               "in detector_model (the ONNX Runtime / TensorRT backend). Reason `internal` means a step raised on a "
               "frame that decoded.")
              + (f" The failures that no refusal explains are in {', '.join(failing)}." if failing else ""),
        mitigation=("Look at Triton's log from the start of the window"
                    + (f" for {', '.join(failing)}" if failing else "")
                    + ": 'Stub process ... is not healthy' or a restarted stub (a crash: OOM kill, segfault), 'Failed "
                    "to process the request(s)' (a failed batch), or the model's own error. Check the pod's restarts "
                    f"and memory (`kubectl describe pod`, {names.PROCESS_RESIDENT_MEMORY}). Roll back the last "
                    "change to the model repository, or reload the failing model if its stub is wedged."),
        fix="Give every failure path of every step a reason (catch, name, count), reproduce the crash in a soak test "
            "(`bench/soak`), and keep the model's failing inputs in its test corpus.",
        alert="The availability burn-rate page covers the budget; add a ticket on failures without a Sightline "
              f"reason: `sum(rate({names.NV_REQUEST_FAILURE}{{model=\"detector\"}}[5m])) / 2 - "
              f"sum(rate({names.REJECTED}[5m]))` above 1 % of requests (Triton counts each "
              "failed ensemble request twice).",
        charts=("error_ratio", "step_failures", "errors_by_reason"))
    h.evidence.append(Evidence(f"failed share {_fmt(split.ratio_base, 'ratio')} -> {_fmt(split.ratio_now, 'ratio')}",
                               r["error_ratio"]))
    h.evidence.append(Evidence(f"failed requests {_fmt(split.failures_base, 'req/s')} -> {_fmt(split.failures_now, 'req/s')}, "
                               f"of which without a Sightline reason {_fmt(split.unreasoned[0], 'req/s')} -> "
                               f"{_fmt(split.unreasoned[1], 'req/s')}", r["failures"]))
    if split.internal[1] > 0:
        h.evidence.append(Evidence(f"reason `internal` {_fmt(split.internal[0], 'req/s')} -> {_fmt(split.internal[1], 'req/s')}",
                                   r["errors_by_reason"], "internal"))
    for step in failing:
        now, base = steps.get(step)
        h.evidence.append(Evidence(f"{step} failures {_fmt(base, 'req/s')} -> {_fmt(now, 'req/s')}", steps, step))
    return h


def _resolution(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    now, base = r["pixels"].get()
    ratio = _ratio(now, base)
    if ratio is None or ratio < 1.5:
        return None
    h = Hypothesis(
        "resolution", f"Input frames are {ratio:.1f}x larger than in the baseline", 4 + ratio,
        cause="Upstream started sending larger frames (a camera or gateway resolution change). Decode and letterbox "
              "cost grow with the pixels, so preprocess slows and the pipeline's capacity falls.",
        mitigation="Ask the camera owners to restore the previous resolution, or downscale at the gateway; add "
                   "preprocess instances if CPU allows.",
        fix="Pin and validate the resolution contract per camera (max_pixels on preprocess), and resize on the GPU "
            "(DALI) so resolution does not set capacity.",
        alert=f"{names.ALERT_INPUT_RESOLUTION_DRIFT} (a ticket) exists; make it a page when it coincides with latency burn.",
        charts=("pixels", "stage_p95", "p95"))
    h.evidence.append(Evidence(f"mean frame {_fmt(base, 'pixels')} -> {_fmt(now, 'pixels')}", r["pixels"]))
    stage_now, stage_base = r["stage_p95"].get("preprocess")
    h.evidence.append(Evidence(f"preprocess P95 {_fmt(stage_base, 's')} -> {_fmt(stage_now, 's')}", r["stage_p95"], "preprocess"))
    return h


def _drift_text(r: Dict[str, Reading], camera: str) -> str:
    """A camera's distance ratio against the limit it was judged by: the calibrated one, or the
    fixed 1.5x when the monitor exports no limit for it (said, so nobody reads it as calibrated)."""
    now, base = r["drift"].get(camera)
    limit = r["drift_limit"].now.get(camera)
    name = "every camera pooled (all)" if camera == "all" else camera
    if limit is not None:
        raw = f"{now * limit:.2f}" if now is not None else "no data"
        return (f"{name}: embedding distance ratio {raw}, {_fmt(now, 'x')} its calibrated limit {limit:.2f} "
                f"(baseline {_fmt(base, 'x')})")
    raw = f"{now * DRIFT_FIXED_LIMIT:.2f}" if now is not None else "no data"
    return (f"{name}: embedding distance ratio {raw}, {_fmt(now, 'x')} the fixed {DRIFT_FIXED_LIMIT:g}x threshold "
            f"(baseline {_fmt(base, 'x')}): the monitor exports no {DRIFT_LIMIT_METRIC} for it (older than the "
            "calibrated limit?), so it is judged by the old fixed threshold")


def drifted_cameras(r: Dict[str, Reading]) -> Dict[str, float]:
    """Series (cameras, and the pooled "all") beyond their limit (ratio / limit > 1) that moved
    at least 1.3x above their baseline: distance over limit, by camera."""
    drift = r["drift"]
    return {camera: now for camera, now in drift.now.items()
            if now > 1 and now >= 1.3 * (drift.base.get(camera) or 0)}


def _conditions(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    drifted = drifted_cameras(r)
    darker = {}
    for camera, value in r["brightness"].now.items():
        base = r["brightness"].base.get(camera)
        if base and value <= 0.6 * base:
            darker[camera] = value / base
    blurrier = {}
    for camera, value in r["sharpness"].now.items():
        base = r["sharpness"].base.get(camera)
        if base and value <= 0.5 * base:
            blurrier[camera] = value / base
    if not drifted and not darker and not blurrier:
        return None
    cameras = sorted(set(darker) | set(blurrier) | (set(drifted) - {"all"}))
    named = ", ".join(cameras) or "all cameras"
    # 3 + the distance ratio at the fixed 1.5x limit, as before the limit was calibrated
    top = max(r["drift"].now.values(), default=None)
    h = Hypothesis(
        "lowlight", f"Camera conditions drifted (low light / blur) on {named}",
        3 + (DRIFT_FIXED_LIMIT * top if top is not None else 1.0) + len(cameras) * 0.5,
        cause=f"The input distribution moved: {named} went darker and/or blurrier (night, rain, motion blur). "
              "The model was trained on daylight, so its embeddings drift and its confidence falls while the "
              "serving path itself is healthy.",
        mitigation="Flag detections from the affected cameras as low-confidence, or route them to a night model; "
                   "check the cameras' IR and exposure settings.",
        fix="Collect and label night and rain frames from these cameras and retrain; refresh the drift reference "
            "after the new model ships.",
        alert=f"{names.ALERT_EMBEDDING_DRIFT} exists; add a per-camera brightness ticket "
              f"(`histogram_quantile(0.5, ...{names.FRAME_BRIGHTNESS}...) < 0.2` for 15m).",
        charts=("drift", "brightness", "confidence"))
    shown = sorted(drifted, key=lambda c: (c == "all", c)) or [c for c in ("all",) if c in r["drift"].now]
    for camera in shown:
        h.evidence.append(Evidence(_drift_text(r, camera), r["drift"], camera))
    for camera in cameras:
        if camera in darker:
            h.evidence.append(Evidence(f"{camera} brightness at {darker[camera]:.0%} of its baseline", r["brightness"], camera))
        if camera in blurrier:
            h.evidence.append(Evidence(f"{camera} sharpness at {blurrier[camera]:.0%} of its baseline", r["sharpness"], camera))
    conf_now, conf_base = r["confidence"].get()
    h.evidence.append(Evidence(f"mean confidence {_fmt(conf_base, 'ratio')} -> {_fmt(conf_now, 'ratio')}", r["confidence"]))
    return h


def _leak(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    slopes = r["rss_slope"]
    growing = {}
    for process, slope in slopes.now.items():
        base = max(0.0, slopes.base.get(process, 0.0))
        added = slope * slopes.since_s if slopes.since_s else math.inf
        if slope >= LEAK_FLOOR_BYTES_PER_S and slope >= 5 * base and added >= LEAK_MIN_GROWTH_BYTES:
            growing[process] = slope
    if not growing:
        return None
    process = max(growing, key=growing.get)
    slope = growing[process]
    step = process.removeprefix("stub:")
    # Requests waiting in a queue hold their tensors: memory that grows with a backlog is
    # the backlog's, and it comes back when the queue drains. A leak grows with queues flat.
    p95_ratio = _ratio(*r["p95"].get()) or 1.0
    queue_ratios = [_ratio(r["queue_wait"].now.get(s), r["queue_wait"].base.get(s)) or 1.0 for s in r["queue_wait"].now]
    backlog = p95_ratio >= 2 or max(queue_ratios, default=1.0) >= 3
    h = Hypothesis(
        "leak", f"Memory grows steadily in {process} ({slope * 3600 / 1e6:.0f} MB/hour)"
        + (" while a backlog grows (queued requests hold memory)" if backlog else ""),
        3 + math.log10(slope / LEAK_FLOOR_BYTES_PER_S) * 2 - (5 if backlog else 0),
        cause=f"The heap (RssAnon) of `{process}` grows at {slope / 1024:.0f} KiB/s over the whole window and "
              f"its recent half and quarter, far faster than in the baseline: a leak in the `{step}` step. It will be OOM-killed, and every request in "
              "flight on it fails.",
        mitigation=f"Restart the `{step}` model (or the pod) before it reaches its memory limit; roll back the last "
                   f"change to `{step}`.",
        fix=f"Find what `{step}` keeps per request (tracemalloc in a soak run, `bench/soak`) and add a soak test "
            "that asserts a flat RSS.",
        alert=f"{names.ALERT_PROCESS_MEMORY_GROWING} exists; also page when the projected time to the container's memory "
              "limit (`predict_linear(...[1h], 4*3600)`) crosses it.",
        charts=("rss_slope", "p95"))
    h.evidence.append(Evidence(f"{process} heap slope {_fmt(slopes.base.get(process), 'B/s')} -> {_fmt(slope, 'B/s')}",
                               slopes, process))
    return h


def _batcher(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    now, base = r["batch"].get()
    # Fewer requests reaching the model means fewer chances to batch: not a config change.
    rate_ratio = _ratio(*r["model_rate"].get())
    # The thresholds of SightlineBatchSizeCollapsed: under 1.1, and under 90 % of before.
    if now is None or base is None or now > 0.9 * base or now >= 1.1 or rate_ratio is None or rate_ratio < 0.8:
        return None
    queue_now, queue_base = r["queue_wait"].get("detector_model")
    # Batches of exactly one at unchanged traffic is a specific signature; a queue that grew
    # as they shrank (requests wait, yet run alone) makes it the batcher misconfiguration (the `batcher` incident).
    queued = queue_now is not None and queue_base is not None and queue_now >= 1.3 * queue_base
    h = Hypothesis(
        "batcher", f"The model runs batches of {now:.2f} (was {base:.2f}) at the same traffic",
        4 + 8 * (1 - now / base) + (2 if queued else 0),
        cause="The dynamic batcher stopped forming batches while traffic held: every request executes alone, so "
              "the model does more, smaller executions and requests queue behind them. That is a batching "
              "configuration change (preferred batch size 1, no queue delay), not load.",
        mitigation="Reload detector_model with the repository's config (`sightline fault clear batcher` on the "
                   "demo stack; a rollback of the config elsewhere).",
        fix="Review dynamic_batching changes in CI: render the config and assert preferred sizes and queue delay "
            "against a batch-size benchmark (`bench/serving`). To check the batching settings against this "
            "traffic: `sightline advise batching --target-p95 120ms` (add `--sweep` on a server with explicit "
            "model control to measure candidates).",
        alert=f"{names.ALERT_BATCH_SIZE_COLLAPSED}: batches near 1 while requests wait in the model's queue.",
        charts=("batch", "queue_wait", "p95"))
    h.evidence.append(Evidence(f"average batch {_fmt(base)} -> {_fmt(now)}", r["batch"]))
    model_now, model_base = r["model_rate"].get()
    h.evidence.append(Evidence(f"requests reaching the model {_fmt(model_base, 'req/s')} -> {_fmt(model_now, 'req/s')}",
                               r["model_rate"]))
    h.evidence.append(Evidence(f"detector_model mean queue wait {_fmt(queue_base, 's')} -> {_fmt(queue_now, 's')}",
                               r["queue_wait"], "detector_model"))
    return h


def _saturation(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    rate_now, rate_base = r["rate"].get()
    ratio = _ratio(rate_now, rate_base)
    p95_now, p95_base = r["p95"].get()
    slower = _ratio(p95_now, p95_base)
    if ratio is None or ratio < 1.5 or slower is None or slower < 1.5:
        return None
    h = Hypothesis(
        "saturation", f"Offered load is {ratio:.1f}x the baseline and latency rose {slower:.1f}x", 3 + ratio,
        cause="More requests arrive than the pipeline can serve: queues grow at every stage and latency follows. "
              "Frame sizes, errors and batching are unchanged, so this is capacity, not a fault.",
        mitigation="Scale out (the HPA on queue wait), shed load at the gateway (lower FPS per camera), or drop "
                   "frames older than the latency budget.",
        fix="Capacity-plan from `bench/serving` at the cameras' FPS, with headroom for peaks; "
            "`sightline advise batching --target-p95 120ms` says whether bigger batches or more step instances "
            "fit this traffic.",
        alert=f"{names.ALERT_QUEUE_WAIT_HIGH} and the latency burn-rate page cover this; add a ticket when the request "
              "rate exceeds 70 % of the benchmarked capacity.",
        charts=("rate", "p95", "queue_wait"))
    h.evidence.append(Evidence(f"request rate {_fmt(rate_base, 'req/s')} -> {_fmt(rate_now, 'req/s')}", r["rate"]))
    h.evidence.append(Evidence(f"P95 {_fmt(p95_base, 's')} -> {_fmt(p95_now, 's')}", r["p95"]))
    return h


def _version(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    switches, _ = r["switches"].get()
    if not switches or switches < 0.5:
        return None
    h = Hypothesis(
        "version", "A model version changed during the window", 2.5,
        cause="The served model changed; a change in latency, confidence or drift right after it points at the "
              "new version.",
        mitigation="Roll back to the previous version in the model repository.",
        fix="Gate versions on the offline evaluation and a canary.",
        alert=f"{names.ALERT_MODEL_VERSION_CHANGED} annotates boards; nothing to add.",
        charts=("switches", "p95", "confidence"))
    h.evidence.append(Evidence(f"{switches:.0f} switch(es)", r["switches"]))
    return h


def _cameras(r: Dict[str, Reading]) -> Optional[Hypothesis]:
    """Expected cameras that went silent or stutter, against their own baseline."""
    fps, last, gaps = r["camera_fps"], r["camera_fps_last"], r["camera_gaps"]
    silent, stuttering, judged = {}, {}, []
    for camera, base in fps.base.items():
        expected = r["camera_expected"].now.get(camera) or r["camera_expected"].base.get(camera)
        if not expected or base < 0.5 * expected:
            continue  # not an expected stream, or already short in the baseline: not what changed
        judged.append(camera)
        now = fps.now.get(camera, 0.0)
        recent = last.now.get(camera)
        lost = gaps.now.get(camera) or 0.0
        if (recent is not None and recent < 0.05 * expected) or now < 0.05 * base:
            silent[camera] = (now, expected)
        elif now < 0.9 * base and lost >= 0.1:
            stuttering[camera] = (now, expected, lost)
    if not silent and not stuttering:
        return None
    if len(silent) + len(stuttering) == len(judged):
        return _all_cameras(r, sorted(judged))
    parts = []
    if silent:
        parts.append(f"{', '.join(sorted(silent))} stopped sending")
    if stuttering:
        parts.append(f"{', '.join(sorted(stuttering))} stutter"
                     f"{'s' if len(stuttering) == 1 else ''} (frames lost before Triton)")
    named = ", ".join(sorted({*silent, *stuttering}))
    h = Hypothesis(
        "camera-drop", "Camera " + "; ".join(parts), 6 + len(silent) + 0.5 * len(stuttering),
        cause=f"The stream from {named} fell below its expected frame rate while the other cameras held theirs. "
              "Triton serves what reaches it, so no error counter moves: the frames never arrive. "
              + ("A silent camera is down, unplugged or cut off from the network. " if silent else "")
              + ("A stuttering camera numbers frames it never delivers: a lossy link, an overloaded gateway or an "
                 "encoder dropping frames. " if stuttering else ""),
        mitigation=f"Check {named} at its gateway (link, power, encoder); mark its detections as missing on the "
                   "consumer side so nobody reads silence as an empty road.",
        fix="Monitor the camera network path (gateway drops, link errors) and keep the expected-camera list in the "
            "preprocess config up to date, so cameras retired on purpose are not paged.",
        alert=f"{names.ALERT_CAMERA_SILENT} (ticket), {names.ALERT_CAMERAS_SILENT} (page, many cameras) and "
              f"{names.ALERT_CAMERA_FRAME_GAPS} "
              "exist; the stream-freshness SLO tracks the budget.",
        charts=("camera_fps", "camera_gaps", "rate"))
    for camera, (now, expected) in sorted(silent.items()):
        h.evidence.append(Evidence(f"{camera}: {_fmt(fps.base.get(camera), 'fps')} -> {_fmt(now, 'fps')} over the window, "
                                   f"{_fmt(last.now.get(camera), 'fps')} in the last minute (expected {expected:g})",
                                   fps, camera))
    for camera, (now, expected, lost) in sorted(stuttering.items()):
        h.evidence.append(Evidence(f"{camera}: {_fmt(fps.base.get(camera), 'fps')} -> {_fmt(now, 'fps')} (expected "
                                   f"{expected:g}); {lost:.0%} of its numbered frames never arrived", gaps, camera))
    return h


def _all_cameras(r: Dict[str, Reading], cameras: List[str]) -> Hypothesis:
    """Every expected camera fell short at once: a shared path (network, gateway, ingest) or
    the server itself, not the cameras."""
    rate_now, rate_base = r["rate"].get()
    h = Hypothesis(
        "ingest", f"Every expected camera stopped reaching Triton ({len(cameras)} cameras)", 7 + 0.1 * len(cameras),
        cause="All expected streams fell below their frame rate at the same time. Cameras fail one by one; all of "
              "them at once means the path they share: the network, the camera gateway or the ingest service in "
              f"front of Triton, or Triton itself (check {names.ALERT_TRITON_DOWN} and the pod).",
        mitigation="Check Triton's health and the gateway or ingest service; tell consumers that detections are "
                   "missing, not empty.",
        fix="Give the gateway its own health metrics and alerts, and run it redundantly.",
        alert=f"{names.ALERT_CAMERAS_SILENT} pages when more than a quarter of the expected cameras are silent.",
        charts=("camera_fps", "rate"))
    h.evidence.append(Evidence(f"request rate {_fmt(rate_base, 'req/s')} -> {_fmt(rate_now, 'req/s')}", r["rate"]))
    for camera in cameras:
        h.evidence.append(Evidence(f"{camera}: {_fmt(r['camera_fps'].base.get(camera), 'fps')} -> "
                                   f"{_fmt(r['camera_fps'].now.get(camera, 0.0), 'fps')}", r["camera_fps"], camera))
    return h


RULES: Tuple[Callable[[Dict[str, Reading]], Optional[Hypothesis]], ...] = (
    _bad_input, _server_fault, _resolution, _conditions, _leak, _batcher, _saturation, _version, _cameras)

# Flat signals and what each rules out (the "what stayed flat" reasoning of an incident write-up).
RULED_OUT = (
    ("rate", "", 1.3, "overload: the request rate did not rise"),
    ("error_ratio", "", None, "bad input or a crashing step: no more requests fail than before"),
    ("pixels", "", 1.3, "an upstream resolution change: frame sizes are unchanged"),
    ("batch", "", 1.3, "a batcher change: the average batch size held"),
    ("drift", "all", 1.3, "camera conditions: the embeddings stay as close to the reference as before"),
    ("switches", "", None, "a deploy: no model version changed"),
)


# The signals the monitor sidecar provides: while it is down they are not flat, they are unknown.
# (Process memory and CPU come from the steps through Triton's /metrics, not from the monitor.)
MONITOR_SIGNALS = frozenset({"drift", "drift_limit", "gpu", "switches"})
MONITOR_PROVIDES = ("embedding drift (from the tap records the monitor receives)", "tap records and audit frames",
                    "trace spans (exemplars, traced stage latency)", "GPU use", "model-version events")
SIDECAR_DOWN_ALERT = names.ALERT_SIDECAR_DOWN


def blind_spots(r: Dict[str, Reading], firing: Sequence[dict] = ()) -> List[str]:
    """Why the diagnosis is blind to the monitor's signals: its scrape target was down at some
    point of the window (or vanished since the baseline), or SightlineSidecarDown fires."""
    up = r["monitor_up"]
    down = sorted(instance for instance, value in up.now.items() if value < 1)
    gone = sorted(set(up.base) - set(up.now))
    alerted = sorted({a.get("instance", "") for a in firing if a.get("alertname") == SIDECAR_DOWN_ALERT})
    reasons = []
    if alerted:
        reasons.append(f"{SIDECAR_DOWN_ALERT} is firing" + (f" ({', '.join(i for i in alerted if i)})"
                                                           if any(alerted) else ""))
    if down:
        reasons.append(f"up{{job=\"sightline-monitor\"}} was 0 in the window on {', '.join(i or '-' for i in down)}")
    if gone:
        reasons.append(f"the monitor target {', '.join(i or '-' for i in gone)} was scraped in the baseline, not now")
    if not reasons:
        return []
    return [f"The monitor sidecar was down ({'; '.join(reasons)}), so these are unknown for the window, not healthy: "
            + "; ".join(MONITOR_PROVIDES) + ". Check the monitor container (its log, `--previous` log, restarts and "
            "memory limit) and read drift again once it is back."]


def ruled_out(r: Dict[str, Reading], blind: Sequence[str] = ()) -> List[str]:
    out = []
    for key, series, factor, text in RULED_OUT:
        if blind and key in MONITOR_SIGNALS:
            continue  # a signal the dead monitor should have provided rules nothing out
        now, base = r[key].get(series)
        if key == "error_ratio":
            if now is not None and now < 0.01:
                out.append(f"{text} ({_fmt(base, 'ratio')} -> {_fmt(now, 'ratio')})")
        elif key == "drift":  # flat, and no camera beyond its limit
            ratio = _ratio(now, base)
            if ratio is not None and 1 / factor <= ratio <= factor and max(r[key].now.values()) <= 1:
                out.append(f"{text} (pooled: {_fmt(base, 'x')} -> {_fmt(now, 'x')} its limit; every camera within its "
                           "limit)")
        elif key == "switches":
            if now is not None and now < 0.5:
                out.append(text + " (a config-only reload keeps its version and does not show here)")
        else:
            ratio = _ratio(now, base)
            if ratio is not None and 1 / factor <= ratio <= factor:
                out.append(f"{text} ({_fmt(base, r[key].signal.unit)} -> {_fmt(now, r[key].signal.unit)})")
    fps = r["camera_fps"]
    held = [c for c, base in fps.base.items() if base > 0 and fps.now.get(c, 0.0) >= 0.9 * base]
    if fps.base and len(held) == len(fps.base):
        out.append(f"a camera outage: every camera kept at least 90 % of its frame rate ({len(held)} cameras)")
    slopes = r["rss_slope"].now
    if slopes and max(slopes.values()) < LEAK_FLOOR_BYTES_PER_S:
        out.append(f"a memory leak: no process's heap grows faster than {LEAK_FLOOR_BYTES_PER_S * 3600 / 1e6:.0f} MB/hour")
    return out


def hypotheses(r: Dict[str, Reading]) -> List[Hypothesis]:
    found = [h for rule in RULES if (h := rule(r)) is not None]
    return sorted(found, key=lambda h: h.score, reverse=True)
