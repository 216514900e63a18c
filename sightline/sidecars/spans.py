"""Sampled Triton trace spans -> latency histograms with trace-id exemplars.

Tracing is a sampled extra: the latency SLI and the per-stage histograms come from the
steps' own timestamps inside Triton (``sightline.steps.telemetry``), which see every
request. Spans add exemplars (a trace id on a slow bucket) and a look at one slow
request, under ``sightline_traced_*`` names so they are never summed with the real ones.

Triton (2.51) exports, per traced request, one span per model it runs: the ensemble
(``triton.trace_parent_id == "0"``), then each step, and under each step a ``compute`` span
whose events are COMPUTE_START and COMPUTE_END. Model spans carry
``triton.model_name``, ``triton.model_version`` and ``triton.request_id``, and a
QUEUE_START event. From these:

* request duration = the top-level model span (the ensemble);
* stage duration = a step's span; queue wait = its compute's COMPUTE_START minus the
  step's QUEUE_START; compute = COMPUTE_END - COMPUTE_START;
* batch size: requests executed together share COMPUTE_START/COMPUTE_END (identical for
  C++ backends; within a few nanoseconds for the Python backend, which stamps each
  request in turn), so counting compute spans per (model, start, end), matched within
  ``BATCH_TOLERANCE_NS``, recovers each execution's batch size. One instance runs its
  executions one after another, so distinct executions are milliseconds apart. This is
  only exact when every request is traced (trace rate 1).

A step span and its compute span may arrive in different export batches, so each waits
(bounded, with a time-to-live) for the other.

Anyone who reaches the OTLP port can send spans, so nothing in a span creates series of
its own: the ``model`` label is one of the known models (the model repository's, or an
allow-list) or ``other``; ``version`` is a model's first ``MAX_VERSIONS_PER_MODEL`` numeric
versions, the rest ``other``. A span that cannot be read (ids of the wrong length, an end
before its start) is skipped and counted by reason; the rest of its export is still read.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Histogram

from sightline import conventions as names
from sightline import modelspec
from sightline.errors import InputError
from sightline.sidecars import logs

ATTR_MODEL = "triton.model_name"
ATTR_VERSION = "triton.model_version"
ATTR_PARENT = "triton.trace_parent_id"
ATTR_REQUEST_ID = "triton.request_id"
COMPUTE_SPAN = "compute"
BATCH_TOLERANCE_NS = 20_000
# The cell itself first, then its eight neighbours.
_NEIGHBOURS = ((0, 0),) + tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0))
TRACE_ID_BYTES = 16  # OTLP: a trace id is 16 bytes, a span id 8
SPAN_ID_BYTES = 8
MAX_VERSIONS_PER_MODEL = 8
_VERSION = re.compile(r"[0-9]{1,19}")
# The model repository the sidecar's Triton serves (same default and override as the stack's).
DEFAULT_MODEL_REPOSITORY = Path(os.environ.get("SIGHTLINE_MODEL_REPOSITORY",
                                               Path(__file__).resolve().parents[2] / "model_repository"))
# Span skip reasons (the values of SPANS_SKIPPED's label).
SKIP_BAD_ID = "bad_id"
SKIP_BAD_TIMESTAMPS = "bad_timestamps"
SKIP_INVALID = "invalid"
SKIP_REASONS = (SKIP_BAD_ID, SKIP_BAD_TIMESTAMPS, SKIP_INVALID)


class SpanSkipped(InputError):
    """One span cannot be measured; ``reason`` is its label on the skipped counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def known_models(repository: Path = DEFAULT_MODEL_REPOSITORY) -> frozenset[str]:
    """The models of a Triton model repository (directories with a ``config.pbtxt``);
    the Sightline pipeline's own names when the repository is not on this machine."""
    try:
        found = {p.parent.name for p in repository.glob("*/config.pbtxt")}
    except OSError:
        found = set()
    return frozenset(found or {modelspec.ENSEMBLE_NAME, modelspec.PREPROCESS_NAME, modelspec.MODEL_NAME,
                               modelspec.POSTPROCESS_NAME})


@dataclass(frozen=True)
class StepSpan:
    model: str
    version: str
    queue_start_ns: int
    trace_id: str


@dataclass(frozen=True)
class ComputeSpan:
    start_ns: int
    end_ns: int


def _event_times(span: object) -> dict[str, int]:
    return {event.name: event.time_unix_nano for event in span.events}  # type: ignore[attr-defined]


def _attributes(span: object) -> dict[str, str]:
    out = {}
    for kv in span.attributes:  # type: ignore[attr-defined]
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = str(getattr(value, kind)) if kind else ""
    return out


