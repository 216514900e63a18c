"""Preprocess step: encoded frame bytes -> letterboxed model input, one request at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from sightline import modelspec, vision
from sightline.conventions import (
    PARAM_CAMERA,
    PARAM_CAPTURE_TIME_MS,
    PARAM_FRAME_SEQ,
    REASON_BAD_PARAMETER,
    REASON_REQUEST_TOO_LARGE,
    REASON_TOO_MANY_BYTES,
)
from sightline.images import DEFAULT_MAX_PIXELS, InvalidInput, decode_frame, read_header
from sightline.quality import quality_features

LETTERBOX_FIELDS = ("scale", "pad_x", "pad_y", "width", "height")
# A request may carry up to 32 frames (max_batch_size); together they may hold the pixels of
# this many frames at the pixel limit: 32 frames of 1080p fit, 32 frames of 4K do not (each
# costs tens of milliseconds of decoding, and one request would hold a core for seconds).
REQUEST_PIXELS_IN_FRAMES = 4


def frame_byte_limit(max_pixels: int) -> int:
    """The most encoded bytes one frame may carry: an uncompressed 8-bit RGB frame of the
    pixel limit, plus 1 MiB of metadata. A bigger "frame" is not from a camera; its bytes
    are copied and scanned before anything can refuse it."""
    return 3 * max_pixels + (1 << 20)


def check_request_size(frames: List[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse, from the bytes and headers alone, a frame too large to be a camera's or a
    request whose frames hold more than ``REQUEST_PIXELS_IN_FRAMES`` frames at the limit.
    Raises :class:`InvalidInput` naming the frame or the request."""
    byte_limit = frame_byte_limit(max_pixels)
    total = 0
    for index, data in enumerate(frames):
        where = f"frame {index}: " if len(frames) > 1 else ""
        if len(data) > byte_limit:
            raise InvalidInput(REASON_TOO_MANY_BYTES, f"{where}frame too large: {len(data)} bytes, more than the "
                               f"limit of {byte_limit} (an uncompressed RGB frame at the pixel limit of {max_pixels})")
        if len(frames) > 1:
            try:
                total += read_header(data).pixels
            except InvalidInput as exc:
                raise InvalidInput(exc.reason, f"{where}{exc}") from exc
    budget = REQUEST_PIXELS_IN_FRAMES * max_pixels
    if total > budget:
        raise InvalidInput(REASON_REQUEST_TOO_LARGE, f"request too large: its {len(frames)} frames hold {total} pixels, "
                           f"more than the per-request limit of {budget} ({REQUEST_PIXELS_IN_FRAMES} frames at the pixel "
                           "limit); send fewer frames per request")


def letterbox_to_array(info: "vision.LetterboxInfo") -> np.ndarray:
    return np.array([getattr(info, name) for name in LETTERBOX_FIELDS], dtype=np.float32)


def letterbox_from_array(row: np.ndarray) -> "vision.LetterboxInfo":
    scale, pad_x, pad_y, width, height = (float(v) for v in row[: len(LETTERBOX_FIELDS)])
    return vision.LetterboxInfo(
        scale=scale, pad_x=int(round(pad_x)), pad_y=int(round(pad_y)), width=int(width), height=int(height)
    )


