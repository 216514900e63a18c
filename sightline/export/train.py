"""Train the demo detector on a pre-generated set of daylight scenes (CPU, 2 threads).

The training scenes are generated once (in worker processes), letterboxed exactly as
serving does (`sightline.vision.letterbox_uint8`) and encoded into grid targets; the
epochs then reuse them with light augmentation (horizontal flip, +-15 % brightness).
Night frames are never used: the drop at night is the drift the demo shows.

Targets and losses follow TTFNet: a Gaussian centre heatmap per class trained with
CenterNet's focal loss, and box regression (GIoU) from every cell near an object's
centre, weighted by that Gaussian and by log(object area).

Schedules (`SCHEDULES`): "full" (4000 scenes x 6 epochs, about 4 minutes with data
generation on a 2-core CPU, against a 10-minute budget) meets the mAP gate with a wide
margin; "short" (about a minute) only shows that the pipeline learns.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from sightline.export.detector import GRID, STRIDE, Detector
from sightline.export.scenes import Conditions, generate_scene
from sightline.modelspec import INPUT_SIZE, NUM_CLASSES
from sightline.vision import letterbox_uint8

TRAIN_SEED_START = 0  # training scenes use seeds TRAIN_SEED_START .. + images - 1
GAUSSIAN_ALPHA = 0.54  # heatmap sigma = alpha * box side / 6 (TTFNet)
BOX_LOSS_WEIGHT = 5.0


@dataclass(frozen=True)
class Schedule:
    images: int
    epochs: int
    batch_size: int = 32
    lr: float = 4e-3
    weight_decay: float = 5e-4


SCHEDULES = {
    "full": Schedule(images=4000, epochs=6),
    "short": Schedule(images=1200, epochs=4, batch_size=16),
}


@dataclass
class TrainResult:
    """What a training run did: the per-epoch mean losses, wall time (data included)."""

    schedule: str
    epochs: int
    images: int
    steps: int
    epoch_losses: list[float] = field(default_factory=list)
    first_steps_loss: float = float("nan")
    data_seconds: float = 0.0
    wall_seconds: float = 0.0


def encode_targets(boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid targets of one letterboxed image from boxes in model-input pixels.

    Returns heatmap (C, G, G) with 1 at each object's centre cell, box targets (4, G, G)
    (the x1, y1, x2, y2 of the object a cell regresses) and regression weights (G, G).
    Smaller objects are written last, so they own the cells they share with larger ones.
    """
    heat = np.zeros((NUM_CLASSES, GRID, GRID), np.float32)
    box_t = np.zeros((4, GRID, GRID), np.float32)
    weight = np.zeros((GRID, GRID), np.float32)
    cells = np.arange(GRID, dtype=np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in np.argsort(-areas, kind="stable"):
        x1, y1, x2, y2 = boxes[i]
        w, h = x2 - x1, y2 - y1
        if w < 2 or h < 2:
            continue
        cx = min(int((x1 + x2) / 2 / STRIDE), GRID - 1)
        cy = min(int((y1 + y2) / 2 / STRIDE), GRID - 1)
        sx = max(GAUSSIAN_ALPHA * w / 6 / STRIDE, 0.25)
        sy = max(GAUSSIAN_ALPHA * h / 6 / STRIDE, 0.25)
        gx = np.exp(-((cells - cx) ** 2) / (2 * sx * sx))
        gy = np.exp(-((cells - cy) ** 2) / (2 * sy * sy))
        g = gy[:, None] * gx[None, :]
        heat[classes[i]] = np.maximum(heat[classes[i]], g)
        # Regress from the cells whose centres lie inside the box (and the centre cell).
        inside_x = ((cells + 0.5) * STRIDE >= x1) & ((cells + 0.5) * STRIDE <= x2)
        inside_y = ((cells + 0.5) * STRIDE >= y1) & ((cells + 0.5) * STRIDE <= y2)
        region = inside_y[:, None] & inside_x[None, :]
        region[cy, cx] = True
        region &= g > 0.01
        wr = np.where(region, g, 0.0)
        wr *= math.log(max(w * h, 2.0)) / wr.sum()
        weight[region] = wr[region]
        box_t[:, region] = np.array([x1, y1, x2, y2], np.float32)[:, None]
    return heat, box_t, weight


def _render(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    scene = generate_scene(seed, Conditions())
    canvas, info = letterbox_uint8(scene.image, INPUT_SIZE)
    boxes = scene.boxes * info.scale + np.array([info.pad_x, info.pad_y] * 2, np.float32)
    heat, box_t, weight = encode_targets(boxes, scene.classes)
    return canvas, heat.astype(np.float16), box_t, weight


def build_training_set(images: int, seed_start: int = TRAIN_SEED_START, workers: int = 2) -> dict[str, torch.Tensor]:
    """Render, letterbox and encode `images` daylight scenes (seeds seed_start..) once."""
    seeds = range(seed_start, seed_start + images)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rendered = list(pool.map(_render, seeds, chunksize=64))
    else:
        rendered = [_render(s) for s in seeds]
    return {
        "images": torch.from_numpy(np.stack([r[0] for r in rendered])),        # N,S,S,3 uint8
        "heat": torch.from_numpy(np.stack([r[1] for r in rendered])),          # N,C,G,G f16
        "box": torch.from_numpy(np.stack([r[2] for r in rendered])),           # N,4,G,G
        "weight": torch.from_numpy(np.stack([r[3] for r in rendered])),        # N,G,G
    }


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of 1 - GIoU over the cells with weight > 0; boxes are (B, 4, G, G)."""
    mask = weight > 0
    if not mask.any():
        return pred.sum() * 0.0
    p = pred.permute(0, 2, 3, 1)[mask]
    t = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    area_p = (p[:, 2] - p[:, 0]).clamp(min=0) * (p[:, 3] - p[:, 1]).clamp(min=0)
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    lt = torch.maximum(p[:, :2], t[:, :2])
    rb = torch.minimum(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.maximum(p[:, 2:], t[:, 2:]) - torch.minimum(p[:, :2], t[:, :2])).clamp(min=0).prod(dim=1)
    giou = iou - (hull - union) / hull.clamp(min=1e-6)
    return ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)


def _augment(batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    images = batch["images"].permute(0, 3, 1, 2).float().div_(255.0)
    heat, box, weight = batch["heat"].float(), batch["box"].clone(), batch["weight"]
    n = images.shape[0]
    light = torch.empty(n, 1, 1, 1).uniform_(0.85, 1.15, generator=generator)
    images = (images * light).clamp_(0.0, 1.0)
    flip = torch.rand(n, generator=generator) < 0.5
    if flip.any():
        images[flip] = images[flip].flip(3)
        heat[flip] = heat[flip].flip(3)
        weight = weight.clone()
        weight[flip] = weight[flip].flip(2)
        fb = box[flip].flip(3)
        box[flip] = torch.stack([INPUT_SIZE - fb[:, 2], fb[:, 1], INPUT_SIZE - fb[:, 0], fb[:, 3]], dim=1)
    return images, heat, box, weight


def detection_loss(model: Detector, images: torch.Tensor, heat: torch.Tensor, box: torch.Tensor,
                   weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    heat_logits, distances, _ = model.raw(images)
    hm = focal_loss(heat_logits, heat)
    reg = giou_loss(model.boxes(distances), box, weight)
    return hm + BOX_LOSS_WEIGHT * reg, hm, reg


def train(schedule: str = "full", progress: bool = True, seed: int = 0,
          data: dict[str, torch.Tensor] | None = None) -> tuple[Detector, TrainResult]:
    """Train a detector with the named schedule; returns the model (eval mode) and a result.

    `data` may pass a pre-built training set (see `build_training_set`).
    """
    cfg = SCHEDULES[schedule]
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    start = time.perf_counter()
    if data is None:
        data = build_training_set(cfg.images)
    result = TrainResult(schedule=schedule, epochs=cfg.epochs, images=len(data["images"]), steps=0)
    result.data_seconds = time.perf_counter() - start

    model = Detector()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(data["images"])
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr, total_steps=total,
                                                    pct_start=0.15, div_factor=20, final_div_factor=200)
    generator = torch.Generator().manual_seed(seed)
    bar = _progress(progress)
    task = bar.add_task("training", total=total) if bar else None
    early: list[float] = []
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                batch = {k: v[idx] for k, v in data.items()}
                images, heat, box, weight = _augment(batch, generator)
                loss, hm, reg = detection_loss(model, images, heat, box, weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                optimiser.step()
                scheduler.step()
                running += float(loss.detach())
                result.steps += 1
                if len(early) < 10:
                    early.append(float(loss.detach()))
                if bar:
                    bar.update(task, advance=1, description=(
                        f"epoch {epoch + 1}/{cfg.epochs} loss {float(loss.detach()):.3f} "
                        f"(heat {float(hm.detach()):.3f} box {float(reg.detach()):.3f})"))
            result.epoch_losses.append(running / steps_per_epoch)
            if bar:
                bar.console.log(f"epoch {epoch + 1}/{cfg.epochs}: mean loss {result.epoch_losses[-1]:.4f}")
    finally:
        if bar:
            bar.stop()
    result.first_steps_loss = float(np.mean(early))
    result.wall_seconds = time.perf_counter() - start
    model.eval()
    return model, result


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sightline.progress import progress_bar

    bar = progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
    bar.start()
    return bar
