"""Cheap per-frame input-quality features: light, contrast, sharpness, geometry.

Computed for every request in the Triton preprocess step (well under a millisecond
for a 640x480 frame) and summarised in the daylight reference, so that a camera going
dark, blurred or changing resolution shows up before the detections degrade.

numpy and OpenCV only, Python 3.10 compatible (runs inside Triton's Python backend).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from sightline.conventions import QUALITY_FIELDS

# Sharpness is measured on a grey frame of this width, so that it does not depend on
# the camera's resolution.
SHARPNESS_WIDTH = 160
# ... and at most this tall: a frame narrower than 1:8 is fitted into 160 x 1280 instead, so
# a 1-pixel-wide frame costs kilobytes, not gigabytes (the serving path refuses frames
# beyond 1:16 anyway; see sightline.images.MAX_ASPECT_RATIO).
SHARPNESS_MAX_HEIGHT = 8 * SHARPNESS_WIDTH

FEATURE_NAMES = QUALITY_FIELDS  # defined once, in conventions (also the order of the QUALITY tensor)


def sharpness_size(width: int, height: int) -> Tuple[int, int]:
    """The (width, height) a frame is resized to for sharpness: 160 px wide unless that
    would make it taller than `SHARPNESS_MAX_HEIGHT`; never more than 160 x 1280 pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"expected a non-empty image, got {width}x{height}")
    small_h = max(1, int(round(height * SHARPNESS_WIDTH / width)))
    if small_h <= SHARPNESS_MAX_HEIGHT:
        return SHARPNESS_WIDTH, small_h
    return max(1, int(round(width * SHARPNESS_MAX_HEIGHT / height))), SHARPNESS_MAX_HEIGHT


def quality_features(image_bgr: np.ndarray, source_size: Optional[Tuple[int, int]] = None) -> Dict[str, float]:
    """Quality features of one uint8 BGR frame.

    brightness: mean luma in 0..1; contrast: standard deviation of luma in 0..1;
    sharpness: variance of the Laplacian of the grey frame downscaled to
    `SHARPNESS_WIDTH` pixels wide (grey levels 0..255 squared; higher is sharper);
    width, height, pixels; aspect_ratio: width / height.

    ``source_size`` (width, height): the camera's frame when ``image_bgr`` is a reduced
    copy of it (a large JPEG decoded at 1/2, 1/4 or 1/8). Brightness, contrast and
    sharpness are then computed on the reduced copy (each is measured at 160 px wide
    anyway); width, height, pixels and aspect_ratio are the camera's.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    small_w, small_h = sharpness_size(width, height)
    if source_size is not None:
        width, height = int(source_size[0]), int(source_size[1])
    # Grey first, then the area resize: a third of the pixels to average (0.6 -> 0.3 ms for a
    # 640x480 frame); the small grey frame differs from resizing in colour first by at most
    # one grey level (rounding).
    grey = cv2.resize(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), (small_w, small_h), interpolation=cv2.INTER_AREA)
    mean, std = cv2.meanStdDev(grey)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    _, lap_std = cv2.meanStdDev(laplacian)
    return {
        "brightness": float(mean[0, 0]) / 255.0,
        "contrast": float(std[0, 0]) / 255.0,
        "sharpness": float(lap_std[0, 0]) ** 2,
        "width": float(width),
        "height": float(height),
        "pixels": float(width * height),
        "aspect_ratio": float(width) / float(height),
    }
