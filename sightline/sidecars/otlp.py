"""Decode OTLP/HTTP trace exports (protobuf or JSON) with the OpenTelemetry protos.

OTLP/JSON departs from the standard protobuf JSON mapping in one place: trace and span
ids are hex strings, not base64. They are rewritten before ``json_format`` parses the
document, so the rest is the proto package's own parsing.

``json_format`` is pure Python and was the sidecar's largest cost (about 70 us a span).
For the shape Triton's exporter writes (scalar attributes, events, no links), the proto
messages are built directly from the document instead; a test checks that both paths give
the same message, and anything unusual falls back to ``json_format``.

Anyone who reaches the port can post here, so every read is bounded: :func:`read_body`
reads exactly the declared ``Content-Length`` (at most ``MAX_BODY_BYTES``; a negative,
non-numeric or repeated one is refused, never read until the client closes), before a
deadline when one is given, and a gzip body is inflated to at most ``MAX_INFLATED_BYTES``.
Both limits are 4 MiB: Triton's exporter sends batches of at most 512 spans (about 200 KB),
and what decoding builds from a body is 25-32 times its size (1 MiB of empty JSON objects or
protobuf messages), so a 4 MiB body costs at most about 130 MB. Every refusal is an
:class:`OtlpRejected` carrying its HTTP status (400, 408, 411, 413 or 415) and a ``reason``
for the rejects counter; nothing else escapes :func:`decode`.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import zlib
from http import HTTPStatus
from typing import Any, BinaryIO, Callable, Optional

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from sightline.errors import InputError

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_INFLATED_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,19}")

# Rejection reasons (the values of the rejects counter's ``reason`` label).
REASON_DECODE = "decode_error"
REASON_TOO_LARGE = "too_large"
REASON_BAD_LENGTH = "bad_content_length"
REASON_TRUNCATED = "truncated"
REASON_BAD_ENCODING = "unsupported_encoding"
REASON_TIMEOUT = "timeout"
REASON_BUSY = "busy"
REJECT_REASONS = (REASON_DECODE, REASON_TOO_LARGE, REASON_BAD_LENGTH, REASON_TRUNCATED, REASON_BAD_ENCODING,
                  REASON_TIMEOUT, REASON_BUSY)


class OtlpRejected(InputError):
    """A POST to ``/v1/traces`` is refused: ``status`` to answer, ``reason`` to count, the message to tell."""

    status = HTTPStatus.BAD_REQUEST
    reason = REASON_DECODE

    def __init__(self, message: str, reason: Optional[str] = None, status: Optional[HTTPStatus] = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status


class OtlpDecodeError(OtlpRejected):
    """The body is not a valid OTLP trace export; the message says what is wrong (400)."""


class OtlpTooLarge(OtlpDecodeError):
    """The body, or what it inflates to, is over its limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    reason = REASON_TOO_LARGE


def read_body(headers: Any, rfile: BinaryIO, max_bytes: int = MAX_BODY_BYTES, deadline: Optional[float] = None,
              settimeout: Optional[Callable[[float], None]] = None) -> bytes:
    """Read one request body of exactly ``Content-Length`` bytes, at most ``max_bytes``.

    A body without a usable length is refused before anything is read: chunked
    (411), a non-numeric, negative or repeated length (400), one over ``max_bytes``
    (413). A client that sends less than it declared gets a 400 once it closes, and with
    a ``deadline`` (``time.monotonic()``) and the socket's ``settimeout``, a 408 once the
    deadline passes, however it trickles its bytes. No ``Content-Length`` is an empty body.
    The connection should be closed after any refusal: the body is left unread.
    """
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        raise OtlpDecodeError("Transfer-Encoding chunked is not accepted; send Content-Length",
                              REASON_BAD_LENGTH, HTTPStatus.LENGTH_REQUIRED)
    values = headers.get_all("Content-Length") if hasattr(headers, "get_all") else None
    if values is not None and len(values) > 1:
        raise OtlpDecodeError(f"{len(values)} Content-Length headers: send one", REASON_BAD_LENGTH)
    raw = headers.get("Content-Length")
    if raw is None:
        return b""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise OtlpDecodeError(f"Content-Length {raw[:40]!r} is not a byte count", REASON_BAD_LENGTH)
    length = int(text)
    if length > max_bytes:
        raise OtlpTooLarge(f"body of {length} bytes: at most {max_bytes} are read")
    # Into one buffer, whatever each receive brings (readinto1: so the deadline holds), so a body
    # sent a byte at a time costs its length, not an object per byte.
    readinto = getattr(rfile, "readinto1", None) or rfile.readinto  # type: ignore[attr-defined]
    body = bytearray(length)
    view, done = memoryview(body), 0
    while done < length:  # bounded: at most `length` bytes, and each read returns at least one or EOF
        if deadline is not None and settimeout is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OtlpDecodeError(f"the body was not sent in time ({done} of its {length} bytes)",
                                      REASON_TIMEOUT, HTTPStatus.REQUEST_TIMEOUT)
            settimeout(remaining)
        try:
            got = readinto(view[done:done + _READ_CHUNK])
        except (socket.timeout, TimeoutError):
            raise OtlpDecodeError(f"the body was not sent in time ({done} of its {length} bytes)",
                                  REASON_TIMEOUT, HTTPStatus.REQUEST_TIMEOUT) from None
        if not got:
            raise OtlpDecodeError(f"the body ended after {done} of its {length} bytes", REASON_TRUNCATED)
        done += got
    view.release()
    return bytes(body)


