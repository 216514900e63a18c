"""Export a user's own torch detector to ONNX for Triton.

The model comes from a factory, ``module:callable``, that returns a ``torch.nn.Module``
whose ``forward(images)`` returns ``(predictions, embedding)``. ``images`` is a float32
NCHW batch of RGB in 0..1; the export keeps the batch axis dynamic so Triton can batch
requests. The copy written into the model repository takes the steps' uint8 frames and
casts and scales them itself (``sightline.export.served_graph``).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sightline import modelspec
from sightline.errors import InputError


class ExportError(InputError):
    """The model cannot be exported as asked; the message says what to change."""


def load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ExportError(f"--factory {spec!r}: expected module:callable, e.g. mypkg.models:build")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(f"--factory {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ExportError(f"--factory {spec!r}: {module_name} has no callable {attr!r}")
    return factory


def export_torch(model: Any, onnx_path: Path, input_size: int = modelspec.INPUT_SIZE, opset: int = modelspec.ONNX_OPSET) -> dict:
    """Export with a dynamic batch axis and check torch against ONNX Runtime.

    Returns ``{"max_abs_diff": float, "outputs": [...]}`` measured on a batch of 3.
    """
    import onnxruntime as ort
    import torch

    model = model.eval()
    sample = torch.rand(3, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = model(sample)
    if not (isinstance(outputs, (tuple, list)) and len(outputs) == 2):
        raise ExportError("forward(images) must return (predictions, embedding)")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        # torch's exporter trips over its own pytree deprecations; they are not the user's.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, model, sample, onnx_path, batch, opset)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {modelspec.ONNX_INPUT: sample.numpy()})
    diffs = [float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, outputs)]
    return {"max_abs_diff": max(diffs), "outputs": [o.name for o in session.get_outputs()]}


def _export(torch: Any, model: Any, sample: Any, onnx_path: Path, batch: Any, opset: int) -> None:
    torch.onnx.export(
        model,
        (sample,),
        str(onnx_path),
        input_names=[modelspec.ONNX_INPUT],
        output_names=[modelspec.ONNX_PREDICTIONS, modelspec.ONNX_EMBEDDING],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def export_factory(spec: str, onnx_path: Path, weights: str | None = None, input_size: int = modelspec.INPUT_SIZE) -> dict:
    import torch

    model = load_factory(spec)()
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"--factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ExportError(f"--weights {weights}: cannot load a state_dict: {exc}") from exc
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ExportError(f"--weights {weights}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return export_torch(model, onnx_path, input_size=input_size)
