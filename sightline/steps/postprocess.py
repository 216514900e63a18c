"""Postprocess step: raw predictions -> detections in original-image pixels."""

from __future__ import annotations

import numpy as np

from sightline import modelspec, vision
from sightline.steps.preprocess import letterbox_from_array

PADDING_CLASS = -1.0


def postprocess_request(
    predictions: np.ndarray,
    letterbox: np.ndarray,
    score_threshold: float = modelspec.SCORE_THRESHOLD,
    iou_threshold: float = modelspec.NMS_IOU_THRESHOLD,
    max_detections: int = modelspec.MAX_DETECTIONS,
) -> np.ndarray:
    """Detections for every frame of one request, shape [b, K, 6].

    Rows are ``x1, y1, x2, y2, score, class``. A request of several frames is padded to
    the longest list with rows whose class is -1; a one-frame request is never padded.
    """
    per_frame = [
        vision.postprocess(
            predictions[i],
            letterbox_from_array(letterbox[i]),
            score_threshold=score_threshold,
            iou=iou_threshold,
            max_det=max_detections,
        )
        for i in range(predictions.shape[0])
    ]
    longest = max((len(d) for d in per_frame), default=0)
    out = np.zeros((len(per_frame), longest, 6), dtype=np.float32)
    out[:, :, 5] = PADDING_CLASS
    for i, dets in enumerate(per_frame):
        out[i, : len(dets)] = dets
    return out


def strip_padding(detections: np.ndarray) -> np.ndarray:
    """Drop padding rows from one frame's [K, 6] detections."""
    return detections[detections[:, 5] >= 0]