class SpanMetrics:
    """Histograms built from OTLP spans. Feed it with :meth:`ingest`; thread-safe.

    >>> registry = CollectorRegistry()
    >>> metrics = SpanMetrics(registry)
    >>> metrics.ingest(ExportTraceServiceRequest())
    0
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        batch_window_s: float = 2.0,
        pending_ttl_s: float = 30.0,
        max_pending: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
        models: Optional[Iterable[str]] = None,
        max_versions: int = MAX_VERSIONS_PER_MODEL,
    ) -> None:
        buckets = names.LATENCY_BUCKETS_SECONDS
        stage_labels = [names.LABEL_MODEL, names.LABEL_VERSION, names.LABEL_STAGE]
        self.request_duration = Histogram(
            names.TRACED_REQUEST_DURATION, "End-to-end request duration in Triton (top-level span), from trace spans.",
            [names.LABEL_MODEL, names.LABEL_VERSION], buckets=buckets, registry=registry,
        )
        self.stage_duration = Histogram(
            names.TRACED_STAGE_DURATION, "Duration of one pipeline stage, queue wait included, from trace spans.",
            stage_labels, buckets=buckets, registry=registry,
        )
        self.queue_wait = Histogram(
            names.TRACED_STAGE_QUEUE_WAIT, "Time a request waited in a stage's queue (COMPUTE_START - QUEUE_START).",
            stage_labels, buckets=buckets, registry=registry,
        )
        self.compute = Histogram(
            names.TRACED_STAGE_COMPUTE, "Compute time of the execution that served a request (COMPUTE_END - COMPUTE_START).",
            stage_labels, buckets=buckets, registry=registry,
        )
        self.batch_size = Histogram(
            names.TRACED_STAGE_BATCH_SIZE, "Requests per execution, recovered from compute spans sharing timestamps "
            "(exact only at trace rate 1).",
            stage_labels, buckets=names.BATCH_SIZE_BUCKETS, registry=registry,
        )
        self.spans_received = Counter(names.SPANS_RECEIVED, "OTLP spans received.", registry=registry)
        self.spans_skipped = Counter(names.SPANS_SKIPPED, "OTLP spans skipped, by reason (the rest of their "
                                     "export is still read).", [names.LABEL_REASON], registry=registry)
        for reason in SKIP_REASONS:
            self.spans_skipped.labels(reason)
        self.models = frozenset(models) if models is not None else known_models()
        self.max_versions = max_versions
        self._versions: dict[str, set[str]] = {}  # label versions per model label, at most max_versions each
        self.batch_window_s = batch_window_s
        self.pending_ttl_s = pending_ttl_s
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._steps: OrderedDict[bytes, tuple[float, StepSpan]] = OrderedDict()
        self._computes: OrderedDict[bytes, tuple[float, ComputeSpan]] = OrderedDict()
        # open batch groups per (model, version), indexed by their cell of BATCH_TOLERANCE_NS on the
        # (start, end) plane: [start_ns, end_ns, size, last_seen]. Each cell holds at most one group
        # (any compute landing in a cell is within tolerance of the group there), so a join looks at
        # nine cells, not at every open group: an export of 16k made-up executions stays linear.
        self._groups: dict[tuple[str, str], dict[tuple[int, int], list[float]]] = {}

    # -- ingestion ---------------------------------------------------------------------
    def ingest(self, request: ExportTraceServiceRequest) -> int:
        count = 0
        with self._lock:
            now = self._clock()
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        count += 1
                        try:
                            self._one(span, now)
                        except SpanSkipped as exc:
                            self._skip(exc.reason, str(exc))
                        except Exception as exc:  # noqa: BLE001 - one span never aborts its export
                            self._skip(SKIP_INVALID, repr(exc))
            self._expire(now)
        self.spans_received.inc(count)
        return count

    def _skip(self, reason: str, error: str) -> None:
        self.spans_skipped.labels(reason).inc()
        logs.limited(f"span-skipped:{reason}", "warning", "skipped an OTLP span", stage="otlp", reason=reason,
                     error=error[:300])

    def _labels(self, model: str, version: str) -> tuple[str, str]:
        """Bounded label values for a span's model name and version."""
        if model not in self.models:
            return names.OTHER_MODEL, names.OTHER_VERSION
        seen = self._versions.setdefault(model, set())
        if version not in seen:
            if not _VERSION.fullmatch(version) or len(seen) >= self.max_versions:
                return model, names.OTHER_VERSION
            seen.add(version)
        return model, version

    @staticmethod
    def _check(span: object) -> None:
        if len(span.span_id) != SPAN_ID_BYTES:  # type: ignore[attr-defined]
            raise SpanSkipped(SKIP_BAD_ID, f"span id of {len(span.span_id)} bytes, not {SPAN_ID_BYTES}")  # type: ignore[attr-defined]
        if len(span.trace_id) != TRACE_ID_BYTES:  # type: ignore[attr-defined]
            raise SpanSkipped(SKIP_BAD_ID, f"trace id of {len(span.trace_id)} bytes, not {TRACE_ID_BYTES}")  # type: ignore[attr-defined]
        if len(span.parent_span_id) not in (0, SPAN_ID_BYTES):  # type: ignore[attr-defined]
            raise SpanSkipped(SKIP_BAD_ID, f"parent span id of {len(span.parent_span_id)} bytes")  # type: ignore[attr-defined]
        if span.end_time_unix_nano < span.start_time_unix_nano:  # type: ignore[attr-defined]
            raise SpanSkipped(SKIP_BAD_TIMESTAMPS, "the span ends before it starts")

    def _one(self, span: object, now: float) -> None:
        self._check(span)
        if span.name == COMPUTE_SPAN:  # type: ignore[attr-defined]
            events = _event_times(span)
            if "COMPUTE_START" not in events or "COMPUTE_END" not in events:
                return
            if events["COMPUTE_END"] < events["COMPUTE_START"]:
                raise SpanSkipped(SKIP_BAD_TIMESTAMPS, "COMPUTE_END before COMPUTE_START")
            compute = ComputeSpan(events["COMPUTE_START"], events["COMPUTE_END"])
            parent = span.parent_span_id  # type: ignore[attr-defined]
            step = self._steps.pop(parent, None)
            if step is None:
                self._remember(self._computes, parent, (now, compute))
            else:
                self._join(step[1], compute, now)
            return
        attrs = _attributes(span)
        model = attrs.get(ATTR_MODEL)
        if model is None:
            return  # the gRPC/HTTP InferRequest span: nothing Triton-internal to measure
        model, version = self._labels(model, attrs.get(ATTR_VERSION, ""))
        trace_id = span.trace_id.hex()  # type: ignore[attr-defined]
        duration = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9  # type: ignore[attr-defined]
        exemplar = {"trace_id": trace_id}
        if attrs.get(ATTR_PARENT, "0") == "0":
            self.request_duration.labels(model, version).observe(duration, exemplar)
        else:
            self.stage_duration.labels(model, version, model).observe(duration, exemplar)
        events = _event_times(span)
        step = StepSpan(model, version, events.get("QUEUE_START", span.start_time_unix_nano), trace_id)  # type: ignore[attr-defined]
        span_id = span.span_id  # type: ignore[attr-defined]
        compute = self._computes.pop(span_id, None)
        if compute is None:
            self._remember(self._steps, span_id, (now, step))
        else:
            self._join(step, compute[1], now)

    def _join(self, step: StepSpan, compute: ComputeSpan, now: float) -> None:
        labels = (step.model, step.version, step.model)
        exemplar = {"trace_id": step.trace_id}
        self.queue_wait.labels(*labels).observe(max(0, compute.start_ns - step.queue_start_ns) / 1e9, exemplar)
        self.compute.labels(*labels).observe((compute.end_ns - compute.start_ns) / 1e9, exemplar)
        groups = self._groups.setdefault((step.model, step.version), {})
        cell = (compute.start_ns // BATCH_TOLERANCE_NS, compute.end_ns // BATCH_TOLERANCE_NS)
        for ds, de in _NEIGHBOURS:
            group = groups.get((cell[0] + ds, cell[1] + de))
            if (group is not None and abs(group[0] - compute.start_ns) <= BATCH_TOLERANCE_NS
                    and abs(group[1] - compute.end_ns) <= BATCH_TOLERANCE_NS):
                group[2] += 1
                group[3] = now
                return
        groups[cell] = [compute.start_ns, compute.end_ns, 1, now]

    def _remember(self, store: OrderedDict, key: bytes, value: tuple) -> None:
        store[key] = value
        while len(store) > self.max_pending:
            store.popitem(last=False)

    # -- housekeeping ------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for store in (self._steps, self._computes):
            while store:
                key, (seen, _) = next(iter(store.items()))
                if now - seen < self.pending_ttl_s:
                    break
                store.popitem(last=False)
        for (model, version), groups in self._groups.items():
            closed = [cell for cell, group in groups.items() if now - group[3] >= self.batch_window_s]
            for cell in closed:
                self.batch_size.labels(model, version, model).observe(groups.pop(cell)[2])

    def flush(self, force: bool = False) -> None:
        """Close batch groups that stopped growing (all of them with ``force``)."""
        with self._lock:
            self._expire(float("inf") if force else self._clock())

    def pending(self) -> dict[str, int]:
        with self._lock:
            open_groups = sum(len(groups) for groups in self._groups.values())
            return {"steps": len(self._steps), "computes": len(self._computes), "batches": open_groups}


def ingest_all(metrics: SpanMetrics, requests: Iterable[ExportTraceServiceRequest]) -> int:
    return sum(metrics.ingest(request) for request in requests)
