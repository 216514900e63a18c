"""Audit samples: a few frames leave Triton, downscaled, and redacted so that they fail closed.

A frame is sampled by an independent random draw at the audit rate (never by its
``request_id``, which may be empty or reused; the tap draws separately, so audit and tap
samples are independent), then rate-limited by a token bucket. Redaction
(``sightline.redaction.redact``, which fails closed) happens inside the preprocess step, in
a worker thread, so an unredacted frame never leaves Triton. A frame that cannot be encoded
small enough is not sent at all. The sidecar's store does not trust any of this: it applies
the same policy again to what it receives (``sightline.sidecars.audit_store``).
"""

from __future__ import annotations

import queue
import random
import socket
import threading
import time
from typing import List, Optional, Tuple

import cv2
import numpy as np

from sightline import datagrams
from sightline.redaction import JPEG_QUALITY, Cascade, TokenBucket, background_priority, load_cascades, redact, warm_up
from sightline.steps.tap import sampled


class AuditSampler:
    """Decides, redacts and sends. Never blocks, never raises into the request path.

    Redaction costs a few hundred milliseconds of CPU (the detectors at 640 px), so it runs
    in one worker thread per model instance, not in ``execute()``: ``send`` copies the frame
    into a queue of ``QUEUE_FRAMES`` and returns. The rate limit is per model instance (each
    preprocess instance is its own process): one frame every four minutes by default (the
    step's ``audit_per_minute``), under 1 % of a core with the store's second redaction, and
    with two instances 720 frames a day, which the store keeps whole (``audit_max_files``,
    1000, for 24 h).
    """

    QUEUE_FRAMES = 2

    def __init__(self, address: Tuple[str, int], rate: float = 0.01, per_minute: float = 0.25,
                 rng: Optional[random.Random] = None) -> None:
        self.address = address
        self.rate = rate
        self.bucket = TokenBucket(per_minute)
        self.rng = rng or random.Random()
        self.lost = 0  # frames the worker took but could not send (encoding, size, socket)
        self._cascades: Optional[List[Cascade]] = None
        self._cascades_error: Optional[str] = None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=self.QUEUE_FRAMES)
        self._worker: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def wants(self, request_id: str) -> bool:
        """Whether to audit this request: a draw at ``rate`` (``request_id`` never decides), then the bucket."""
        return sampled(self.rate, self.rng) and self.bucket.take()

    def _loaded(self) -> Optional[List[Cascade]]:
        if self._cascades is None and self._cascades_error is None:
            try:
                self._cascades = load_cascades()
            except (RuntimeError, cv2.error) as exc:
                self._cascades_error = str(exc)  # every frame is blurred whole from now on
        return self._cascades

    def start(self) -> None:
        """Start the redaction worker (it loads the detectors and warms them up first, at low
        priority). ``send`` starts it too; the step starts it when it loads, before traffic."""
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="audit-redact", daemon=True)
                self._worker.start()

    def send(self, image: np.ndarray, request_id: str, camera: str) -> str:
        """Hand a copy of the frame to the redaction worker. Returns the outcome label: ``sent``
        (queued; the worker always sends a redacted frame), or ``dropped`` when the worker
        still has ``QUEUE_FRAMES`` to do."""
        self.start()
        try:
            self._queue.put_nowait((np.array(image, copy=True), request_id, camera, time.time()))
        except queue.Full:
            return "dropped"
        return "sent"

    def _run(self) -> None:
        background_priority()
        try:
            warm_up(self._loaded())
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first frame allocates
            pass
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                outcome = self.send_now(*item)
            except Exception:  # noqa: BLE001 - a worker that dies would silently end auditing
                outcome = "dropped"
            if outcome != "sent":
                with self._lock:
                    self.lost += 1

    def take_lost(self) -> int:
        """Frames the worker took but could not send since the last call (the step counts them
        as ``lost`` from its own thread: the worker never touches Triton's metrics)."""
        with self._lock:
            lost, self.lost = self.lost, 0
        return lost

    def send_now(self, image: np.ndarray, request_id: str, camera: str, captured: Optional[float] = None) -> str:
        """Redact and send in the caller's thread. Returns ``sent`` or ``dropped``."""
        redaction = redact(image, self._loaded())
        frame = redaction.frame
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return "dropped"
        datagram = datagrams.audit_datagram(
            request_id=request_id, camera=camera, ts=time.time() if captured is None else captured,
            redaction=redaction.label, redaction_reason=redaction.reason, masked_regions=redaction.regions,
            width=int(frame.shape[1]), height=int(frame.shape[0]), jpeg=jpeg.tobytes())
        if len(datagram) > datagrams.MAX_DATAGRAM_BYTES:
            return "dropped"
        try:
            self._socket.sendto(datagram, self.address)
        except OSError:
            return "dropped"
        return "sent"

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the worker finish what it holds (at most ``timeout_s``), then close the socket."""
        worker = self._worker
        if worker is not None:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            worker.join(timeout=timeout_s)
        self._socket.close()
