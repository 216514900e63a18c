"""mAP@0.5 of the detector through the served pipeline.

Each frame goes letterbox -> model (an ONNX Runtime session for the gate) ->
`sightline.vision.postprocess` -> comparison with the scene's ground truth, i.e. exactly
the path a Triton request takes. AP per class is the all-point interpolated area under
the precision-recall curve (VOC 2010+ / COCO style), greedy matching at IoU >= 0.5;
mAP is the mean over classes.

Evaluation seeds start at `EVAL_SEED_START`, far from the training seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sightline.export.scenes import Conditions, generate_scene
from sightline.modelspec import CLASS_NAMES, INPUT_SCALE, INPUT_SIZE, ONNX_INPUT, ONNX_PREDICTIONS
from sightline.vision import box_iou, letterbox_chw, postprocess

EVAL_SEED_START = 10_000_000
EVAL_SCORE_THRESHOLD = 0.05  # mAP integrates over the low-score tail; serving uses SCORE_THRESHOLD

# A predictor maps a (B, 3, S, S) uint8 batch (letterboxed RGB, as the steps send it) to
# (B, cells, 4 + C) raw predictions.
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MapResult:
    map50: float
    ap_per_class: dict[str, float]
    frames: int
    objects: int
    detections: int


def onnx_predictor(model_path: str, threads: int = 2) -> Predictor:
    """A predictor running `model_path` in ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run([ONNX_PREDICTIONS], {ONNX_INPUT: batch})[0]


def torch_predictor(model) -> Predictor:
    """A predictor running a torch `Detector` (eval mode, no grad)."""
    import torch

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch.astype(np.float32) * np.float32(INPUT_SCALE)))[0].numpy()

    return predict


def average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP from detection scores, their true-positive flags and the
    number of ground-truth objects."""
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_truth
    precision = tp / np.maximum(tp + fp, 1e-9)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def evaluate_map(predict: Predictor, seeds: Sequence[int], conditions: Conditions = Conditions(),
                 batch_size: int = 16, iou_threshold: float = 0.5,
                 score_threshold: float = EVAL_SCORE_THRESHOLD) -> MapResult:
    """mAP@`iou_threshold` of `predict` on the scenes `seeds` rendered under `conditions`."""
    per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in range(len(CLASS_NAMES))}
    truth_count = np.zeros(len(CLASS_NAMES), np.int64)
    detections = 0
    seeds = list(seeds)
    for start in range(0, len(seeds), batch_size):
        scenes = [generate_scene(s, conditions) for s in seeds[start:start + batch_size]]
        inputs = [letterbox_chw(sc.image, INPUT_SIZE) for sc in scenes]
        raw = predict(np.stack([x for x, _ in inputs]))
        for scene, (_, info), pred in zip(scenes, inputs, raw):
            dets = postprocess(pred, info, score_threshold=score_threshold)
            detections += len(dets)
            for c in range(len(CLASS_NAMES)):
                truth = scene.boxes[scene.classes == c]
                truth_count[c] += len(truth)
                mine = dets[dets[:, 5] == c]
                per_class[c].append((mine[:, 4], _match(mine[:, :4], truth, iou_threshold)))
    ap = {}
    for c, name in enumerate(CLASS_NAMES):
        scores = np.concatenate([s for s, _ in per_class[c]]) if per_class[c] else np.zeros(0)
        hits = np.concatenate([h for _, h in per_class[c]]) if per_class[c] else np.zeros(0, bool)
        ap[name] = average_precision(scores, hits, int(truth_count[c]))
    valid = [v for v in ap.values() if not np.isnan(v)]
    return MapResult(map50=float(np.mean(valid)) if valid else 0.0, ap_per_class=ap, frames=len(seeds),
                     objects=int(truth_count.sum()), detections=detections)


def _match(boxes: np.ndarray, truth: np.ndarray, iou_threshold: float) -> np.ndarray:
    """True-positive flags for detections (already sorted best first) against one image's
    ground truth of one class: each truth box matches at most one detection."""
    hits = np.zeros(len(boxes), bool)
    if len(boxes) == 0 or len(truth) == 0:
        return hits
    iou = box_iou(boxes, truth)
    taken = np.zeros(len(truth), bool)
    for i in range(len(boxes)):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            hits[i] = True
            taken[j] = True
    return hits
