"""Postprocess step: raw predictions -> detections in original-image pixels."""

from __future__ import annotations

import numpy as np

from sightline import modelspec, vision
from sightline.conventions import REASON_BAD_LETTERBOX
from sightline.images import InvalidInput
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
    predictions, letterbox = np.asarray(predictions), np.asarray(letterbox)
    if predictions.ndim != 3 or predictions.shape[2] < 5 or not np.issubdtype(predictions.dtype, np.floating):
        raise InvalidInput("bad_shape", f"wrong shape: predictions must be float [b, cells, 4 + classes], "
                                        f"got {predictions.dtype} {list(predictions.shape)}")
    if letterbox.ndim != 2 or letterbox.shape != (predictions.shape[0], 5):
        raise InvalidInput("bad_shape", f"wrong shape: LETTERBOX must be [{predictions.shape[0]}, 5], "
                                        f"got {list(letterbox.shape)}")
    if not np.isfinite(letterbox).all() or (letterbox[:, 0] <= 0).any():
        raise InvalidInput(REASON_BAD_LETTERBOX, "bad LETTERBOX: every scale must be a positive finite number")
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
