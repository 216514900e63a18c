"""Hostile frames for the input-validation tests: lying JPEG headers and extreme geometry,
and the hypothesis strategies of the serving fuzz (tests/integration/test_hostile_input.py,
bench/fuzz_serving.py).

Built from real encoder output (OpenCV) and patched, so every payload is a few hundred bytes
to a few kilobytes and is rebuilt by the tests that use it (nothing here is stored).
"""

from __future__ import annotations

import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from sightline import modelspec


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


def many_scans_jpeg(side: int = 2048, scans: int = 2000) -> bytes:
    """A flat progressive JPEG whose smallest scan is repeated `scans` times: libjpeg only
    warns, and decodes each copy over the whole frame (a few bytes per pass over it)."""
    data = cv2.imencode(".jpg", np.full((side, side), 128, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    starts = [m.start() for m in re.finditer(b"\xff\xda", data)]
    pieces = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data) - 2])]
    return data[:-2] + min(pieces[1:], key=len) * scans + b"\xff\xd9"


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


def good_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))[1].tobytes()


REASON = re.compile(r"\[reason=([a-z_]+)\]")
GOOD = good_jpeg(160, 120, seed=7)  # what a camera sends


def send(url: str, frames: list, params: dict, timeout_s: float = 60.0) -> tuple[str, str]:
    """("ok", "") when the request was served with one detection list per frame, else
    (gRPC status, message)."""
    client = grpcclient.InferenceServerClient(url=url)
    try:
        payload = np.array([[f] for f in frames], dtype=np.object_)
        tensor = grpcclient.InferInput(modelspec.ENSEMBLE_INPUT, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        response = client.infer(modelspec.ENSEMBLE_NAME, [tensor], parameters=params, client_timeout=timeout_s)
        detections = response.as_numpy(modelspec.ENSEMBLE_DETECTIONS)
        if detections.shape[0] != len(frames):
            return "wrong_rows", f"{detections.shape[0]} detection lists for {len(frames)} frames"
        return "ok", ""
    except InferenceServerException as exc:
        return str(exc.status()), exc.message() or str(exc)
    finally:
        client.close()


def refused_reason(outcome: tuple[str, str]) -> str:
    status, message = outcome
    assert "INVALID_ARGUMENT" in status, f"not an INVALID_ARG refusal: {status} {message[:300]}"
    found = REASON.search(message)
    assert found, f"a refusal without a reason: {message[:300]}"
    return found.group(1)


# --- the serving fuzz: random, mutated and lying frames with random parameters ------------

def _mutate(data: bytes, edits: list) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            out[at] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 7)
        else:  # "ff": a marker byte pair where there was none
            out[at:at] = b"\xff" + bytes([value])
    return bytes(out)


_SMALL_PNG = narrow_png(24, 16)
_BASES = [good_jpeg(64, 48, seed=1), good_jpeg(200, 150, seed=2), _SMALL_PNG, oversized_jpeg(300, 200)]
_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "ff"]), st.integers(0, 1 << 16),
                            st.integers(0, 255)), max_size=4)
_SIDES = st.sampled_from([1, 2, 15, 16, 17, 255, 256, 4095, 4096, 4097, 16000, 65535])

FRAMES = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(lambda tail: b"\xff\xd8" + tail + b"\xff\xd9"),
    st.binary(max_size=300).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),
    st.builds(_mutate, st.sampled_from(_BASES), _EDITS),
    st.builds(oversized_jpeg, _SIDES, _SIDES),
    st.builds(hidden_frame_jpeg, _SIDES, _SIDES),
    st.builds(narrow_png, st.sampled_from([1, 3, 40]), st.sampled_from([1, 64, 700, 20000])),
    st.builds(many_scans_jpeg, st.sampled_from([16, 200]), st.sampled_from([1, 26, 27, 300])),
    st.just(GOOD),
)
_INT64 = st.integers(-(2**63), 2**63 - 1)
PARAM_VALUES = st.one_of(_INT64, st.booleans(), st.text(max_size=80), st.text(alphabet="0123456789", min_size=1, max_size=500),
                         st.sampled_from(["cam-1", "cam-3", "", "\u00e9\u20ac", "1" * 5000]))
RANDOM_PARAMS = st.dictionaries(st.sampled_from(["camera_id", "frame_seq", "capture_time_ms", "trace", "x" * 64]),
                                PARAM_VALUES, max_size=4)
VALID_PARAMS = st.fixed_dictionaries({"camera_id": st.sampled_from(["cam-1", "cam-2", "rogue", "9"])},
                                     optional={"frame_seq": st.integers(0, 2**63 - 1),
                                               "capture_time_ms": st.integers(0, 2**63 - 1)})
# Two draws in three carry readable parameters, so that their frames are judged too.
PARAMS = st.one_of(VALID_PARAMS, VALID_PARAMS, RANDOM_PARAMS)
REQUESTS = st.lists(st.tuples(st.lists(FRAMES, min_size=1, max_size=4), PARAMS), min_size=1, max_size=4)


GOOD_PER_ROUND = 4


@dataclass
class Tally:
    rounds: int = 0
    hostile: int = 0
    served: int = 0
    good: int = 0
    refused: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"{self.rounds} rounds, {self.hostile} hostile requests ({self.served} served, refused by reason "
                f"{dict(sorted(self.refused.items()))}), {self.good} good requests beside them, all served")


def fuzz_round(url: str, hostile: list, tally: Tally) -> None:
    """Send the hostile requests interleaved with GOOD_PER_ROUND good ones, all at once, so
    they share dynamic batches. Every good request must be served; every hostile one served
    or refused with INVALID_ARG and a reason other than internal."""
    jobs = [(frames, params, False) for frames, params in hostile]
    jobs += [([GOOD], {"camera_id": "cam-1", "frame_seq": i}, True) for i in range(GOOD_PER_ROUND)]
    jobs = [job for pair in zip(jobs[::2], jobs[1::2]) for job in pair] + (jobs[-1:] if len(jobs) % 2 else [])
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outcomes = list(pool.map(lambda job: send(url, job[0], job[1]), jobs))
    tally.rounds += 1
    for (_frames, _params, good), outcome in zip(jobs, outcomes):
        if good:
            tally.good += 1
            assert outcome == ("ok", ""), f"a good request failed beside hostile ones: {outcome}"
            continue
        tally.hostile += 1
        if outcome == ("ok", ""):
            tally.served += 1
            continue
        reason = refused_reason(outcome)
        assert reason != "internal", outcome
        tally.refused[reason] = tally.refused.get(reason, 0) + 1
