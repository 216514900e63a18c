"""Validate and decode encoded camera frames, refusing bad input with a named reason.

Dimensions are read from the JPEG or PNG header *before* a full decode, so a
decompression bomb (a small file that decodes to a huge image) is refused cheaply. The
JPEG header is read the way libjpeg (inside OpenCV) reads it: fill bytes, stuffed
``FF 00`` pairs and other bytes between segments are skipped, not taken for segments, so
the frame header found here is the one the decoder will use. As a second bound, OpenCV's
own decoder limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is set before OpenCV is first imported,
so the decoder refuses an oversized frame whatever this module's reading of the header.

A frame is also refused when its geometry is extreme (one side more than
``MAX_ASPECT_RATIO`` times the other): no camera sends it, and steps that scale by one side
(sharpness features, letterboxing) would otherwise blow it up.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

# The package root sets OpenCV's decoder limit before this module (or any other) imports cv2.
from sightline import DEFAULT_MAX_PIXELS
from sightline.conventions import REASON_EXTREME_ASPECT_RATIO, REASON_TOO_MANY_SCANS
from sightline.errors import InputError

# The longer side may be at most this many times the shorter one (32:9 panoramas are 3.6).
MAX_ASPECT_RATIO = 16
# Scans of a JPEG: a baseline frame has one, libjpeg's progressive script 10 for colour.
MAX_JPEG_SCANS = 32

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS, _JPEG_EOI, _JPEG_SOI = 0xDA, 0xD9, 0xD8
# An FF followed by a byte that makes it a marker libjpeg acts on: not a stuffed 00, not
# another fill FF, not a marker without a length (TEM 01, RST0-7 D0-D7; SOI is handled
# apart: a second one is an error). The lookahead keeps a long run of
# FF bytes linear: only the last FF of the run can match.
_JPEG_NEXT_MARKER = re.compile(rb"\xff(?=[^\x00\x01\xd0-\xd7\xff])", re.DOTALL)


class InvalidInput(InputError):
    """A request the pipeline refuses. ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _jpeg_header(data: bytes) -> Optional[ImageHeader]:
    """The first frame header, found as libjpeg's ``next_marker``/``read_markers`` find it.

    Between segments libjpeg skips any byte that is not FF, then every FF fill byte; the
    byte after them is the marker, except 00 (a stuffed FF 00, skipped too). Segments
    with a length are skipped by that length (at least the two length bytes). The header
    ends at the first SOF; a scan (SOS), EOI, a second SOI or a reserved marker before it
    means libjpeg has no frame, or fails. Every step moves forward, so the loop ends.
    """
    pos = 2
    size = len(data)
    while pos < size:
        # Bytes between segments, FF fill bytes, stuffed FF 00, TEM and RSTn are all passed
        # over by one search in C: a Python loop per byte cost 1 s per 20 MB of filler.
        found = _JPEG_NEXT_MARKER.search(data, pos)
        if found is None:
            return None
        marker = data[found.end()]
        pos = found.end() + 1
        if marker in (_JPEG_SOS, _JPEG_EOI, _JPEG_SOI) or marker < 0xC0:
            return None  # no frame before the scan, or a marker libjpeg refuses here
        if pos + 2 > size:
            return None
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if marker in _JPEG_SOF:
            if pos + 7 > size:
                return None
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return ImageHeader("jpeg", width, height)
        pos += max(2, length)
    return None


def read_header(data: bytes) -> ImageHeader:
    """Format and dimensions from the header alone. Raises :class:`InvalidInput`."""
    if len(data) == 0:
        raise InvalidInput("empty", "empty input: IMAGE holds zero bytes")
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise InvalidInput("truncated", "truncated PNG: the IHDR header is incomplete")
        width, height = struct.unpack(">II", data[16:24])
        header = ImageHeader("png", width, height)
    elif data.startswith(JPEG_SOI):
        found = _jpeg_header(data)
        if found is None:
            raise InvalidInput("truncated", "truncated or malformed JPEG: no frame header found")
        header = found
    else:
        raise InvalidInput(
            "not_an_image",
            f"not an image: IMAGE must be JPEG or PNG bytes (first bytes {data[:8]!r})",
        )
    if header.width == 0 or header.height == 0:
        raise InvalidInput(
            "zero_size", f"zero-size image: header says {header.width}x{header.height}"
        )
    return header


def looks_complete(data: bytes, header: ImageHeader) -> bool:
    """Whether the stream ends where its format says it must (EOI for JPEG, IEND for PNG).

    OpenCV decodes a truncated JPEG into a partly grey frame with only a warning, so the
    end marker is checked explicitly.
    """
    tail = data.rstrip(b"\x00")
    if header.format == "jpeg":
        return tail.endswith(JPEG_EOI)
    return b"IEND" in tail[-16:]


