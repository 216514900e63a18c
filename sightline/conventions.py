"""Metric names, labels and buckets: the one module that owns Sightline's names.

Prometheus naming rules: base units, ``_seconds``, ``_bytes``, ``_total`` for counters,
``_ratio`` for 0..1. Labels have bounded cardinality only: ``model``, ``version``,
``stage``, ``camera`` (allow-listed), ``reason``, ``class``. A ``request_id`` never becomes
a label; it goes to logs, traces and exemplars.
"""

from __future__ import annotations

PREFIX = "sightline_"

# Latency buckets for 1 ms - 10 s. 0.12 is the default latency SLO threshold, so it is
# an exact bucket boundary (latency SLOs need exact buckets).
LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# --- latency of every request, inside Triton ------------------------------------------------
# The Python steps stamp CLOCK_MONOTONIC (shared by every process on a host) at the start
# and end of each execute(); preprocess hands its two stamps to postprocess in the TIMING
# tensor, so postprocess sees four per request and observes these (no tracing involved).
REQUEST_DURATION = "sightline_request_duration_seconds"  # preprocess start -> postprocess end
STAGE_DURATION = "sightline_stage_duration_seconds"  # per stage; detector_model = the hand-off gap
PIPELINE_STAGE = "pipeline"  # the stage label of REQUEST_DURATION
TIMING_TENSOR = "TIMING"  # int64 [2] per frame: preprocess execute start and end, monotonic ns
# Queue wait, compute and batch size come from Triton's own cumulative per-model counters
# (nv_inference_queue_duration_us, nv_inference_compute_infer_duration_us, nv_inference_count,
# nv_inference_exec_count): exact means over every request, recorded by the operations rules.
QUEUE_WAIT_MEAN = "stage:nv_inference_queue_duration_seconds:mean5m"
COMPUTE_MEAN = "stage:nv_inference_compute_infer_duration_seconds:mean5m"

# --- from sampled trace spans (monitor sidecar): exemplars and a look at one slow request ----
TRACED_REQUEST_DURATION = "sightline_traced_request_duration_seconds"  # ensemble span
TRACED_STAGE_DURATION = "sightline_traced_stage_duration_seconds"  # one step's span
TRACED_STAGE_QUEUE_WAIT = "sightline_traced_stage_queue_wait_seconds"  # COMPUTE_START - QUEUE_START
TRACED_STAGE_COMPUTE = "sightline_traced_stage_compute_seconds"  # COMPUTE_END - COMPUTE_START
TRACED_STAGE_BATCH_SIZE = "sightline_traced_stage_batch_size"  # shared compute timestamps (exact at rate 1)
SPANS_RECEIVED = "sightline_otlp_spans_received_total"
SPANS_REJECTED = "sightline_otlp_spans_rejected_total"
SPANS_FORWARD_DROPPED = "sightline_otlp_forward_dropped_total"

LABEL_MODEL = "model"
LABEL_VERSION = "version"
LABEL_STAGE = "stage"
LABEL_CAMERA = "camera"
LABEL_REASON = "reason"
LABEL_CLASS = "class"

# Camera ids outside the allow-list fold into this value.
OTHER_CAMERA = "other"
# The drift window pooled over every camera; a camera that calls itself this folds into OTHER_CAMERA.
ALL_CAMERAS = "all"

# --- inside Triton: custom metrics of the Python steps ------------------------------------
FRAME_BRIGHTNESS = "sightline_frame_brightness_ratio"  # mean luma, 0..1
FRAME_CONTRAST = "sightline_frame_contrast_ratio"  # std of luma, 0..1
FRAME_SHARPNESS = "sightline_frame_sharpness"  # variance of the Laplacian, downscaled grey
FRAME_WIDTH = "sightline_frame_width_pixels"
FRAME_HEIGHT = "sightline_frame_height_pixels"
FRAME_PIXELS = "sightline_frame_pixels"
FRAME_ASPECT = "sightline_frame_aspect_ratio"  # width / height (not a 0..1 ratio)
STEP_BATCH_SIZE = "sightline_step_batch_size"  # requests per execute() call, per step
DETECTIONS_PER_FRAME = "sightline_detections_per_frame"
DETECTION_CONFIDENCE = "sightline_detection_confidence"
DETECTIONS = "sightline_detections_total"
REJECTED = "sightline_rejected_requests_total"
STEP_METRICS_SECONDS = "sightline_step_telemetry_seconds_total"  # what the metrics themselves cost

RATIO_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SHARPNESS_BUCKETS = (5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)
SIDE_BUCKETS = (160, 320, 480, 640, 720, 960, 1080, 1280, 1440, 1920, 2160, 2560, 3840, 4096)
PIXEL_BUCKETS = (76_800, 307_200, 921_600, 2_073_600, 3_686_400, 8_294_400, 16_777_216)
ASPECT_BUCKETS = (0.5, 0.75, 1.0, 1.25, 1.34, 1.5, 1.78, 2.0, 2.5, 3.0)
COUNT_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, 100)
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
AUDIT_FRAMES = "sightline_audit_frames_sampled_total"  # outcome: sent | dropped | lost (inside Triton)
TAP_RECORDS = "sightline_tap_records_total"  # outcome: sent | dropped (sender side)

