"""Span -> histogram translation, on a span export captured from the real Triton 2.51."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from sightline.sidecars.otlp import OtlpDecodeError, decode
from sightline.sidecars.spans import SpanMetrics

CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "triton_otlp_ensemble.json"
STEPS = ("preprocess", "detector_model", "postprocess")


@pytest.fixture()
def capture() -> dict:
    return json.loads(CAPTURE.read_text())


def spans_of(document: dict) -> list[dict]:
    return document["resourceSpans"][0]["scopeSpans"][0]["spans"]


def as_export(spans: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"{name}_count", labels) or 0.0


def test_one_traced_request_fills_every_stage_histogram(capture):
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    assert metrics.ingest(decode(CAPTURE.read_bytes(), "application/json")) == 8
    metrics.flush(force=True)
    assert count(registry, "sightline_traced_request_duration_seconds", model="detector", version="1") == 1
    for step in STEPS:
        labels = {"model": step, "version": "1", "stage": step}
        for name in ("sightline_traced_stage_duration_seconds", "sightline_traced_stage_queue_wait_seconds",
                     "sightline_traced_stage_compute_seconds", "sightline_traced_stage_batch_size"):
            assert count(registry, name, **labels) == 1, (name, step)
    # the capture's detector_model step waited 2.1 ms between QUEUE_START and COMPUTE_START
    wait = registry.get_sample_value("sightline_traced_stage_queue_wait_seconds_sum",
                                     {"model": "detector_model", "version": "1", "stage": "detector_model"})
    assert wait == pytest.approx(0.002149, abs=1e-5)


def test_a_compute_span_that_arrives_before_its_step_is_still_joined(capture):
    registry = CollectorRegistry()
    metrics = SpanMetrics(registry)
    spans = spans_of(capture)
    computes = [s for s in spans if s["name"] == "compute"]
    others = [s for s in spans if s["name"] != "compute"]
    metrics.ingest(decode(as_export(computes), "application/json"))
    assert metrics.pending()["computes"] == 3
    metrics.ingest(decode(as_export(others), "application/json"))
    assert count(registry, "sightline_traced_stage_compute_seconds", model="postprocess", version="1", stage="postprocess") == 1


def test_requests_that_share_compute_timestamps_count_as_one_batch(capture):
    registry = CollectorRegistry()
    now = [0.0]
    metrics = SpanMetrics(registry, batch_window_s=2.0, clock=lambda: now[0])
    for i in range(3):  # three requests executed together: identical compute timestamps
        spans = copy.deepcopy(spans_of(capture))
        for span in spans:
            span["spanId"] = f"{i:02x}" + span["spanId"][2:]
            if span.get("parentSpanId"):
                span["parentSpanId"] = f"{i:02x}" + span["parentSpanId"][2:]
        metrics.ingest(decode(as_export(spans), "application/json"))
    now[0] = 1.0
    metrics.flush()
    assert count(registry, "sightline_traced_stage_batch_size", model="detector_model", version="1", stage="detector_model") == 0
    now[0] = 3.5  # the group stopped growing
    metrics.flush()
    labels = {"model": "detector_model", "version": "1", "stage": "detector_model"}
    assert count(registry, "sightline_traced_stage_batch_size", **labels) == 1
    assert registry.get_sample_value("sightline_traced_stage_batch_size_sum", labels) == 3


def test_histograms_carry_the_trace_id_as_an_exemplar(capture):
    registry = CollectorRegistry()
    SpanMetrics(registry).ingest(decode(CAPTURE.read_bytes(), "application/json"))
    trace_id = spans_of(capture)[0]["traceId"]
    text = openmetrics(registry).decode()
    assert f'trace_id="{trace_id}"' in text


def test_the_fast_json_path_builds_exactly_what_json_format_builds():
    from sightline.sidecars import otlp

    document = json.loads(CAPTURE.read_text())
    fast = otlp._build(copy.deepcopy(document))
    slow_document = copy.deepcopy(document)
    for span in spans_of(slow_document):
        otlp._hex_ids_to_base64(span)
    slow = otlp.json_format.ParseDict(slow_document, otlp.ExportTraceServiceRequest())
    assert fast == slow


def test_json_protobuf_and_gzip_bodies_decode_to_the_same_export():
    from_json = decode(CAPTURE.read_bytes(), "application/json")
    from_proto = decode(from_json.SerializeToString(), "application/x-protobuf")
    from_gzip = decode(gzip.compress(CAPTURE.read_bytes()), "application/json", "gzip")
    assert from_json == from_proto == from_gzip
    span = from_json.resource_spans[0].scope_spans[0].spans[0]
    assert len(span.trace_id) == 16 and len(span.span_id) == 8


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"{not json", "application/json", "not JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", "not hex"),
        (b"\xff\xff\xff", "application/x-protobuf", "not an OTLP protobuf"),
        (b"{}", "text/plain", "unsupported Content-Type"),
    ],
)
def test_a_bad_export_is_refused_with_a_reason(body, content_type, message):
    with pytest.raises(OtlpDecodeError, match=message):
        decode(body, content_type)


def _pair(i: int, start_ns: int, end_ns: int) -> list:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    step_id, compute_id = (2 * i + 1).to_bytes(8, "big"), (2 * i + 2).to_bytes(8, "big")
    trace = (i + 1).to_bytes(16, "big")
    attrs = [KeyValue(key="triton.model_name", value=AnyValue(string_value="detector_model")),
             KeyValue(key="triton.model_version", value=AnyValue(string_value="1")),
             KeyValue(key="triton.trace_parent_id", value=AnyValue(string_value="7"))]
    step = Span(trace_id=trace, span_id=step_id, parent_span_id=b"\x00" * 7 + b"\x09", name="detector_model",
                start_time_unix_nano=start_ns - 1000, end_time_unix_nano=end_ns + 1000, attributes=attrs,
                events=[Span.Event(name="QUEUE_START", time_unix_nano=start_ns - 1000)])
    compute = Span(trace_id=trace, span_id=compute_id, parent_span_id=step_id, name="compute",
                   start_time_unix_nano=start_ns, end_time_unix_nano=end_ns,
                   events=[Span.Event(name="COMPUTE_START", time_unix_nano=start_ns),
                           Span.Event(name="COMPUTE_END", time_unix_nano=end_ns)])
    return [step, compute]


def test_batches_are_recovered_across_tolerance_cells_and_a_flood_of_executions_stays_one_group_each():
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    from sightline.sidecars.spans import BATCH_TOLERANCE_NS as TOL

    registry = CollectorRegistry()
    metrics = SpanMetrics(registry, models={"detector_model"})
    base = 10**18 + TOL - 3_000  # just below a cell boundary, so a batch straddles two cells
    timings = [(base, base + 5 * TOL), (base + 4_000, base + 5 * TOL + 2_000), (base + 9_000, base + 5 * TOL - 1_000)]
    # 20000 executions a request each, 30 us apart: quadratic grouping took minutes on this many
    timings += [(base + 10 * TOL + k * 30_000, base + 10 * TOL + k * 30_000 + 7 * TOL) for k in range(20_000)]
    spans = [span for i, (start, end) in enumerate(timings) for span in _pair(i, start, end)]
    export = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    assert metrics.ingest(export) == 2 * len(timings)
    assert metrics.pending()["batches"] == 1 + 20_000
    metrics.flush(force=True)
    labels = {"model": "detector_model", "version": "1", "stage": "detector_model"}
    assert count(registry, "sightline_traced_stage_batch_size", **labels) == 1 + 20_000
    assert registry.get_sample_value("sightline_traced_stage_batch_size_sum", labels) == 3 + 20_000
