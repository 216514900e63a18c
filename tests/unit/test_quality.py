import cv2
import numpy as np
import pytest

from sightline.export.scenes import generate_scene
from sightline.quality import FEATURE_NAMES, quality_features


@pytest.fixture
def frame():
    return generate_scene(21).image


def test_all_features_are_reported_as_floats(frame):
    features = quality_features(frame)
    assert set(features) == set(FEATURE_NAMES)
    assert all(isinstance(v, float) for v in features.values())
    assert features["width"] == 640 and features["height"] == 480
    assert features["pixels"] == 640 * 480 and features["aspect_ratio"] == pytest.approx(4 / 3)


def test_a_darker_frame_has_lower_brightness_and_contrast(frame):
    dark = (frame * 0.3).astype(np.uint8)
    assert quality_features(dark)["brightness"] < 0.4 * quality_features(frame)["brightness"]
    assert quality_features(dark)["contrast"] < quality_features(frame)["contrast"]


def test_a_blurred_frame_has_lower_sharpness(frame):
    blurred = cv2.GaussianBlur(frame, (0, 0), 3)
    assert quality_features(blurred)["sharpness"] < 0.3 * quality_features(frame)["sharpness"]


def test_sharpness_does_not_depend_on_resolution(frame):
    big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)
    assert quality_features(big)["sharpness"] == pytest.approx(quality_features(frame)["sharpness"], rel=0.25)


def test_brightness_and_contrast_stay_in_0_to_1():
    white = np.full((100, 200, 3), 255, np.uint8)
    black = np.zeros((100, 200, 3), np.uint8)
    assert quality_features(white)["brightness"] == pytest.approx(1.0)
    assert quality_features(black)["brightness"] == 0.0 and quality_features(black)["contrast"] == 0.0


# --- hostile geometry: bounded memory whatever the frame's shape ----------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sightline.quality import SHARPNESS_WIDTH, sharpness_size  # noqa: E402


@settings(max_examples=500, derandomize=True)
@given(st.integers(1, 1 << 20), st.integers(1, 1 << 20))
def test_the_sharpness_frame_never_exceeds_160_by_1280(width, height):
    small_w, small_h = sharpness_size(width, height)
    assert 1 <= small_w <= SHARPNESS_WIDTH and 1 <= small_h <= 8 * SHARPNESS_WIDTH
    if height * SHARPNESS_WIDTH / width <= 8 * SHARPNESS_WIDTH - 0.5:
        assert small_w == SHARPNESS_WIDTH  # ordinary frames are measured as before


_NARROW = """
import resource, numpy as np
from sightline.quality import quality_features
frame = np.zeros((4096, 1, 3), np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
features = quality_features(frame)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, features["aspect_ratio"])
"""


def test_a_one_pixel_wide_frame_costs_megabytes_not_gigabytes():
    """A 1x4096 frame was resized to 160 x 655 360 (about 0.8 GB with the Laplacian)."""
    out = subprocess.run([sys.executable, "-c", _NARROW], capture_output=True, text=True, timeout=120)
    grown_mb, aspect = out.stdout.split()
    assert int(grown_mb) < 50, out.stdout + out.stderr
    assert float(aspect) == 1 / 4096
