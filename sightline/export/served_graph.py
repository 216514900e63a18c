"""The graph Triton serves takes uint8 frames: its first two nodes cast and scale them.

Every model that reaches the repository passes through :func:`with_uint8_input`, the demo
detector (``sightline export demo``) and a user's own (``sightline export onnx``) alike,
so preprocess can hand over letterboxed uint8 frames, a quarter of the bytes of float32,
and the model still starts from float32 in 0..1. ONNX only (no torch): the config writer
uses it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from sightline.errors import ConfigError
from sightline.modelspec import INPUT_SCALE, ONNX_INPUT, UINT8_INPUT_NODES


def with_uint8_input(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with a uint8 ``images`` input: Cast to float32, then Mul by 1/255, feed what
    the float input fed. The detector's own float math is untouched (the steps used to do
    the same two operations in numpy, so a frame gets the same answer). A graph whose input
    is already uint8 comes back as it is."""
    graph = proto.graph
    found = [value for value in graph.input if value.name == ONNX_INPUT]
    if not found:
        raise ConfigError(f"the graph has no input named {ONNX_INPUT!r}")
    tensor_type = found[0].type.tensor_type
    if tensor_type.elem_type == onnx.TensorProto.UINT8:
        return proto
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConfigError(f"{ONNX_INPUT!r} must be float32 (0..1) or uint8 (0..255), "
                         f"got ONNX element type {tensor_type.elem_type}")
    cast, scale = UINT8_INPUT_NODES
    scaled = f"{ONNX_INPUT}_scaled"
    for node in graph.node:
        node.input[:] = [scaled if name == ONNX_INPUT else name for name in node.input]
    tensor_type.elem_type = onnx.TensorProto.UINT8
    factor = onnx.numpy_helper.from_array(np.array(INPUT_SCALE, np.float32), name=f"{ONNX_INPUT}_scale_factor")
    graph.initializer.append(factor)
    graph.node.insert(0, onnx.helper.make_node("Mul", [f"{ONNX_INPUT}_float", factor.name], [scaled], name=scale))
    graph.node.insert(0, onnx.helper.make_node("Cast", [ONNX_INPUT], [f"{ONNX_INPUT}_float"], name=cast,
                                               to=onnx.TensorProto.FLOAT))
    return proto


def ensure_uint8_input(path: Path) -> bool:
    """Rewrite the ONNX file at ``path`` to take uint8 if it takes float32; returns whether it changed."""
    proto = onnx.load(str(path))
    value = next((v for v in proto.graph.input if v.name == ONNX_INPUT), None)
    if value is None or value.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
        return False
    onnx.save(with_uint8_input(proto), str(path))
    return True
