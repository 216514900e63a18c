"""The demo detector: a small anchor-free single-stage CNN (TTFNet-style).

A patchify stem (4x4 pixels per cell) and a plain conv backbone down to stride 32,
with a light top-down path back to one output grid at `STRIDE` (8: a 32x32 grid at
256 px, matched to objects of 12-150 px at the model input). Each grid cell predicts a centre heatmap per class and the distances
(left, top, right, bottom) from the cell centre to the box edges. The network decodes
its own output into the layout `sightline.vision` expects, so that serving needs no
torch:

- `predictions` (B, cells, 4 + C): per cell the box (x1, y1, x2, y2) in model-input
  pixels, then the class heatmap scores in 0..1 with every cell that is not a 3x3 local
  maximum zeroed (CenterNet's max-pool peak extraction).
- `embedding` (B, EMBEDDING_DIM): global-average-pooled deepest backbone features,
  through a fixed orthogonal projection, L2-normalised (unit length). It is what the
  monitor compares against the daylight reference for drift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sightline.modelspec import EMBEDDING_DIM, INPUT_SIZE, NUM_CLASSES

STRIDE = 8
GRID = INPUT_SIZE // STRIDE
# Box distances are softplus(x) * BOX_SCALE model-input pixels.
BOX_SCALE = 16.0


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2 if k % 2 else 0, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def cell_centres(grid: int = GRID, stride: int = STRIDE) -> torch.Tensor:
    """(2, grid, grid) x and y of each output cell's centre in model-input pixels."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) * stride
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs, ys])


class Detector(nn.Module):
    """`forward(images)` takes (B, 3, INPUT_SIZE, INPUT_SIZE) RGB in 0..1 and returns
    `(predictions, embedding)` as described in the module docstring; `raw(images)`
    returns the undecoded (heatmap logits, box distances, embedding) used in training."""

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, ...] = (32, 64, 96, 128),
                 neck: int = 64, head: int = 48) -> None:
        super().__init__()
        w2, w3, w4, w5 = widths
        self.stage2 = nn.Sequential(ConvBN(3, w2, 4, 4), ConvBN(w2, w2))   # /4
        self.stage3 = nn.Sequential(ConvBN(w2, w3, 3, 2), ConvBN(w3, w3))  # /8
        self.stage4 = nn.Sequential(ConvBN(w3, w4, 3, 2), ConvBN(w4, w4))  # /16
        self.stage5 = nn.Sequential(ConvBN(w4, w5, 3, 2), ConvBN(w5, w5))  # /32
        self.lat5 = nn.Conv2d(w5, neck, 1)
        self.lat4 = nn.Conv2d(w4, neck, 1)
        self.lat3 = nn.Conv2d(w3, neck, 1)
        self.smooth3 = ConvBN(neck, head)
        self.cls_head = nn.Conv2d(head, num_classes, 1)
        self.box_head = nn.Conv2d(head, 4, 1)
        self.project = nn.Linear(w5, EMBEDDING_DIM, bias=False)
        nn.init.constant_(self.cls_head.bias, -4.6)  # initial heatmap ~0.01 (focal-loss prior)
        nn.init.constant_(self.box_head.bias, 1.0)   # initial boxes ~21 px per side
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            q, _ = torch.linalg.qr(torch.randn(max(w5, EMBEDDING_DIM), max(w5, EMBEDDING_DIM), generator=generator))
            self.project.weight.copy_(q[:EMBEDDING_DIM, :w5])
        self.project.weight.requires_grad_(False)
        self.register_buffer("centres", cell_centres(), persistent=False)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.stage2(images)
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        p = self.lat5(c5)
        p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.lat4(c4)
        p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.lat3(c3)
        p = self.smooth3(p)
        heat_logits = self.cls_head(p)
        distances = F.softplus(self.box_head(p)) * BOX_SCALE
        embedding = F.normalize(self.project(c5.mean(dim=(2, 3))), dim=1)
        return heat_logits, distances, embedding

    def boxes(self, distances: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) x1, y1, x2, y2 in model-input pixels from the (l, t, r, b) distances."""
        xy = self.centres.unsqueeze(0)
        return torch.cat([xy - distances[:, :2], xy + distances[:, 2:]], dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat_logits, distances, embedding = self.raw(images)
        # Peaks are found on the logits: sigmoid saturates, which would make ties.
        is_peak = F.max_pool2d(heat_logits, 3, stride=1, padding=1) == heat_logits
        peaks = torch.sigmoid(heat_logits) * is_peak.to(heat_logits.dtype)
        out = torch.cat([self.boxes(distances), peaks], dim=1)
        predictions = out.flatten(2).transpose(1, 2)
        return predictions, embedding
