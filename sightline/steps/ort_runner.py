"""The local profile's model step: ONNX Runtime inside a Python-backend model.

The wheel's Triton has no ONNX Runtime backend, so on a CPU-only machine the generated
``detector_model/1/model.py`` imports :class:`TritonPythonModel` from here and runs the
very same ``model.onnx`` that the cluster serves with ``onnxruntime_onnx``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

import numpy as np


class OrtRunner:
    """One ONNX Runtime session; ``run`` takes a batch and returns every output by name."""

    def __init__(self, onnx_path: Path, intra_op_threads: int = 1, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin after each run by default, waiting for the next
        # one. On a node whose cores the steps share (here: two preprocess stubs, postprocess,
        # Triton, the client), that spin is taken from them: batch 4 at two threads cost
        # 22.3 ms of CPU spinning against 16.8 ms not, for the same wall time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory pattern: ONNX Runtime plans one block per distinct input shape, and a
        # dynamic batcher sends every batch size from 1 to max_batch_size, so the CPU arena
        # kept a block of each size. Without it: 45 MB less resident (127 against 173 MB
        # after 3000 batches of bursty sizes) at the same speed (3.84 against 3.85-4.00
        # ms a frame); the arena's high-water growth with new burst shapes stays (bench/README).
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # noqa: D102
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results))


def run_isolated(run: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
                 requests: Sequence[Union[Dict[str, np.ndarray], BaseException]]) -> List[Union[Dict[str, np.ndarray], BaseException]]:
    """Each request's outputs, or the exception that is its own error.

    ``requests`` holds each request's feeds (or the exception met reading them). The good
    ones run as one batch; if that batch fails, each runs alone, so one request that
    breaks the model fails alone and its batch-mates are served. At most one batch run
    plus one run per request.
    """
    results: List[Union[Dict[str, np.ndarray], BaseException]] = list(requests)
    good = [i for i, feeds in enumerate(requests) if not isinstance(feeds, BaseException)]
    if not good:
        return results
    feeds = [f for f in requests if not isinstance(f, BaseException)]  # the good ones, in order of `good`
    try:
        names = list(feeds[0])
        sizes = [f[names[0]].shape[0] for f in feeds]
        batch = {name: np.concatenate([f[name] for f in feeds]) if len(feeds) > 1 else feeds[0][name]
                 for name in names}
        outputs = run(batch)
        for name, value in outputs.items():
            if value.shape[:1] != (sum(sizes),):
                raise ValueError(f"output {name} has {value.shape[:1]} rows for a batch of {sum(sizes)}")
        split = {name: split_rows(value, sizes) for name, value in outputs.items()}
        for k, i in enumerate(good):
            results[i] = {name: np.ascontiguousarray(parts[k]) for name, parts in split.items()}
        return results
    except Exception as exc:  # noqa: BLE001 - find the request that broke it: each runs alone
        if len(good) == 1:
            results[good[0]] = exc
            return results
    for i in good:  # one level deep: a batch of one does not come back here
        results[i] = run_isolated(run, [requests[i]])[0]
    return results


def split_rows(array: np.ndarray, sizes: List[int]) -> List[np.ndarray]:
    """Split a batch back into per-request slices of the given sizes."""
    return np.split(array, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [array]


def _input(pb, request, name: str) -> np.ndarray:  # noqa: ANN001
    tensor = pb.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"missing input {name}")
    return tensor.as_numpy()


class TritonPythonModel:
    """Concatenate the dynamic batch, run it once, hand each request its rows."""

    def initialize(self, args: Dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        from sightline.steps.telemetry import CameraLabels, StepTelemetry, model_parameters

        self.pb_utils = pb_utils
        params = model_parameters(json.loads(args["model_config"]))
        self.telemetry = StepTelemetry(pb_utils, args["model_name"], args["model_version"], args["model_name"],
                                       CameraLabels())
        self.telemetry.start_background_flush(args.get("model_instance_name", ""))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.runner = OrtRunner(
            version_dir / params.get("onnx_file", "model.onnx"),
            intra_op_threads=int(params.get("intra_op_threads", "1")),
            spinning=params.get("intra_op_spinning", "0") == "1",
        )

    def execute(self, requests):  # noqa: ANN001 - Triton's request objects
        pb = self.pb_utils
        self.telemetry.batch(len(requests))
        feeds: List[Union[Dict[str, np.ndarray], BaseException]] = []
        for request in requests:
            try:
                feeds.append({name: _input(pb, request, name) for name in self.runner.input_names})
            except Exception as exc:  # noqa: BLE001 - a request without its inputs fails alone
                feeds.append(exc)
        results = run_isolated(self.runner.run, feeds)
        self.telemetry.flush()
        responses = []
        for result in results:
            if isinstance(result, BaseException):
                error = pb.TritonError(f"model failed: {result!r}"[:500] + " [reason=internal]")
                responses.append(pb.InferenceResponse(output_tensors=[], error=error))
            else:
                responses.append(pb.InferenceResponse(
                    output_tensors=[pb.Tensor(name, value) for name, value in result.items()]))
        return responses

    def finalize(self) -> None:
        self.telemetry.close()
