"""Frame validation: every bad payload is refused with its own named reason."""

import cv2
import numpy as np
import pytest
from corpus import good_jpeg

from sightline.steps.images import InvalidInput, decode_image, read_header


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