def check_geometry(header: ImageHeader, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a frame too large to decode, or too narrow for the steps to scale in bounded memory."""
    if header.pixels > max_pixels:
        raise InvalidInput(
            "too_many_pixels",
            f"image too large: {header.width}x{header.height} = {header.pixels} pixels "
            f"exceeds the limit of {max_pixels}",
        )
    long_side, short_side = max(header.width, header.height), min(header.width, header.height)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise InvalidInput(
            REASON_EXTREME_ASPECT_RATIO,
            f"extreme geometry: {header.width}x{header.height} has one side more than "
            f"{MAX_ASPECT_RATIO} times the other",
        )


def check_scans(data: bytes) -> None:
    """Refuse a JPEG of more than `MAX_JPEG_SCANS` scans.

    libjpeg decodes every scan of a progressive JPEG over the whole frame, and only warns
    when scans repeat: 2000 copies of a 16-byte scan made a 48 KB file cost 5 s per
    2048x2048 frame. Every scan starts with the bytes FF DA (inside entropy-coded data an FF
    is always followed by 00 or a marker), so counting them bounds the scans from above; an
    FF DA inside metadata only counts against the file.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InvalidInput(
            REASON_TOO_MANY_SCANS,
            f"too many scans: the JPEG holds {scans} start-of-scan markers, more than {MAX_JPEG_SCANS}",
        )


# libjpeg scales while it decodes (in the DCT domain: it computes an 8x8 block at 1/2, 1/4
# or 1/8 of its size), so a reduced decode costs a fraction of a full one and averages the
# pixels it drops instead of skipping them.
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction_for(header: ImageHeader, min_side: int) -> int:
    """The largest factor (8, 4 or 2) a JPEG can be decoded at that keeps both its sides at
    least ``min_side`` pixels; 1 for a PNG (OpenCV would decode it whole and resize), for
    ``min_side`` 0, or for a frame less than twice ``min_side`` on a side.

    >>> [reduction_for(ImageHeader("jpeg", w, h), 256) for w, h in ((640, 480), (1280, 720), (1920, 1080), (3840, 2160))]
    [1, 2, 4, 8]
    """
    if header.format != "jpeg" or min_side <= 0:
        return 1
    for factor in (8, 4, 2):
        if min(header.width, header.height) >= factor * min_side:
            return factor
    return 1


@dataclass(frozen=True)
class Decoded:
    """A decoded frame: ``image`` (BGR uint8), the ``header`` it was read from (the camera's
    own size), and the ``factor`` it was decoded at (``image`` is the header's size
    divided by it, rounded up)."""

    image: np.ndarray
    header: ImageHeader
    factor: int = 1


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG bytes to a BGR uint8 frame, or raise :class:`InvalidInput`."""
    return decode_frame(data, max_pixels).image


def decode_frame(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 0) -> Decoded:
    """Decode JPEG/PNG bytes, or raise :class:`InvalidInput`; a JPEG at least twice
    ``min_side`` on both sides is decoded at reduced scale (:func:`reduction_for`). Every
    check is the full frame's: its header, its pixel limit, its scans."""
    header = read_header(data)
    check_geometry(header, max_pixels)
    if not looks_complete(data, header):
        raise InvalidInput(
            "truncated", f"truncated {header.format.upper()}: the end-of-image marker is missing"
        )
    if header.format == "jpeg":
        check_scans(data)
    name = header.format.upper()
    factor = reduction_for(header, min_side)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED.get(factor, cv2.IMREAD_COLOR))
    except cv2.error as exc:  # OpenCV's own size limit (OPENCV_IO_MAX_IMAGE_PIXELS) and the like
        if "CV_IO_MAX_IMAGE" in str(exc):
            raise InvalidInput(
                "too_many_pixels",
                f"image too large: the {name} decoder found a frame over its limit of "
                f"{os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS')} pixels (the header said {header.width}x{header.height})",
            ) from None
        raise InvalidInput("decode_failed", f"corrupt {name}: OpenCV could not decode it") from None
    if image is None or image.size == 0:
        raise InvalidInput("decode_failed", f"corrupt {name}: OpenCV could not decode it")
    height, width = image.shape[:2]
    expected = (-(-header.width // factor), -(-header.height // factor))  # libjpeg rounds up
    if (width, height) != expected:
        # the decoder saw another frame than the header: judge what it decoded, then refuse
        check_geometry(ImageHeader(header.format, width * factor, height * factor), max_pixels)
        at = f" at 1/{factor} scale" if factor > 1 else ""
        raise InvalidInput(
            "decode_failed",
            f"corrupt {name}: the header says {header.width}x{header.height} but it decodes{at} to {width}x{height}",
        )
    return Decoded(image, header, factor)
