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

# --- from trace spans (monitor sidecar) -------------------------------------------------
REQUEST_DURATION = "sightline_request_duration_seconds"  # ensemble, end to end
STAGE_DURATION = "sightline_stage_duration_seconds"  # one ensemble step, queue included
STAGE_QUEUE_WAIT = "sightline_stage_queue_wait_seconds"  # COMPUTE_START - QUEUE_START
STAGE_COMPUTE = "sightline_stage_compute_seconds"  # COMPUTE_END - COMPUTE_START
STAGE_BATCH_SIZE = "sightline_stage_batch_size"  # recovered from shared compute timestamps
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
