"""Validate and decode encoded camera frames, refusing bad input with a named reason.

Dimensions are read from the JPEG or PNG header *before* a full decode, so a
decompression bomb (a small file that decodes to a huge image) is refused cheaply.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 4096 * 4096

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class InvalidInput(ValueError):
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
    pos = 2
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > size:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ImageHeader("jpeg", width, height)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG bytes to a BGR uint8 frame, or raise :class:`InvalidInput`."""
    header = read_header(data)
    if header.pixels > max_pixels:
        raise InvalidInput(
            "too_many_pixels",
            f"image too large: {header.width}x{header.height} = {header.pixels} pixels "
            f"exceeds the limit of {max_pixels}",
        )
    if not looks_complete(data, header):
        raise InvalidInput(
            "truncated", f"truncated {header.format.upper()}: the end-of-image marker is missing"
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise InvalidInput("decode_failed", f"corrupt {header.format.upper()}: OpenCV could not decode it")
    return image
