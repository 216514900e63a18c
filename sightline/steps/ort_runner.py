"""The local profile's model step: ONNX Runtime inside a Python-backend model.

The wheel's Triton has no ONNX Runtime backend, so on a CPU-only machine the generated
``detector_model/1/model.py`` imports :class:`TritonPythonModel` from here and runs the
very same ``model.onnx`` that the cluster serves with ``onnxruntime_onnx``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np


class OrtRunner:
    """One ONNX Runtime session; ``run`` takes a batch and returns every output by name."""

    def __init__(self, onnx_path: Path, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results))


def split_rows(array: np.ndarray, sizes: List[int]) -> List[np.ndarray]:
    """Split a batch back into per-request slices of the given sizes."""
    return np.split(array, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [array]


class TritonPythonModel:
    """Concatenate the dynamic batch, run it once, hand each request its rows."""

    def initialize(self, args: Dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        from sightline.steps.telemetry import CameraLabels, StepTelemetry, model_parameters

        self.pb_utils = pb_utils
        params = model_parameters(json.loads(args["model_config"]))
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], args["model_version"], args["model_name"],
                                       CameraLabels())
        self.telemetry.start_background_flush()
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.runner = OrtRunner(
            version_dir / params.get("onnx_file", "model.onnx"),
            intra_op_threads=int(params.get("intra_op_threads", "1")),
        )

    def execute(self, requests):  # noqa: ANN001 - Triton's request objects
        pb = self.pb_utils
        self.telemetry.batch(len(requests))
        feeds: Dict[str, List[np.ndarray]] = {name: [] for name in self.runner.input_names}
        sizes = []
        for request in requests:
            for name in self.runner.input_names:
                feeds[name].append(pb.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(feeds[self.runner.input_names[0]][-1].shape[0])
        batch = {name: np.concatenate(parts) if len(parts) > 1 else parts[0] for name, parts in feeds.items()}
        outputs = self.runner.run(batch)
        per_output = {name: split_rows(value, sizes) for name, value in outputs.items()}
        self.telemetry.flush()
        return [
            pb.InferenceResponse(
                output_tensors=[pb.Tensor(name, np.ascontiguousarray(per_output[name][i])) for name in outputs]
            )
            for i in range(len(requests))
        ]

    def finalize(self) -> None:
        self.telemetry.close()
