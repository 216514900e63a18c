"""Preprocess step: encoded frame bytes -> letterboxed model input, one request at a time."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from sightline import modelspec, vision
from sightline.steps.images import DEFAULT_MAX_PIXELS, InvalidInput, decode_image

LETTERBOX_FIELDS = ("scale", "pad_x", "pad_y", "width", "height")


def letterbox_to_array(info: "vision.LetterboxInfo") -> np.ndarray:
    return np.array([getattr(info, name) for name in LETTERBOX_FIELDS], dtype=np.float32)


def letterbox_from_array(row: np.ndarray) -> "vision.LetterboxInfo":
    scale, pad_x, pad_y, width, height = (float(v) for v in row[: len(LETTERBOX_FIELDS)])
    return vision.LetterboxInfo(
        scale=scale, pad_x=int(round(pad_x)), pad_y=int(round(pad_y)), width=int(width), height=int(height)
    )


def frames_of(tensor: np.ndarray) -> list:
    """The encoded frames in one request's ``IMAGE`` tensor (shape [batch, 1], bytes)."""
    if tensor.dtype != np.object_:
        raise InvalidInput("bad_dtype", f"wrong dtype: IMAGE must be BYTES (TYPE_STRING), got {tensor.dtype}")
    if tensor.ndim != 2 or tensor.shape[1] != 1 or tensor.shape[0] < 1:
        raise InvalidInput(
            "bad_shape", f"wrong shape: IMAGE must be [batch, 1] encoded frames, got {list(tensor.shape)}"
        )
    frames = []
    for value in tensor[:, 0]:
        if isinstance(value, str):
            value = value.encode("latin-1")
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidInput("bad_dtype", f"wrong dtype: IMAGE elements must be bytes, got {type(value).__name__}")
        frames.append(bytes(value))
    return frames


def preprocess_request(
    tensor: np.ndarray,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: int = modelspec.INPUT_SIZE,
) -> Tuple[np.ndarray, np.ndarray, list]:
    """Decode, validate and letterbox every frame of a request.

    Returns ``(images [b,3,size,size] float32, letterbox [b,5] float32, frames_bgr)``.
    Raises :class:`InvalidInput` naming the first problem; the request fails as a whole.
    """
    images, boxes, decoded = [], [], []
    for index, data in enumerate(frames_of(tensor)):
        try:
            frame = decode_image(data, max_pixels)
        except InvalidInput as exc:
            if tensor.shape[0] > 1:
                raise InvalidInput(exc.reason, f"frame {index}: {exc}") from exc
            raise
        chw, info = vision.letterbox(frame, size)
        images.append(chw)
        boxes.append(letterbox_to_array(info))
        decoded.append(frame)
    return np.stack(images).astype(np.float32, copy=False), np.stack(boxes), decoded