def inflate(body: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """A gzip body inflated to at most ``max_bytes`` (concatenated members included), a
    megabyte at a time, so a bomb costs no more memory than the limit."""
    out = bytearray()
    data = body
    try:
        while data:  # one gzip member per pass
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while not inflater.eof:  # each pass inflates at least one byte, or ends the member
                piece = inflater.decompress(data, min(_READ_CHUNK, max_bytes - len(out) + 1))
                data = inflater.unconsumed_tail
                if not piece and not data:
                    raise OtlpDecodeError("Content-Encoding gzip, but the body is not gzip: it ends mid-stream")
                out += piece
                if len(out) > max_bytes:
                    raise OtlpTooLarge(f"gzip body inflates to more than {max_bytes} bytes")
            data = inflater.unused_data
    except zlib.error as exc:
        raise OtlpDecodeError(f"Content-Encoding gzip, but the body is not gzip: {exc}") from exc
    return bytes(out)


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = node.get(key)
        if isinstance(value, str) and value:
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as exc:
                raise OtlpDecodeError(f"{key} {value!r} is not hex") from exc


_SCALARS = {"stringValue": "string_value", "boolValue": "bool_value", "intValue": "int_value",
            "doubleValue": "double_value"}


class _NotFastPath(Exception):
    """The document uses a part of OTLP the fast path does not build; use json_format."""


def _any_value(value: dict[str, Any]) -> AnyValue:
    if len(value) != 1:
        raise _NotFastPath
    (key, item), = value.items()
    field = _SCALARS.get(key)
    if field is None:
        raise _NotFastPath  # arrays, kvlists, bytes
    return AnyValue(**{field: int(item) if field == "int_value" else item})


def _attributes(items: list[dict[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=kv["key"], value=_any_value(kv.get("value", {}))) for kv in items]


def _span(raw: dict[str, Any]) -> Span:
    if raw.get("links") or raw.get("droppedAttributesCount") or raw.get("droppedEventsCount"):
        raise _NotFastPath
    status = raw.get("status")
    return Span(
        trace_id=bytes.fromhex(raw.get("traceId", "")),
        span_id=bytes.fromhex(raw.get("spanId", "")),
        parent_span_id=bytes.fromhex(raw.get("parentSpanId", "")),
        trace_state=raw.get("traceState", ""),
        name=raw.get("name", ""),
        kind=int(raw.get("kind", 0)),
        start_time_unix_nano=int(raw.get("startTimeUnixNano", 0)),
        end_time_unix_nano=int(raw.get("endTimeUnixNano", 0)),
        attributes=_attributes(raw.get("attributes", [])),
        events=[
            Span.Event(name=e.get("name", ""), time_unix_nano=int(e.get("timeUnixNano", 0)),
                       attributes=_attributes(e.get("attributes", [])))
            for e in raw.get("events", [])
        ],
        status=Status(code=int(status.get("code", 0)), message=status.get("message", "")) if status else None,
    )


def _build(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """Build the protos directly from the fields Triton's exporter writes (5x faster than
    ``json_format``); anything else raises :class:`_NotFastPath`."""
    resource_spans = []
    for rs in document.get("resourceSpans", []):
        resource = rs.get("resource")
        scope_spans = []
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope")
            scope_spans.append(ScopeSpans(
                scope=InstrumentationScope(name=scope.get("name", ""), version=scope.get("version", "")) if scope else None,
                spans=[_span(span) for span in ss.get("spans", [])],
                schema_url=ss.get("schemaUrl", ""),
            ))
        resource_spans.append(ResourceSpans(
            resource=Resource(attributes=_attributes(resource.get("attributes", []))) if resource else None,
            scope_spans=scope_spans,
            schema_url=rs.get("schemaUrl", ""),
        ))
    return ExportTraceServiceRequest(resource_spans=resource_spans)


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpDecodeError(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise OtlpDecodeError("body is JSON nested too deeply") from exc
    if not isinstance(document, dict):
        raise OtlpDecodeError("body must be a JSON object with resourceSpans")
    try:
        return _build(document)
    except (_NotFastPath, KeyError, TypeError, AttributeError, ValueError, OverflowError, RecursionError):
        pass  # the complete json_format parser decides, and names what is wrong
    for resource_spans in _items(document, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            for span in _items(scope_spans, "spans"):
                _hex_ids_to_base64(span)
                for link in _items(span, "links"):
                    _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise OtlpDecodeError(f"not an OTLP trace export: {exc}") from exc
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:
        # json_format's own checks miss some values (an enum of 1e400): still the body's fault
        raise OtlpDecodeError(f"not an OTLP trace export: {type(exc).__name__}: {exc}") from exc


def _items(node: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``node[key]`` as a list of objects; anything else is named as what is wrong."""
    items = node.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise OtlpDecodeError(f"not an OTLP trace export: {key} must be a list of objects")
    return items


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise OtlpDecodeError(f"not an OTLP protobuf trace export: {exc}") from exc
    return request


def decode(body: bytes, content_type: str, content_encoding: str = "",
           max_inflated: int = MAX_INFLATED_BYTES) -> ExportTraceServiceRequest:
    """Decode one POST to ``/v1/traces``; anything wrong raises :class:`OtlpDecodeError` (or :class:`OtlpTooLarge`)."""
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        body = inflate(body, max_inflated)
    elif encoding not in ("", "identity"):
        raise OtlpDecodeError(f"unsupported Content-Encoding {content_encoding[:40]!r}; send gzip or none",
                              REASON_BAD_ENCODING, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON:
        return decode_json(body)
    if kind in (PROTOBUF, "application/protobuf", ""):
        return decode_protobuf(body)
    raise OtlpDecodeError(f"unsupported Content-Type {content_type!r}; send {PROTOBUF} or {JSON}")