def frames_of(tensor: np.ndarray) -> list:
    """The encoded frames in one request's ``IMAGE`` tensor (shape [batch, 1], bytes)."""
    if not isinstance(tensor, np.ndarray) or tensor.dtype != np.object_:
        raise InvalidInput("bad_dtype", f"wrong dtype: IMAGE must be BYTES (TYPE_STRING), got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.ndim != 2 or tensor.shape[1] != 1 or tensor.shape[0] < 1:
        raise InvalidInput(
            "bad_shape", f"wrong shape: IMAGE must be [batch, 1] encoded frames, got {list(tensor.shape)}"
        )
    frames = []
    for value in tensor[:, 0]:
        if isinstance(value, str):
            try:
                value = value.encode("latin-1")
            except UnicodeEncodeError:
                raise InvalidInput("bad_dtype", "wrong dtype: IMAGE elements must be bytes, got text") from None
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidInput("bad_dtype", f"wrong dtype: IMAGE elements must be bytes, got {type(value).__name__}")
        frames.append(bytes(value))
    return frames


# Stream parameters that must be integers when present, and their bounds (int64, as sent).
INT_PARAMETERS = (PARAM_FRAME_SEQ, PARAM_CAPTURE_TIME_MS)
INT_PARAMETER_MAX = 2**63 - 1
MAX_CAMERA_ID_CHARS = 256


def _describe(value: Any) -> str:
    """A short, safe description of a parameter value (no repr of a 5000-digit int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 30 else f"text of {len(value)} characters"
    return f"a value of type {type(value).__name__}"


def check_parameters(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The request's parameters if every stream parameter is readable; else :class:`InvalidInput`.

    ``frame_seq`` and ``capture_time_ms``, when present, must be integers in 0..2**63-1 (or
    their decimal text); ``camera_id`` must be text (or an integer) of at most 256 characters. A request
    without them is served as before; one carrying garbage in them is refused by name.
    """
    for key in INT_PARAMETERS:
        if key not in params or params[key] is None:
            continue
        value = params[key]
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
            number = int(value)
        if number is None or not 0 <= number <= INT_PARAMETER_MAX:
            shown = _describe(value)
            raise InvalidInput(REASON_BAD_PARAMETER,
                               f"bad parameter: {key} must be an integer in 0..{INT_PARAMETER_MAX}, got {shown}")
    camera = params.get(PARAM_CAMERA)
    if isinstance(camera, int) and not isinstance(camera, bool) and abs(camera) < 10**MAX_CAMERA_ID_CHARS:
        camera = str(camera)  # (str() of a 5000-digit int would raise)
    if camera is not None and (not isinstance(camera, str) or len(camera) > MAX_CAMERA_ID_CHARS):
        raise InvalidInput(REASON_BAD_PARAMETER,
                           f"bad parameter: {PARAM_CAMERA} must be text of at most {MAX_CAMERA_ID_CHARS} characters")
    return dict(params)


@dataclass
class Preprocessed:
    """One request's model input: ``images`` [b,3,size,size] uint8, ``letterbox`` [b,5]
    float32, ``features`` (one dict per frame, empty when not asked for), the first decoded
    frame (for audit samples; decoded at 1/``first_factor`` scale, and its bytes in
    ``first_encoded``) and every frame's (height, width) as the camera sent it."""

    images: np.ndarray
    letterbox: np.ndarray
    features: List[Dict[str, float]]
    first_frame: np.ndarray
    shapes: List[Tuple[int, int]]
    first_factor: int = 1
    first_encoded: bytes = b""


def preprocess_request(
    tensor: np.ndarray,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: int = modelspec.INPUT_SIZE,
    with_features: bool = True,
    reduce: bool = True,
) -> Preprocessed:
    """Decode, validate and letterbox every frame of a request, one frame at a time.

    Each decoded frame is dropped once it is letterboxed and its quality features are
    taken (all but the first), so a request of 32 large frames holds two decoded frames,
    not 32. Frame sizes and the request's pixel total are checked from the headers before
    any frame is decoded (:func:`check_request_size`). With ``reduce``, a JPEG at least
    twice the model input on both sides is decoded at 1/2, 1/4 or 1/8 scale
    (:func:`sightline.images.reduction_for`): a 1080p frame at 480x270, a 4K one at 480x270. Raises :class:`InvalidInput` naming
    the first problem; the request fails as a whole.
    """
    images, boxes, features = [], [], []
    shapes: List[Tuple[int, int]] = []
    first: Optional[np.ndarray] = None
    first_factor = 1
    frames = frames_of(tensor)
    check_request_size(frames, max_pixels)
    for index, data in enumerate(frames):
        try:
            decoded = decode_frame(data, max_pixels, min_side=size if reduce else 0)
        except InvalidInput as exc:
            if tensor.shape[0] > 1:
                raise InvalidInput(exc.reason, f"frame {index}: {exc}") from exc
            raise
        frame, camera_size = decoded.image, (decoded.header.width, decoded.header.height)
        chw, info = vision.letterbox_chw(frame, size, camera_size)
        images.append(chw)
        boxes.append(letterbox_to_array(info))
        shapes.append((decoded.header.height, decoded.header.width))
        if with_features:
            features.append(quality_features(frame, camera_size))
        if first is None:
            first, first_factor = frame, decoded.factor
        del frame, decoded
    if first is None:  # frames_of refuses a request without frames; this keeps the type honest
        raise InvalidInput("bad_shape", "wrong shape: the request holds no frame")
    return Preprocessed(np.stack(images), np.stack(boxes), features, first, shapes,
                        first_factor, frames[0])
