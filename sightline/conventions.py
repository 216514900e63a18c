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
# Recorded by the operations rules (prometheus/rules/sightline-operations.yaml):
REQUEST_P50 = "model:sightline_request_duration_seconds:p50_5m"  # end-to-end P50 over 5m, per model
REQUEST_P95 = "model:sightline_request_duration_seconds:p95_5m"  # end-to-end P95 over 5m, per model
REQUEST_P99 = "model:sightline_request_duration_seconds:p99_5m"  # end-to-end P99 over 5m, per model
STAGE_P50 = "stage:sightline_stage_duration_seconds:p50_5m"  # per-stage P50 over 5m
STAGE_P95 = "stage:sightline_stage_duration_seconds:p95_5m"  # per-stage P95 over 5m
STAGE_P99 = "stage:sightline_stage_duration_seconds:p99_5m"  # per-stage P99 over 5m
BATCH_SIZE_MEAN = "model:nv_inference_batch_size:avg_5m"  # requests per execution, from Triton's counters

# --- from sampled trace spans (monitor sidecar): exemplars and a look at one slow request ----
TRACED_REQUEST_DURATION = "sightline_traced_request_duration_seconds"  # ensemble span
TRACED_STAGE_DURATION = "sightline_traced_stage_duration_seconds"  # one step's span
TRACED_STAGE_QUEUE_WAIT = "sightline_traced_stage_queue_wait_seconds"  # COMPUTE_START - QUEUE_START
TRACED_STAGE_COMPUTE = "sightline_traced_stage_compute_seconds"  # COMPUTE_END - COMPUTE_START
TRACED_STAGE_BATCH_SIZE = "sightline_traced_stage_batch_size"  # shared compute timestamps (exact at rate 1)
SPANS_RECEIVED = "sightline_otlp_spans_received_total"
SPANS_REJECTED = "sightline_otlp_spans_rejected_total"
SPANS_FORWARD_DROPPED = "sightline_otlp_forward_dropped_total"
SPANS_FORWARDED = "sightline_otlp_forwarded_total"  # OTLP exports forwarded upstream

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
REJECTED_RATIO = "reason:sightline_rejected_requests:ratio_5m"  # refused share of requests per reason (rule)
DETECTION_CONFIDENCE_MEAN = "sightline:detection_confidence:mean10m"  # mean confidence over 10m (rule)

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
DRIFT_MMD2 = "sightline_drift_mmd2"  # MMD² between the live window and the reference
DRIFT_P_VALUE = "sightline_drift_p_value"  # drift test p-value, by test
DRIFT_WINDOW_SIZE = "sightline_drift_window_size"  # records in the drift window
DRIFT_LAST_EVALUATION = "sightline_drift_last_evaluation_timestamp_seconds"  # when drift was last evaluated
DRIFT_QUALITY_PSI = "sightline_drift_quality_psi"  # PSI of a quality feature against the reference
DRIFT_EVALUATION_SECONDS = "sightline_drift_evaluation_seconds"  # time the last evaluation took
DRIFT_REFERENCE = "sightline_drift_reference"  # info: the reference in use (exported as ..._info)
DRIFT_REFERENCE_CREATED = "sightline_drift_reference_created_timestamp_seconds"  # when the reference was built
DRIFT_REFERENCE_RECORDS = "sightline_drift_reference_records"  # embeddings in the reference
DRIFT_ENABLED = "sightline_drift_enabled"  # 1 when a drift reference is loaded
# The tap records the drift windows are built from, at the monitor (TAP_RECORDS: the sender's side).
TAP_RECEIVED = "sightline_tap_received_total"  # tap records the monitor received
TAP_LOST = "sightline_tap_lost_total"  # tap records lost in transit (sender sequence gaps)
TAP_REJECTED = "sightline_tap_rejected_total"  # tap datagrams that could not be read, by reason

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
# Recorded by the operations rules:
CAMERA_FRAMES_RATE = "camera:sightline_camera_frames:rate1m"  # frames per second over the last minute
CAMERA_EXPECTED_FPS_MAX = "camera:sightline_camera_expected_fps:max"  # expected FPS, one series per camera
CAMERA_FPS_RATIO = "camera:sightline_camera_fps:ratio_1m"  # delivered / expected FPS (stream-freshness SLI)
CAMERA_FRAME_GAPS_RATIO = "camera:sightline_camera_frame_gaps:ratio_5m"  # numbered frames that never arrived
CAMERA_FRAMES_LATE_RATIO = "camera:sightline_camera_frames_late:ratio_5m"  # frames late on arrival
CAMERAS_SILENT = "sightline:cameras_silent:count"  # expected cameras without a frame in the last minute
CAMERAS_SILENT_RATIO = "sightline:cameras_silent:ratio"  # silent share of the expected cameras

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
AUDIT_FRAMES_STORED = "sightline_audit_frames_stored_total"  # redacted audit frames written
AUDIT_FRAMES_REMOVED = "sightline_audit_frames_removed_total"  # audit frames deleted, by reason
AUDIT_FRAMES_ON_DISK = "sightline_audit_frames"  # audit frames on disk now
AUDIT_BYTES_ON_DISK = "sightline_audit_bytes"  # bytes of audit frames on disk now
MONITOR_START_TIME = "sightline_monitor_start_time_seconds"  # when the monitor started (unix time)

