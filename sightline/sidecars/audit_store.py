"""Store audit frames in a bounded directory, and expire them; never trust the sender.

The sender (the preprocess step) downscales and redacts before a frame leaves Triton, and
says what it did. The store does not take its word: it accepts only a datagram that claims
a known redaction, whose JPEG header says a frame no wider than the audit width (read before
anything is decoded, and decoded with the steps' own limits: at most 320 x 5120 pixels), and then
applies the same fail-closed policy again (``sightline.redaction.redact``: mask what the
detectors find, blur the whole frame when they cannot judge it, blur it whole as well when
the detectors cannot be loaded here). What it writes is its own re-encoding of the frame it
redacted (nothing else the sender put in the file survives), and the ``.json`` beside it
records what the store verified and did (``redaction``, ``masked_regions``, ``width``,
``height``) apart from what the sender claimed (``sender``). Refusals are counted by reason.
Work is bounded: a token bucket limits how many frames a minute are redacted here, and
with ``background`` (the monitor's setting) they are redacted in one worker thread behind a
short queue, so the receiver that hands them over never waits (a full queue is ``busy``).

The directory is bounded by file count and bytes (oldest go first) and every frame expires
after ``ttl_s``. Each frame is ``<unix-ms>_<sequence>_<request_id>.jpg`` with a ``.json`` beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
import queue
import re
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import cv2  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Gauge  # noqa: E402

from sightline import conventions as names  # noqa: E402
from sightline import images  # (the package root set OpenCV's decoder limit before cv2 loaded)
from sightline.redaction import (  # noqa: E402
    JPEG_QUALITY,
    MAX_WIDTH,
    REDACTIONS,
    Redaction,
    TokenBucket,
    background_priority,
    load_cascades,
    redact,
    warm_up,
)

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
MAX_TEXT = 200  # longest request id or camera kept in the metadata
# An audit frame is at most MAX_WIDTH wide; its height is bounded by the steps' aspect-ratio
# limit, so nothing the store decodes is larger than 320 x 5120 (5 MB), whatever a datagram says.
MAX_PIXELS = MAX_WIDTH * MAX_WIDTH * images.MAX_ASPECT_RATIO


def _text(value: object) -> Optional[str]:
    return None if value is None else str(value)[:MAX_TEXT]


class AuditStore:
    def __init__(
        self,
        directory: Path,
        registry: CollectorRegistry,
        ttl_s: float = 24 * 3600,
        max_files: int = 1000,
        max_bytes: int = 200 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        per_minute: float = 6.0,  # each frame costs about 0.9 s of CPU to redact again
        burst: float = 10.0,  # above the senders' own bursts (2 a preprocess instance): never starves them
        background: bool = False,
        queue_frames: int = 8,
    ) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket = TokenBucket(per_minute, burst=burst, tokens=burst, updated=clock())
        self._cascades: Optional[list] = None
        self._cascades_error: Optional[str] = None
        self._written = 0
        # background: accept() checks and queues; one worker thread decodes, redacts and
        # writes, so a UDP receive thread is never held for a redaction (0.5-1 s of CPU).
        self._queue: "Optional[queue.Queue]" = queue.Queue(maxsize=queue_frames) if background else None
        self._worker: Optional[threading.Thread] = None
        directory.mkdir(parents=True, exist_ok=True)
        self.stored = Counter(names.AUDIT_FRAMES_STORED, "Redacted audit frames written.", registry=registry)
        self.redactions = Counter(names.AUDIT_REDACTIONS,
                                  "Audit frames written, by what the store's own redaction pass did.",
                                  ["redaction"], registry=registry)
        self.refused = Counter(names.AUDIT_REFUSED, "Audit datagrams refused, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.removed = Counter(names.AUDIT_FRAMES_REMOVED, "Audit frames deleted, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.frames = Gauge(names.AUDIT_FRAMES_ON_DISK, "Audit frames on disk.", registry=registry)
        self.bytes = Gauge(names.AUDIT_BYTES_ON_DISK, "Bytes of audit frames on disk.", registry=registry)

    def _refuse(self, reason: str) -> bool:
        self.refused.labels(reason).inc()
        return False

    def _loaded(self) -> Optional[list]:
        if self._cascades is None and self._cascades_error is None:
            try:
                self._cascades = load_cascades()
            except (RuntimeError, cv2.error) as exc:
                self._cascades_error = str(exc)  # every frame is blurred whole from now on
        return self._cascades

    def accept(self, body: dict) -> bool:
        """Verify, redact again and write one audit datagram (with ``background``, queue it for that
        after the cheap checks); False, and a counted reason, if refused. Never raises."""
        claim = body.get("redaction") if isinstance(body, dict) else None
        if not isinstance(claim, str) or claim not in REDACTIONS:
            return self._refuse("not_redacted")  # no sender claim of a known redaction: not even looked at
        try:
            jpeg = base64.b64decode(body["jpeg"], validate=True)
            request_id = _SAFE_ID.sub("_", str(body["request_id"]))[:64]
        except (KeyError, ValueError, TypeError, binascii.Error):
            return self._refuse("decode_error")
        if not jpeg.startswith(b"\xff\xd8"):
            return self._refuse("not_a_jpeg")
        try:  # the header alone, before a token is spent or a byte decoded: a bomb costs nothing
            header = images.read_header(jpeg)
        except images.InvalidInput as exc:
            return self._refuse(exc.reason)
        if header.width > MAX_WIDTH:
            return self._refuse("not_downscaled")
        if not self._bucket.take(self._clock()):
            return self._refuse("rate_limited")
        if self._queue is None:
            return self._store(jpeg, request_id, claim, body)
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="audit-store", daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait((jpeg, request_id, claim, body))
        except queue.Full:
            return self._refuse("busy")
        return True

    def _run(self) -> None:
        assert self._queue is not None
        background_priority()  # redacting again yields the CPU to the monitor's listeners and to Triton
        try:
            warm_up(self._loaded())
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first frame allocates
            pass
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._store(*item)
            except Exception:  # noqa: BLE001 - one bad frame must not end the store's worker
                self._refuse("store_error")

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the worker finish the frames it holds (at most ``timeout_s``)."""
        if self._queue is not None and self._worker is not None:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            self._worker.join(timeout=timeout_s)

    def _store(self, jpeg: bytes, request_id: str, claim: str, body: dict) -> bool:
        """Decode, check the size, redact again, write. False (and a counted reason) if refused."""
        try:  # the steps' own checks: header geometry, end marker, scan count, decoder pixel limit
            frame = images.decode_image(jpeg, MAX_PIXELS)
        except images.InvalidInput as exc:
            return self._refuse(exc.reason)
        if frame.shape[1] > MAX_WIDTH:
            return self._refuse("not_downscaled")
        verdict: Redaction = redact(frame, self._loaded())
        ok, encoded = cv2.imencode(".jpg", verdict.frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return self._refuse("encode_error")
        now = self._clock()
        with self._lock:
            self._written += 1  # ids may be empty or reused: the sequence keeps every file apart
            stem = f"{int(now * 1000)}_{self._written:06d}_{request_id}"
        meta = {
            "request_id": _text(body["request_id"]),
            "camera": _text(body.get("camera")),
            "captured_at": body.get("ts") if isinstance(body.get("ts"), (int, float)) else None,
            "stored_at": now,
            "expires_at": now + self.ttl_s,
            # What the store verified and did to the frame it wrote.
            "redaction": verdict.label,
            "redaction_reason": verdict.reason,
            "masked_regions": verdict.regions,
            "width": int(verdict.frame.shape[1]),
            "height": int(verdict.frame.shape[0]),
            # What the sender said it did: recorded, not trusted.
            "sender": {"redaction": claim, "redaction_reason": _text(body.get("redaction_reason")),
                       "masked_regions": body.get("masked_regions") if isinstance(body.get("masked_regions"), int)
                       else None},
        }
        with self._lock:
            try:
                (self.directory / f"{stem}.jpg").write_bytes(encoded.tobytes())
                (self.directory / f"{stem}.json").write_text(json.dumps(meta))
            except OSError:  # a full or read-only volume: refused and counted, the receiver keeps running
                (self.directory / f"{stem}.jpg").unlink(missing_ok=True)
                return self._refuse("write_error")
            self.stored.inc()
            self.redactions.labels(verdict.label).inc()
            self._sweep_locked(now)
        return True

    def sweep(self) -> None:
        with self._lock:
            self._sweep_locked(self._clock())

    def _sweep_locked(self, now: float) -> None:
        frames = sorted(self.directory.glob("*.jpg"))  # names start with the store time
        keep = []
        for path in frames:
            stored_ms = int(path.stem.split("_", 1)[0]) if path.stem.split("_", 1)[0].isdigit() else 0
            if now - stored_ms / 1000 >= self.ttl_s:
                self._remove(path, "expired")
            else:
                keep.append(path)
        sizes = [p.stat().st_size for p in keep]
        while keep and (len(keep) > self.max_files or sum(sizes) > self.max_bytes):
            self._remove(keep.pop(0), "over_budget")
            sizes.pop(0)
        self.frames.set(len(keep))
        self.bytes.set(sum(sizes))

    def _remove(self, path: Path, reason: str) -> None:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        self.removed.labels(reason).inc()
