"""Image geometry and box post-processing shared by training, evaluation and serving.

The Triton preprocess and postprocess steps call `letterbox` and `postprocess` per
request, and the detector's mAP gate is measured through the same two functions, so
the quality the gate reports is the quality that is served.

numpy and OpenCV only, and Python 3.10 compatible: this module runs inside Triton's
Python backend.

The detector's raw `predictions` for one image are an (A, 4 + C) float32 array: for
each of A grid cells a box (x1, y1, x2, y2) in model-input pixels followed by C class
scores in 0..1 (already sigmoid-ed, with non-peak cells zeroed by the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from sightline.modelspec import (
    INPUT_SIZE,
    LETTERBOX_PAD_VALUE,
    MAX_DETECTIONS,
    NMS_IOU_THRESHOLD,
    SCORE_THRESHOLD,
)

# Candidates kept for NMS, best first; bounds the cost when the threshold is low.
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was fitted into the square model input: resized by `scale`, then
    offset by (`pad_x`, `pad_y`). `width`, `height` are the original image's size."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def letterbox_uint8(image_bgr: np.ndarray, size: int = INPUT_SIZE,
                    source_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, LetterboxInfo]:
    """Fit a BGR image into a size x size RGB uint8 canvas (HWC), keeping its aspect ratio.

    The image is resized so that its longer side fills the canvas and centred; the rest
    is filled with `LETTERBOX_PAD_VALUE` grey. ``source_size`` (width, height): the
    camera's frame when ``image_bgr`` is a reduced copy of it (a JPEG decoded at 1/2, 1/4
    or 1/8); the `LetterboxInfo` then maps boxes back to the camera's pixels.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    scale = min(size / width, size / height)
    new_w = min(size, max(1, int(round(width * scale))))
    new_h = min(size, max(1, int(round(height * scale))))
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), LETTERBOX_PAD_VALUE, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    if source_size is not None and tuple(source_size) != (width, height):
        source_w, source_h = source_size
        # one scale for both axes, from the longer side (the reduced copy rounds each side up)
        scale = scale * (width / source_w if width >= height else height / source_h)
        width, height = int(source_w), int(source_h)
    return canvas, LetterboxInfo(scale=scale, pad_x=pad_x, pad_y=pad_y, width=width, height=height)


def letterbox_chw(image_bgr: np.ndarray, size: int = INPUT_SIZE,
                  source_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, LetterboxInfo]:
    """The served model input for a BGR image: (3, size, size) uint8 RGB (the graph casts
    and scales it), and the `LetterboxInfo` needed to map boxes back."""
    canvas, info = letterbox_uint8(image_bgr, size, source_size)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), info


def letterbox(image_bgr: np.ndarray, size: int = INPUT_SIZE,
              source_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, LetterboxInfo]:
    """The model input for a BGR image: (3, size, size) float32 RGB in 0..1, and the
    `LetterboxInfo` needed to map boxes back (see `letterbox_uint8`)."""
    canvas, info = letterbox_uint8(image_bgr, size, source_size)
    chw = canvas.transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(chw), info


def unletterbox_boxes(boxes_xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map (N, 4) boxes from model-input pixels to original-image pixels, clipped to the image."""
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    offset = np.array([info.pad_x, info.pad_y, info.pad_x, info.pad_y], np.float32)
    out = (boxes - offset) / np.float32(info.scale)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, info.width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, info.height)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of two sets of (x1, y1, x2, y2) boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                  iou_threshold: float = NMS_IOU_THRESHOLD,
                  max_detections: int = MAX_DETECTIONS) -> np.ndarray:
    """Indices of the boxes kept by class-aware greedy NMS, best score first.

    A box is dropped when a higher-scoring box of the same class overlaps it with IoU
    above `iou_threshold`; boxes of different classes never suppress each other.
    """
    scores = np.asarray(scores, np.float32).reshape(-1)
    if scores.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
    b = np.asarray(boxes, np.float32).reshape(-1, 4)[order]
    c = np.asarray(classes).reshape(-1)[order]
    overlaps = box_iou(b, b) > iou_threshold
    overlaps &= c[:, None] == c[None, :]
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= max_detections:
            break
        suppressed |= overlaps[i]
    return order[np.array(keep, np.int64)]


def decode_predictions(pred_one_image: np.ndarray,
                       score_threshold: float = SCORE_THRESHOLD) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate detections of one image: (boxes (K, 4) in model-input pixels, scores (K,),
    classes (K,) int64) for the cells whose best class score reaches `score_threshold`."""
    pred = np.asarray(pred_one_image, np.float32)
    if pred.ndim != 2 or pred.shape[1] < 5:
        raise ValueError(f"expected predictions of shape (cells, 4 + classes), got {pred.shape}")
    class_scores = pred[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(pred)), classes]
    hit = scores >= score_threshold
    return pred[hit, :4], scores[hit], classes[hit].astype(np.int64)


def postprocess(pred_one_image: np.ndarray, info: LetterboxInfo,
                score_threshold: float = SCORE_THRESHOLD,
                iou: float = NMS_IOU_THRESHOLD,
                max_det: int = MAX_DETECTIONS) -> np.ndarray:
    """Final detections of one image as a (K, 6) float32 array
    [x1, y1, x2, y2, score, class] in original-image pixels, best score first."""
    boxes, scores, classes = decode_predictions(pred_one_image, score_threshold)
    keep = nms_per_class(boxes, scores, classes, iou, max_det)
    out = np.empty((len(keep), 6), np.float32)
    out[:, :4] = unletterbox_boxes(boxes[keep], info)
    out[:, 4] = scores[keep]
    out[:, 5] = classes[keep]
    return out