# --- model events (monitor sidecar, from Triton's repository index) ----------------------------
MODEL_READY = "sightline_model_ready"  # 1 per READY model version
MODEL_VERSION_INFO = "sightline_model_version_info"  # the version a model serves (value 1)
MODEL_VERSION_SWITCHES = "sightline_model_version_switches_total"  # changes of a model's ready versions
MODEL_VERSION_CHANGED_AT = "sightline_model_version_change_timestamp_seconds"  # when they last changed
MODEL_INDEX_ERRORS = "sightline_model_index_errors_total"  # failed polls of the repository index

# --- GPU (monitor sidecar, NVML); label gpu ------------------------------------------------------
GPU_AVAILABLE = "sightline_gpu_available"  # 1 when NVML reports at least one GPU
GPU_UTILIZATION = "sightline_gpu_utilization_ratio"  # busy fraction over the last sample
GPU_MEMORY_USED = "sightline_gpu_memory_used_bytes"  # GPU memory in use
GPU_MEMORY_TOTAL = "sightline_gpu_memory_total_bytes"  # GPU memory in total
GPU_TEMPERATURE = "sightline_gpu_temperature_celsius"  # GPU temperature
GPU_POWER = "sightline_gpu_power_watts"  # GPU power draw
GPU_THROTTLE_ACTIVE = "sightline_gpu_throttle_active"  # 1 while a clock throttle reason is active
GPU_PROCESS_MEMORY = "sightline_gpu_process_memory_bytes"  # GPU memory of a watched process

# --- cost (monitor sidecar config, and the rules built on it) -----------------------------------
COST_PER_HOUR = "sightline_cost_per_hour_dollars"  # what the serving node costs per hour
COST_GUARDRAIL_PER_1K = "sightline_cost_guardrail_per_1k_dollars"  # cost per 1000 inferences not to exceed
NODE_COST = "sightline:node_cost:usd_per_hour"  # node $/hour (rule)
COST_PER_1K = "sightline:cost_per_1k_inferences:usd"  # $ per 1000 inferences (rule)

# --- SLO rules (sightline/slo/rules.py; Sloth-compatible names, labels sloth_*) ---------------------
SLI_ERROR_RATIO = "slo:sli_error:ratio_rate"  # + a window ("5m", "30d"): error ratio over it
SLI_ERROR_RATIO_5M = SLI_ERROR_RATIO + "5m"  # the shortest window's error ratio
SLI_ERRORS_5M = "slo:sli_events:error_rate5m"  # bad events per second over 5m
SLI_TOTAL_5M = "slo:sli_events:total_rate5m"  # all events per second over 5m
SLI_SERVED_5M = "slo:sli_events:served_rate5m"  # events per second while every target was up
SLI_OUTAGE_RATE = "slo:sli_events:outage_rate"  # events per second an outage fails
SLI_GUARDRAIL_OK = "slo:sli_guardrail:ok"  # 1 good / 0 bad per guardrail evaluation, absent when idle
SLO_OBJECTIVE = "slo:objective:ratio"  # the objective, 0..1
SLO_ERROR_BUDGET = "slo:error_budget:ratio"  # 1 - objective
SLO_PERIOD_DAYS = "slo:time_period:days"  # the SLO's period
SLO_CURRENT_BURN_RATE = "slo:current_burn_rate:ratio"  # 5m error ratio / budget
SLO_PERIOD_BURN_RATE = "slo:period_burn_rate:ratio"  # period error ratio / budget
SLO_BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"  # share of the period's budget left
SLO_INFO = "sloth_slo_info"  # one info series per SLO
LABEL_SLI_KIND = "sightline_sli_kind"  # label of SLO_INFO: ratio | latency | guardrail