# --- drift (monitor sidecar), per camera and camera="all" --------------------------------------
DRIFT_DISTANCE_RATIO = "sightline_drift_distance_ratio"  # mean-embedding distance / its daylight baseline
# The ratio a healthy window of the current size exceeds with the calibrated probability
# (DriftThresholds.distance_false_alarm): alert on ratio / limit > 1, never on a fixed ratio.
DRIFT_DISTANCE_LIMIT = "sightline_drift_distance_limit"
DRIFT_DETECTED = "sightline_drift_detected"
# Full, disjoint drift windows judged, by result (within_limit | over_limit): the drift SLO's
# events. Windows evaluated every few seconds overlap, so their readings come in runs; a
# window counted only once all its records are new is one independent judgement.
DRIFT_WINDOWS = "sightline_drift_windows_total"
LABEL_RESULT = "result"
DRIFT_WITHIN_LIMIT = "within_limit"
DRIFT_OVER_LIMIT = "over_limit"

# --- Triton's processes: each Python step reports its own stub, postprocess also ------------
# tritonserver (its parent), through Triton's /metrics; labels process ("tritonserver" or
# "stub:<model>") and worker (the model instance, one series per stub).
PROCESS_RESIDENT_MEMORY = "sightline_process_resident_memory_bytes"  # VmRSS per process label
# By kind: heap (RssAnon; steady growth is a leak in code) and shared (RssShmem; the Python
# backend's shared-memory pool, which keeps the high-water mark of the largest backlog).
PROCESS_MEMORY = "sightline_process_memory_bytes"
PROCESS_CPU_SECONDS = "sightline_process_cpu_seconds_total"
PROCESS_COUNT = "sightline_process_count"

# --- camera streams (inside Triton) ---------------------------------------------------------
# Frames that reached the server, per camera (preprocess: every arrival, refused ones too).
CAMERA_FRAMES = "sightline_camera_frames_total"
# Frames the camera says it sent, from its ``frame_seq`` request parameter (postprocess, one
# instance). Gaps = sent - processed (DETECTIONS_PER_FRAME's count, same step, same flush)
# - refused: frames lost between the camera and Triton.
CAMERA_FRAMES_SENT = "sightline_camera_frames_sent_total"
# Numbered frames a step refused, counted when postprocess's sequence moves past them (gaps).
CAMERA_FRAMES_REFUSED = "sightline_camera_frames_refused_total"
# Frames that arrived more than ``late_after_s`` after their ``capture_time_ms`` parameter.
CAMERA_FRAMES_LATE = "sightline_camera_frames_late_total"
CAMERA_EXPECTED_FPS = "sightline_camera_expected_fps"  # from the camera allow-list: "cam-1=30,..."

# Request parameters a camera gateway sends with each frame.
PARAM_CAMERA = "camera_id"
PARAM_FRAME_SEQ = "frame_seq"  # int, increasing by one per captured frame
PARAM_CAPTURE_TIME_MS = "capture_time_ms"  # int, unix milliseconds at capture

# Order of the QUALITY tensor that preprocess hands to postprocess.
QUALITY_FIELDS: tuple[str, ...] = ("brightness", "contrast", "sharpness", "width", "height", "pixels", "aspect_ratio")

# --- hostile input at the sidecar's listeners --------------------------------------------------
# Drift evaluations that raised, per camera window ("all" also for a whole pass that failed);
# the evaluation thread logs each one and goes on.
DRIFT_EVALUATION_ERRORS = "sightline_drift_evaluation_errors_total"

# Refusal reasons (the ``reason`` label of REJECTED) added for hostile input; see docs/hostile-input.md.
REASON_EXTREME_ASPECT_RATIO = "extreme_aspect_ratio"  # one side more than 16x the other
REASON_BAD_PARAMETER = "bad_parameter"  # frame_seq / capture_time_ms / camera_id unreadable or out of range
REASON_BAD_LETTERBOX = "bad_letterbox"  # postprocess called with a non-positive or non-finite scale
# OTLP spans skipped one by one (the rest of their export is still read), by reason.
SPANS_SKIPPED = "sightline_otlp_spans_skipped_total"
# Span model names outside the known models (the model repository, or an allow-list) and
# versions beyond a model's first few fold into this value, so no sender creates series.
OTHER_MODEL = "other"
OTHER_VERSION = "other"

# Hostile input, another refusal reason (docs/hostile-input.md): each scan of a JPEG decodes the whole frame again.
REASON_TOO_MANY_SCANS = "too_many_scans"  # more than 32 start-of-scan markers
REASON_TOO_MANY_BYTES = "too_many_bytes"  # a frame larger than the uncompressed RGB frame of the pixel limit
REASON_REQUEST_TOO_LARGE = "request_too_large"  # a request's frames hold more pixels than 4 frames at the limit

# --- audit store and monitor API (monitor sidecar) ----------------------------------------------
AUDIT_REDACTIONS = "sightline_audit_frames_redaction_total"  # frames stored, by what the store's redaction did
AUDIT_REFUSED = "sightline_audit_frames_refused_total"  # audit datagrams refused, by reason
MONITOR_REQUESTS_REFUSED = "sightline_monitor_requests_refused_total"  # state-changing requests refused, by reason
