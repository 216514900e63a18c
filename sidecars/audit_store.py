"""Store redacted audit frames in a bounded directory, and expire them.

Only datagrams that say they were redacted inside Triton are written; anything else is
refused and counted, so an unredacted frame is never written. The directory is bounded
by file count and bytes (oldest go first) and every frame expires after ``ttl_s``.
Each frame is ``<unix-ms>_<request_id>.jpg`` with a ``.json`` beside it (camera, time,
masked regions, expiry).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from sightline import conventions as names

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


class AuditStore:
    def __init__(
        self,
        directory: Path,
        registry: CollectorRegistry,
        ttl_s: float = 24 * 3600,
        max_files: int = 1000,
        max_bytes: int = 200 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.stored = Counter("sightline_audit_frames_stored_total", "Redacted audit frames written.", registry=registry)
        self.refused = Counter("sightline_audit_frames_refused_total", "Audit datagrams refused, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.removed = Counter("sightline_audit_frames_removed_total", "Audit frames deleted, by reason.",
                               [names.LABEL_REASON], registry=registry)
        self.frames = Gauge("sightline_audit_frames", "Audit frames on disk.", registry=registry)
        self.bytes = Gauge("sightline_audit_bytes", "Bytes of audit frames on disk.", registry=registry)

    def accept(self, body: dict) -> bool:
        if body.get("redacted") is not True:
            self.refused.labels("not_redacted").inc()
            return False
        try:
            jpeg = base64.b64decode(body["jpeg"], validate=True)
            request_id = _SAFE_ID.sub("_", str(body["request_id"]))[:64]
        except (KeyError, ValueError, TypeError):
            self.refused.labels("decode_error").inc()
            return False
        if not jpeg.startswith(b"\xff\xd8"):
            self.refused.labels("not_a_jpeg").inc()
            return False
        now = self._clock()
        stem = f"{int(now * 1000)}_{request_id}"
        meta = {
            "request_id": body["request_id"],
            "camera": body.get("camera"),
            "captured_at": body.get("ts"),
            "stored_at": now,
            "expires_at": now + self.ttl_s,
            "masked_regions": body.get("masked_regions"),
            "width": body.get("width"),
            "height": body.get("height"),
        }
        with self._lock:
            (self.directory / f"{stem}.jpg").write_bytes(jpeg)
            (self.directory / f"{stem}.json").write_text(json.dumps(meta))
            self.stored.inc()
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
