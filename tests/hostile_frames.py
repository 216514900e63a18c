"""Hostile frames for the input-validation tests: lying JPEG headers and extreme geometry.

Built from real encoder output (OpenCV) and patched, so every payload is a few hundred bytes
to a few kilobytes and is rebuilt by the tests that use it (nothing here is stored).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def jpeg_segments(data: bytes) -> list:
    """(marker, segment bytes including FF marker and length) of a well-formed JPEG up to SOS,
    then ("scan", the rest). Only for encoder output, not for hostile input."""
    out, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        out.append((marker, data[pos : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            out.append(("scan", data[pos:]))
            break
    return out


def _sof(segment: bytes, width: int, height: int) -> bytes:
    return segment[:5] + struct.pack(">HH", height, width) + segment[9:]


def oversized_jpeg(width: int, height: int, scan_bytes: int = 16) -> bytes:
    """A grey JPEG whose frame header declares width x height but whose scan is cut after
    `scan_bytes`: libjpeg decodes the rest as flat grey, so a few hundred bytes decode to
    width x height pixels."""
    seg = jpeg_segments(cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8))[1].tobytes())
    head = b"".join(_sof(s, width, height) if m == 0xC0 else s for m, s in seg if m != "scan")
    scan = seg[-1][1][:scan_bytes].replace(b"\xff", b"\x00")
    return b"\xff\xd8" + head + scan + b"\xff\xd9"


def hidden_frame_jpeg(width: int = 16000, height: int = 16000) -> bytes:
    """The bypass: a stuffed ``FF 00`` followed by two bytes that a naive reader takes for a
    segment length, jumping over the real frame header (width x height) to a decoy 1x1 one
    after the scan. libjpeg skips FF 00 as fill, finds the real header and decodes it."""
    seg = jpeg_segments(cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8))[1].tobytes())
    by_marker = {m: s for m, s in seg}
    tables = b"".join(s for m, s in seg if m in (0xE0, 0xDB))
    sof = by_marker[0xC0]
    hidden = _sof(sof, width, height) + b"".join(s for m, s in seg if m == 0xC4) + by_marker[0xDA]
    hidden += seg[-1][1][:16].replace(b"\xff", b"\x00")
    skip = 2 + len(hidden)
    assert b"\xff" not in struct.pack(">H", skip)
    decoy = _sof(sof, 1, 1)
    return b"\xff\xd8" + tables + b"\xff\x00" + struct.pack(">H", skip) + hidden + decoy + b"\xff\xd9"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def narrow_png(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height, all black: a few kilobytes for a million rows."""
    raw = (b"\x00" + b"\x00" * width) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b""))


def narrow_jpeg(width: int, height: int) -> bytes:
    return cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))[1].tobytes()
