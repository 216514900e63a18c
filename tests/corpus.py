"""Payloads for bad-input tests, shared by unit and integration tests."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def zero_size_png() -> bytes:
    """A PNG whose header declares a 0 x 10 image."""
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b"")


def good_jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def bomb_jpeg() -> bytes:
    """A small file that would decode to 36 megapixels (about 100 MiB of pixels)."""
    return cv2.imencode(".jpg", np.zeros((6000, 6000, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])[1].tobytes()
