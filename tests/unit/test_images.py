"""Frame validation: every bad payload is refused with its own named reason."""

import cv2
import numpy as np
import pytest
from corpus import good_jpeg

from sightline.images import InvalidInput, decode_image, read_header


def test_a_valid_jpeg_and_png_decode_to_their_size():
    image = np.full((120, 200, 3), 90, np.uint8)
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert read_header(data).width == 200 and read_header(data).height == 120
        assert decode_image(data).shape == (120, 200, 3)


@pytest.mark.parametrize("reason", ["empty", "not_an_image", "truncated", "too_many_pixels", "zero_size"])
def test_each_bad_frame_is_refused_with_its_reason(bad_frames, reason):
    with pytest.raises(InvalidInput) as caught:
        decode_image(bad_frames[reason], max_pixels=4096 * 4096)
    assert caught.value.reason == reason
    assert str(caught.value)  # a sentence a person can act on


def test_a_truncated_png_is_refused():
    data = cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1].tobytes()
    with pytest.raises(InvalidInput, match="truncated"):
        decode_image(data[:-20])


def test_the_pixel_limit_is_read_from_the_header_before_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a) or None)
    with pytest.raises(InvalidInput) as caught:
        decode_image(good_jpeg(640, 480), max_pixels=640 * 480 - 1)
    assert caught.value.reason == "too_many_pixels"
    assert "640x480" in str(caught.value)
    assert decoded == []  # refused without a full decode


def test_the_pixel_limit_is_inclusive():
    assert decode_image(good_jpeg(64, 48), max_pixels=64 * 48).shape == (48, 64, 3)


# --- hostile input: lying headers and extreme geometry -------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hostile_frames import hidden_frame_jpeg, jpeg_segments, many_scans_jpeg, narrow_jpeg, narrow_png, oversized_jpeg  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sightline.images import MAX_ASPECT_RATIO  # noqa: E402


def test_a_frame_header_hidden_behind_a_stuffed_ff00_is_the_one_judged():
    data = hidden_frame_jpeg(5000, 5000)  # 350 bytes; a naive reader sees a 1x1 decoy
    assert len(data) < 400
    assert (read_header(data).width, read_header(data).height) == (5000, 5000)
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.reason == "too_many_pixels" and "5000x5000" in str(caught.value)


def test_fill_bytes_and_restart_markers_between_segments_are_skipped_as_libjpeg_does():
    good = good_jpeg(64, 48)
    segments = jpeg_segments(good)
    noisy = b"\xff\xd8" + b"".join(b"\xff\xff\xff\xd3\xff\x00\x12\x34" + s for m, s in segments if m != "scan")
    noisy += segments[-1][1]
    header = read_header(noisy)
    image = cv2.imdecode(np.frombuffer(noisy, np.uint8), cv2.IMREAD_COLOR)
    assert (header.width, header.height) == (64, 48) == (image.shape[1], image.shape[0])


_SEPARATORS = st.sampled_from([b"", b"\xff", b"\xff\xff\xff", b"\xff\x00", b"\xff\x00\x01\x02", b"\xff\xd0",
                               b"\xff\xd7", b"\xff\x01", b"\x00\x17", b"\xab"])


@st.composite
def lying_jpegs(draw):
    """A JPEG whose segments are separated by fill bytes, stuffed pairs, RSTn and junk, whose
    frame header may be hidden behind a stuffed pair and followed by decoys of any size."""
    side = st.integers(1, 400)
    real = oversized_jpeg(draw(side), draw(side), scan_bytes=draw(st.integers(0, 16)))
    segments = jpeg_segments(real)
    out = b"\xff\xd8"
    for marker, seg in segments:
        if marker == "scan":
            out += seg
            break
        out += b"".join(draw(st.lists(_SEPARATORS, max_size=3)))
        if marker == 0xC0 and draw(st.booleans()):
            out += b"\xff\x00\x00\x05"  # a naive reader skips the next 3 bytes
        out += seg
    if draw(st.booleans()):
        decoy = [s for m, s in segments if m == 0xC0][0]
        out = out[:-2] + decoy[:5] + bytes([0, draw(st.integers(1, 9)), 0, draw(st.integers(1, 9))]) + decoy[9:] + out[-2:]
    if draw(st.booleans()):
        position = draw(st.integers(2, len(out)))
        out = out[:position] + bytes([draw(st.integers(0, 255))]) + out[position + 1:]
    return out


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(lying_jpegs())
def test_no_lying_jpeg_decodes_past_the_limits(data):
    """Whatever the header says, a decoded frame is within the pixel and aspect limits and
    has the size the header reader promised."""
    limit = 100 * 100
    try:
        image = decode_image(data, max_pixels=limit)
    except InvalidInput as exc:
        assert exc.reason in {"truncated", "too_many_pixels", "zero_size", "decode_failed", "extreme_aspect_ratio"}
        return
    height, width = image.shape[:2]
    assert width * height <= limit and max(width, height) <= MAX_ASPECT_RATIO * min(width, height)
    assert (read_header(data).width, read_header(data).height) == (width, height)


