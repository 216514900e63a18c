"""Export the torch detector to ONNX and check the file against torch.

`export_onnx` writes a single self-contained file (weights inline) with the tensor names
of `sightline.modelspec` and a symbolic "batch" dimension on every input and output, so
Triton's dynamic batcher can group requests; its input is uint8, cast and scaled to 0..1
by the graph's first two nodes (`with_uint8_input`). `check_onnx` validates it with the ONNX
checker and runs it in ONNX Runtime at batch 1 and 7; `parity` compares ONNX Runtime
with torch on the same real frames.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import onnx
import torch

from sightline.export.scenes import generate_scene
from sightline.export.served_graph import with_uint8_input
from sightline.modelspec import (
    EMBEDDING_DIM,
    INPUT_SCALE,
    INPUT_SIZE,
    NUM_CLASSES,
    ONNX_EMBEDDING,
    ONNX_INPUT,
    ONNX_OPSET,
    ONNX_PREDICTIONS,
)
from sightline.vision import letterbox_chw

PARITY_SEED_START = 30_000_000


def export_onnx(model: torch.nn.Module, path: str | Path) -> Path:
    """Write `model` (a `Detector`) to `path` as ONNX opset `ONNX_OPSET` with a dynamic batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE)
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    previous = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch.export's own internals warn about their pytree API (not our code).
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec")
            program = torch.onnx.export(
                model, (example,), input_names=[ONNX_INPUT], output_names=[ONNX_PREDICTIONS, ONNX_EMBEDDING],
                dynamic_shapes={ONNX_INPUT: {0: torch.export.Dim("batch", min=1, max=1024)}},
                opset_version=ONNX_OPSET, dynamo=True, optimize=True, verbose=False,
            )
    finally:
        quiet.setLevel(previous)
    proto = with_uint8_input(program.model_proto)
    proto.producer_name = "sightline export demo"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def check_onnx(path: str | Path) -> Dict[str, object]:
    """Validate the file and run it at batch 1 and 7; raises on any contract mismatch."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inputs = {i.name: i for i in proto.graph.input}
    outputs = {o.name: o for o in proto.graph.output}
    if list(inputs) != [ONNX_INPUT] or set(outputs) != {ONNX_PREDICTIONS, ONNX_EMBEDDING}:
        raise ValueError(f"tensor names {list(inputs)} -> {list(outputs)} do not match the model contract")
    batch_dims = [t.type.tensor_type.shape.dim[0].dim_param for t in (*inputs.values(), *outputs.values())]
    if any(d != "batch" for d in batch_dims):
        raise ValueError(f"expected a symbolic 'batch' first dimension everywhere, got {batch_dims}")
    if inputs[ONNX_INPUT].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise ValueError(f"{ONNX_INPUT!r} must be uint8 (the served graph scales it): export through with_uint8_input")
    session = _session(path)
    cells = None
    for batch in (1, 7):
        x = np.random.default_rng(batch).integers(0, 256, (batch, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
        pred, emb = session.run([ONNX_PREDICTIONS, ONNX_EMBEDDING], {ONNX_INPUT: x})
        if pred.shape[0] != batch or pred.shape[2] != 4 + NUM_CLASSES or emb.shape != (batch, EMBEDDING_DIM):
            raise ValueError(f"batch {batch}: unexpected output shapes {pred.shape}, {emb.shape}")
        cells = pred.shape[1]
    return {"opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "cells": cells, "batch_dim": "batch", "bytes": Path(path).stat().st_size}


def real_batch(count: int = 8, seed_start: int = PARITY_SEED_START) -> np.ndarray:
    """A (count, 3, S, S) uint8 batch of letterboxed daylight frames for parity checks."""
    return np.stack([letterbox_chw(generate_scene(seed_start + i).image, INPUT_SIZE)[0] for i in range(count)])


def parity(model: torch.nn.Module, path: str | Path, batch: np.ndarray | None = None) -> Dict[str, float]:
    """Max absolute difference between torch and ONNX Runtime on the same frames, per output:
    torch gets them scaled to 0..1 in numpy, the served graph gets them as uint8 and scales
    them itself, so its cast and scale are checked too."""
    batch = real_batch() if batch is None else batch
    with torch.inference_mode():
        scaled = batch.astype(np.float32) * np.float32(INPUT_SCALE)
        t_pred, t_emb = (t.numpy() for t in model.eval()(torch.from_numpy(scaled)))
    o_pred, o_emb = _session(path).run([ONNX_PREDICTIONS, ONNX_EMBEDDING], {ONNX_INPUT: batch})
    return {
        "frames": int(batch.shape[0]),
        "predictions_max_abs_diff": float(np.abs(t_pred - o_pred).max()),
        "embedding_max_abs_diff": float(np.abs(t_emb - o_emb).max()),
    }


def _session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