# --- alerts (prometheus/rules/) ------------------------------------------------------------------
ALERT_PREFIX = "Sightline"  # every alert's name starts with it, then CamelCase
# An SLO's burn-rate alert is named in prometheus/slo.yaml: ALERT_PREFIX, the SLO, BURN_ALERT_SUFFIX;
# its generated no-data alert swaps the suffix: no_data_alert(burn_alert).
BURN_ALERT_SUFFIX = "BudgetBurn"  # ends every SLO burn-rate alert
NO_DATA_ALERT_SUFFIX = "NoData"  # ends every SLO no-data alert
ALERT_AVAILABILITY_BURN = "SightlineAvailabilityBudgetBurn"  # the availability SLO's burn rate
ALERT_LATENCY_BURN = "SightlineLatencyBudgetBurn"  # the latency SLO's burn rate
ALERT_DRIFT_BURN = "SightlineDriftBudgetBurn"  # the drift SLO's burn rate
ALERT_LATENCY_P95_HIGH = "SightlineLatencyP95High"  # end-to-end P95 over the latency threshold
ALERT_QUEUE_WAIT_HIGH = "SightlineQueueWaitHigh"  # requests wait long in a model's queue
ALERT_BATCH_SIZE_COLLAPSED = "SightlineBatchSizeCollapsed"  # batches near 1 while requests queue
ALERT_EMBEDDING_DRIFT = "SightlineEmbeddingDrift"  # embeddings beyond their calibrated limit
ALERT_DRIFT_OFF = "SightlineDriftOff"  # a monitor runs without a drift reference
ALERT_INPUT_RESOLUTION_DRIFT = "SightlineInputResolutionDrift"  # frame sizes changed
ALERT_PROCESS_MEMORY_GROWING = "SightlineProcessMemoryGrowing"  # a process's heap keeps growing
ALERT_SIDECAR_DOWN = "SightlineSidecarDown"  # the monitor sidecar is not scraped
ALERT_TRITON_DOWN = "SightlineTritonDown"  # no Triton target answers (the outage's one page)
ALERT_MODEL_VERSION_CHANGED = "SightlineModelVersionChanged"  # a model's served version changed
ALERT_CAMERA_PREFIX = "SightlineCamera"  # the camera alerts' names start with it
ALERT_CAMERA_SILENT = "SightlineCameraSilent"  # an expected camera sends nothing (ticket)
ALERT_CAMERAS_SILENT = "SightlineCamerasSilent"  # more than a quarter of the cameras silent (page)
ALERT_CAMERA_FRAME_GAPS = "SightlineCameraFrameGaps"  # a camera's numbered frames go missing


def no_data_alert(burn_alert: str) -> str:
    """The no-data alert of an SLO, from its burn-rate alert's name.

    >>> no_data_alert("SightlineLatencyBudgetBurn")
    'SightlineLatencyNoData'
    """
    return f"{burn_alert.removesuffix(BURN_ALERT_SUFFIX)}{NO_DATA_ALERT_SUFFIX}"


# --- Triton's own metrics (its /metrics), read in PromQL ----------------------------------------
NV_REQUEST_SUCCESS = "nv_inference_request_success"  # requests served, per model
NV_REQUEST_FAILURE = "nv_inference_request_failure"  # failed requests (an ensemble's twice), per model
NV_INFERENCE_COUNT = "nv_inference_count"  # inferences (batch items), per model
NV_EXEC_COUNT = "nv_inference_exec_count"  # executions (batches), per model
NV_QUEUE_DURATION_US = "nv_inference_queue_duration_us"  # cumulative queue time, microseconds
NV_COMPUTE_INFER_DURATION_US = "nv_inference_compute_infer_duration_us"  # cumulative compute time, microseconds
