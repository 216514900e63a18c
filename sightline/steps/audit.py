"""Audit samples: a few frames leave Triton, downscaled, with faces and plates masked.

A frame is sampled by a hash of its ``request_id`` (salted, so audit and tap samples are
independent), then rate-limited by a token bucket. It is downscaled first and masked
second, inside the preprocess step, so an unredacted frame never leaves Triton. Masks are
solid rectangles over what OpenCV's bundled Haar cascades find (frontal faces, licence
plates), grown by a margin. The JPEG goes to the sidecar as one UDP datagram.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sightline.steps.tap import sampled

AUDIT_SALT = "audit:"
MAX_WIDTH = 320
JPEG_QUALITY = 70
MASK_MARGIN = 0.15
CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_russian_plate_number.xml")

Box = Tuple[int, int, int, int]


def load_cascades(names: Sequence[str] = CASCADES) -> List["cv2.CascadeClassifier"]:
    cascades = []
    for name in names:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if cascade.empty():
            raise RuntimeError(f"OpenCV's Haar cascade {name} could not be loaded")
        cascades.append(cascade)
    return cascades


def downscale(image: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    height, width = image.shape[:2]
    if width <= max_width:
        return image.copy()
    scale = max_width / width
    return cv2.resize(image, (max_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def find_sensitive(image: np.ndarray, cascades: Sequence["cv2.CascadeClassifier"]) -> List[Box]:
    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    found: List[Box] = []
    for cascade in cascades:
        for x, y, w, h in cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=3, minSize=(12, 12)):
            found.append((int(x), int(y), int(w), int(h)))
    return found


def mask(image: np.ndarray, boxes: Sequence[Box], margin: float = MASK_MARGIN) -> np.ndarray:
    out = image.copy()
    height, width = out.shape[:2]
    for x, y, w, h in boxes:
        dx, dy = int(w * margin), int(h * margin)
        x1, y1 = max(0, x - dx), max(0, y - dy)
        x2, y2 = min(width, x + w + dx), min(height, y + h + dy)
        out[y1:y2, x1:x2] = 0
    return out


def redact(image: np.ndarray, cascades: Sequence["cv2.CascadeClassifier"], max_width: int = MAX_WIDTH) -> Tuple[np.ndarray, int]:
    """Downscale, then mask every face and plate the cascades find. Returns (frame, masked regions)."""
    small = downscale(image, max_width)
    boxes = find_sensitive(small, cascades)
    return mask(small, boxes), len(boxes)


@dataclass
class TokenBucket:
    per_minute: float
    burst: float = 2.0
    tokens: float = field(default=2.0)
    updated: float = field(default_factory=time.monotonic)

    def take(self, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_minute / 60.0)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AuditSampler:
    """Decides, redacts and sends. Never blocks, never raises into the request path.

    The rate limit is per model instance (each preprocess instance is its own process).
    """

    def __init__(self, address: Tuple[str, int], rate: float = 0.01, per_minute: float = 6.0) -> None:
        self.address = address
        self.rate = rate
        self.bucket = TokenBucket(per_minute)
        self._cascades: Optional[List["cv2.CascadeClassifier"]] = None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def wants(self, request_id: str) -> bool:
        return sampled(AUDIT_SALT + request_id, self.rate) and self.bucket.take()

    def send(self, image: np.ndarray, request_id: str, camera: str) -> str:
        """Returns the outcome label: ``sent`` or ``dropped``."""
        if self._cascades is None:
            self._cascades = load_cascades()
        frame, regions = redact(image, self._cascades)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return "dropped"
        body = {
            "kind": "audit",
            "v": 1,
            "request_id": request_id,
            "camera": camera,
            "ts": time.time(),
            "redacted": True,
            "masked_regions": regions,
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "jpeg": base64.b64encode(jpeg.tobytes()).decode(),
        }
        datagram = json.dumps(body, separators=(",", ":")).encode()
        if len(datagram) > 60_000:
            return "dropped"
        try:
            self._socket.sendto(datagram, self.address)
        except OSError:
            return "dropped"
        return "sent"

    def close(self) -> None:
        self._socket.close()
