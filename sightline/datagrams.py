"""The two datagrams the Triton steps send the monitor over UDP, encoder and decoder side by side.

Both are compact JSON objects (no spaces) whose first key is ``kind``, then the format's
version ``v``:

- ``tap`` (version 1): one sampled request for drift: ``sender`` and ``seq`` (per-sender
  sequence, for loss), ``request_id``, ``camera``, ``model_version``, ``ts``, the
  ``embedding`` (float16, base64), the ``quality`` features and a ``detections`` summary.
  Older senders wrote no ``kind``; a datagram without one is a tap record.
- ``audit`` (version 2): one redacted frame for the audit store: ``request_id``,
  ``camera``, ``ts``, ``redaction`` (what the sender says it did; the store does not trust
  it), ``redaction_reason``, ``masked_regions``, ``width``, ``height``, ``jpeg`` (base64).

The monitor validates every field of what arrives (``sightline.sidecars.tap_receiver``,
``sightline.sidecars.audit_store``); this module only writes and tells the kinds apart, so
it needs nothing the Triton image does not have.

>>> kind_of(tap_datagram(sender="s", seq=1, request_id="r", camera="cam-1", model_version="1", ts=0.0,
...                      embedding=np.zeros(4, np.float32), quality={}, detections={}))
'tap'
>>> kind_of(b'{"v":1,"camera":"cam-1"}'), kind_of(b'{"kind":"audit","v":2}')
('tap', 'audit')
>>> decode_embedding(encode_embedding(np.array([0.5, -2.0], np.float32))).tolist()
[0.5, -2.0]
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping, Optional

import numpy as np

TAP = "tap"
AUDIT = "audit"
TAP_VERSION = 1
AUDIT_VERSION = 2
MAX_DATAGRAM_BYTES = 60_000  # a sender drops anything larger (one UDP datagram on loopback)
_AUDIT_PREFIX = b'{"kind":"audit"'


def encode_embedding(embedding: np.ndarray) -> str:
    return base64.b64encode(np.asarray(embedding, dtype=np.float16).tobytes()).decode()


def decode_embedding(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=np.float16).astype(np.float32)


def _compact(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def tap_datagram(*, sender: str, seq: int, request_id: str, camera: str, model_version: str, ts: float,
                 embedding: np.ndarray, quality: Mapping[str, float], detections: Mapping[str, object]) -> bytes:
    return _compact({"kind": TAP, "v": TAP_VERSION, "sender": sender, "seq": seq, "request_id": request_id,
                     "camera": camera, "model_version": model_version, "ts": ts,
                     "embedding": encode_embedding(embedding), "quality": dict(quality),
                     "detections": dict(detections)})


def audit_datagram(*, request_id: str, camera: str, ts: float, redaction: str, redaction_reason: Optional[str],
                   masked_regions: int, width: int, height: int, jpeg: bytes) -> bytes:
    return _compact({"kind": AUDIT, "v": AUDIT_VERSION, "request_id": request_id, "camera": camera, "ts": ts,
                     "redaction": redaction, "redaction_reason": redaction_reason,
                     "masked_regions": masked_regions, "width": width, "height": height,
                     "jpeg": base64.b64encode(jpeg).decode()})


def kind_of(datagram: bytes) -> str:
    """``audit`` or ``tap``, from the first key the encoders above write; anything else is
    read as a tap record and validated as one (and refused by name if it is not)."""
    return AUDIT if datagram.startswith(_AUDIT_PREFIX) else TAP
