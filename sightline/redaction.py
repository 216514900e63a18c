"""Redaction of audit frames, failing closed: one policy for the step that sends a frame and
the store that keeps it.

``redact`` downscales a frame and says which of these it got:

- ``masked``: the detectors judged the frame and found faces or plates; each is covered
  by a solid rectangle grown by a margin.
- ``none_found``: the detectors judged the frame and found nothing to mask.
- ``blurred_whole``: the detectors cannot judge the frame (too dark, too bright, too flat
  for OpenCV's Haar cascades, or a detector failed), so the whole frame is pixelated to
  ``BLUR_CELLS`` blocks across, where no face or plate can be recognised.

The detectors look at a copy ``DETECT_WIDTH`` (640) pixels wide, twice the stored 320,
scaled down or up from the camera's frame, so a face too small for them (under
``MIN_DETECT_PX``, 20) is under 10 pixels in the stored frame. They are OpenCV's bundled
cascades: frontal faces, profile faces (both directions) and two licence-plate cascades.
The preprocess step redacts before a frame leaves Triton (``sightline.steps.audit``); the
monitor's store applies the same policy again to what it receives
(``sightline.sidecars.audit_store``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

MAX_WIDTH = 320
DETECT_WIDTH = 640
MIN_DETECT_PX = 20
SCALE_FACTOR = 1.1
JPEG_QUALITY = 70
MASK_MARGIN = 0.15
BLUR_CELLS = 12
# The grey level range and spread where the cascades find faces; outside it they miss them.
JUDGEABLE_MEAN = (35.0, 225.0)
JUDGEABLE_STD = 18.0
FACE_CASCADES = ("haarcascade_frontalface_default.xml",)
PROFILE_CASCADES = ("haarcascade_profileface.xml",)  # looks one way; run on the mirrored frame too
PLATE_CASCADES = ("haarcascade_russian_plate_number.xml", "haarcascade_license_plate_rus_16stages.xml")
CASCADES = FACE_CASCADES + PROFILE_CASCADES + PLATE_CASCADES

MASKED = "masked"
NONE_FOUND = "none_found"
BLURRED_WHOLE = "blurred_whole"
REDACTIONS = (MASKED, NONE_FOUND, BLURRED_WHOLE)

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class Redaction:
    """What ``redact`` did to a frame: the frame to store, the label, why, and how many regions."""

    frame: np.ndarray
    label: str  # one of REDACTIONS
    reason: Optional[str]  # why a frame was blurred whole
    regions: int


@dataclass
class Cascade:
    classifier: "cv2.CascadeClassifier"
    mirrored: bool = False  # also run on the mirrored frame (profile faces look one way)


def load_cascades(names: Sequence[str] = CASCADES) -> List[Cascade]:
    cascades = []
    for name in names:
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # type: ignore[attr-defined]
        if classifier.empty():
            raise RuntimeError(f"OpenCV's Haar cascade {name} could not be loaded")
        cascades.append(Cascade(classifier, mirrored=name in PROFILE_CASCADES))
    return cascades


def downscale(image: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    height, width = image.shape[:2]
    if width <= max_width:
        return image.copy()
    scale = max_width / width
    return cv2.resize(image, (max_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def unjudgeable(image: np.ndarray) -> Optional[str]:
    """Why the cascades cannot judge this frame (``too_dark``, ``too_bright``, ``too_flat``), or None."""
    grey = _grey(image)
    mean, std = float(grey.mean()), float(grey.std())
    if mean < JUDGEABLE_MEAN[0]:
        return "too_dark"
    if mean > JUDGEABLE_MEAN[1]:
        return "too_bright"
    if std < JUDGEABLE_STD:
        return "too_flat"
    return None


def find_sensitive(image: np.ndarray, cascades: Sequence[Cascade], min_size: int = MIN_DETECT_PX) -> List[Box]:
    """Faces and plates the cascades find, in ``image``'s pixels."""
    grey = cv2.equalizeHist(_grey(image))
    width = grey.shape[1]
    found: List[Box] = []
    for cascade in cascades:
        views = [(grey, False)] + ([(cv2.flip(grey, 1), True)] if cascade.mirrored else [])
        for view, flipped in views:
            for x, y, w, h in cascade.classifier.detectMultiScale(view, scaleFactor=SCALE_FACTOR, minNeighbors=3,
                                                                  minSize=(min_size, min_size)):
                x = width - int(x) - int(w) if flipped else int(x)
                found.append((x, int(y), int(w), int(h)))
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


def blur_whole(image: np.ndarray, cells: int = BLUR_CELLS) -> np.ndarray:
    """Pixelate to ``cells`` blocks across: light and layout stay visible, no face or plate does."""
    height, width = image.shape[:2]
    across = max(1, min(cells, width))
    down = max(1, min(height, round(across * height / width)))
    small = cv2.resize(image, (across, down), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def detection_copy(image: np.ndarray, width: int = DETECT_WIDTH) -> np.ndarray:
    """The frame the detectors look at: ``width`` pixels wide, scaled down or up, so a face
    ``MIN_DETECT_PX`` wide there is ``MIN_DETECT_PX * 320 / width`` pixels in the stored frame
    whatever the camera's resolution."""
    height, current = image.shape[:2]
    if current == width:
        return image
    size = (width, max(1, round(height * width / current)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if current > width else cv2.INTER_LINEAR)


def _scale_boxes(boxes: Sequence[Box], factor: float) -> List[Box]:
    return [(int(x * factor), int(y * factor), max(1, int(np.ceil(w * factor))), max(1, int(np.ceil(h * factor))))
            for x, y, w, h in boxes]


def redact(image: np.ndarray, cascades: Optional[Sequence[Cascade]], max_width: int = MAX_WIDTH,
           detect_width: int = DETECT_WIDTH) -> Redaction:
    """Downscale to ``max_width``, then apply the policy of this module's docstring.

    ``cascades`` None means the detectors could not be loaded: the frame is blurred whole.
    Never returns an unjudged frame unblurred."""
    small = downscale(image, max_width)
    if cascades is None:
        return Redaction(blur_whole(small), BLURRED_WHOLE, "detector_unavailable", 0)
    why = unjudgeable(small)
    if why is not None:
        return Redaction(blur_whole(small), BLURRED_WHOLE, why, 0)
    try:
        detect = detection_copy(image, detect_width)
        boxes = _scale_boxes(find_sensitive(detect, cascades), small.shape[1] / detect.shape[1])
    except cv2.error:
        return Redaction(blur_whole(small), BLURRED_WHOLE, "detector_error", 0)
    if boxes:
        return Redaction(mask(small, boxes), MASKED, None, len(boxes))
    return Redaction(small, NONE_FOUND, None, 0)


def background_priority(niceness: int = 19) -> bool:
    """Lower the calling thread's CPU priority (Linux: a thread is its own scheduling entity).

    Redaction costs about 0.9 s of CPU a frame; at nice 19 it takes the CPU the serving
    threads leave, instead of slowing the requests of its own process and its neighbours
    (at a cold start, with the cascades loading, it queued a 60 req/s stream past 50 ms on
    two cores). Returns whether the priority could be changed."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at the normal priority
        return False
    return True


def warm_up(cascades: Optional[Sequence[Cascade]]) -> None:
    """Redact one noise frame and throw it away: the detectors' first run allocates what they
    keep (their image pyramids, the worker thread's own malloc arena, several MB), and a
    process whose memory steps up at its first audited frame, minutes into traffic, looks
    like a leak to the memory alert and to diagnose. Done when the worker starts instead."""
    if cascades:
        noise = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        redact(noise, cascades)


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
