"""Decode OTLP/HTTP trace exports (protobuf or JSON) with the OpenTelemetry protos.

OTLP/JSON departs from the standard protobuf JSON mapping in one place: trace and span
ids are hex strings, not base64. They are rewritten before ``json_format`` parses the
document, so the rest is the proto package's own parsing.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP trace export; the message says what is wrong."""


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = node.get(key)
        if isinstance(value, str) and value:
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as exc:
                raise OtlpDecodeError(f"{key} {value!r} is not hex") from exc


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpDecodeError(f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise OtlpDecodeError("body must be a JSON object with resourceSpans")
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids_to_base64(span)
                for link in span.get("links", []):
                    _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpDecodeError(f"not an OTLP trace export: {exc}") from exc


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpDecodeError(f"not an OTLP protobuf trace export: {exc}") from exc
    return request


def decode(body: bytes, content_type: str, content_encoding: str = "") -> ExportTraceServiceRequest:
    """Decode one POST to ``/v1/traces``."""
    if content_encoding.strip().lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except OSError as exc:
            raise OtlpDecodeError(f"Content-Encoding gzip, but the body is not gzip: {exc}") from exc
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON:
        return decode_json(body)
    if kind in (PROTOBUF, "application/protobuf", ""):
        return decode_protobuf(body)
    raise OtlpDecodeError(f"unsupported Content-Type {content_type!r}; send {PROTOBUF} or {JSON}")