_LYING_DECODE = """
import time
from sightline import images
from hostile_frames import hidden_frame_jpeg
images.read_header = lambda data: images.ImageHeader("jpeg", 1, 1)  # a header reader fooled
started = time.perf_counter()
try:
    images.decode_image(hidden_frame_jpeg(5000, 5000))
    print("decoded")
except images.InvalidInput as exc:
    print(exc.reason, round(time.perf_counter() - started, 3))
"""


def test_the_decoder_itself_refuses_a_frame_over_the_limit_whatever_the_header_reader_says():
    """OpenCV's own limit is set before OpenCV is imported (a fresh process, as in Triton)."""
    tests = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tests), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _LYING_DECODE], env=env, capture_output=True, text=True, timeout=60)
    reason, seconds = out.stdout.split()
    assert reason == "too_many_pixels" and float(seconds) < 0.5, out.stdout + out.stderr


@pytest.mark.parametrize("make, size", [(narrow_jpeg, (1, 8192)), (narrow_jpeg, (8192, 1)),
                                        (narrow_png, (1, 1_000_000)), (narrow_png, (17, 1))])
def test_extreme_geometry_is_refused_by_name_before_decoding(monkeypatch, make, size):
    data = make(*size)
    assert len(data) < 8000  # a few kilobytes
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an extreme frame"))
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.reason == "extreme_aspect_ratio"
    assert f"{size[0]}x{size[1]}" in str(caught.value)
    assert time.perf_counter() - started < 0.1


def test_a_sixteen_to_one_frame_is_still_served():
    assert decode_image(narrow_png(16 * 20, 20)).shape == (20, 320, 3)


def test_a_jpeg_of_thousands_of_repeated_scans_is_refused_before_decoding(monkeypatch):
    """48 KB that cost 5 s to decode (each scan decodes the whole 2048x2048 frame again)."""
    data = many_scans_jpeg(2048, 2000)
    assert len(data) < 50_000
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a scan bomb"))
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.reason == "too_many_scans" and "2006" in str(caught.value)


def test_progressive_jpegs_as_encoders_write_them_are_served():
    image = np.random.default_rng(3).integers(0, 255, (240, 320, 3), np.uint8)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert decode_image(data).shape == (240, 320, 3)


from sightline.images import ImageHeader, decode_frame, reduction_for  # noqa: E402


@pytest.mark.parametrize("width, height, factor", [(640, 480, 1), (511, 4000, 1), (512, 512, 2), (1280, 720, 2),
                                                   (1920, 1080, 4), (2048, 2048, 8), (3840, 2160, 8), (7680, 4320, 8)])
def test_a_jpeg_is_reduced_by_the_largest_factor_that_keeps_both_sides_at_the_model_input(width, height, factor):
    assert reduction_for(ImageHeader("jpeg", width, height), 256) == factor
    assert reduction_for(ImageHeader("png", width, height), 256) == 1  # OpenCV would decode a PNG whole anyway
    assert reduction_for(ImageHeader("jpeg", width, height), 0) == 1


@pytest.mark.parametrize("width, height", [(1920, 1080), (1001, 777)])
def test_a_reduced_decode_is_the_frame_at_a_fraction_of_its_size_rounded_up(width, height):
    from sightline.export.scenes import Conditions, generate_scene

    scene = generate_scene(seed=5, conditions=Conditions(width=width, height=height)).image
    data = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    decoded = decode_frame(data, min_side=256)
    factor = reduction_for(read_header(data), 256)
    assert decoded.factor == factor and (decoded.header.width, decoded.header.height) == (width, height)
    assert decoded.image.shape == (-(-height // factor), -(-width // factor), 3)
    full = decode_image(data)
    small = cv2.resize(full, decoded.image.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - decoded.image).mean() < 8  # the same picture


def test_a_reduced_decode_keeps_every_check_of_the_full_frame(monkeypatch):
    # the pixel limit is the camera's frame's, not the reduced copy's
    with pytest.raises(InvalidInput) as caught:
        decode_frame(good_jpeg(3840, 2160), max_pixels=3840 * 2160 - 1, min_side=256)
    assert caught.value.reason == "too_many_pixels"
