"""The committed model repository: generated configs are reproducible and consistent."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess

import pytest

from sightline import modelspec
from sightline.export import triton_config as tc
from sightline.runtime import REPO_ROOT

REPOSITORY = REPO_ROOT / "model_repository"
MODEL_DIR = REPOSITORY / modelspec.MODEL_NAME
ONNX = MODEL_DIR / "1" / "model.onnx"


def test_committed_model_configs_are_reproduced_by_the_writer(tmp_path):
    written = tc.write_model_dir(tmp_path / "model", ONNX, modelspec.MODEL_NAME)
    for key in (*tc.PROFILES, "model.py"):
        committed = MODEL_DIR / written[key].relative_to(tmp_path / "model")
        assert committed.read_text() == written[key].read_text(), f"{committed} is stale: run `sightline export demo`"


def test_local_and_cluster_profiles_agree_on_inputs_outputs_and_batching():
    configs = {p: tc.parse((MODEL_DIR / tc.PROFILE_FILES[p]).read_text()) for p in tc.PROFILES}
    for profile, config in configs.items():
        local = configs["local"]
        assert list(config.input) == list(local.input), profile
        assert list(config.output) == list(local.output), profile
        assert config.max_batch_size == local.max_batch_size, profile
        assert config.dynamic_batching == local.dynamic_batching, profile
    assert configs["onnxruntime"].platform == "onnxruntime_onnx"
    assert configs["local"].backend == "python"


def test_the_ensemble_matches_the_graph_it_wires_together():
    graph = tc.signature_from_onnx(ONNX)
    outputs = {spec.name: spec for spec in graph.outputs}
    ensemble = tc.parse((REPOSITORY / "detector" / "config.pbtxt").read_text())
    post = tc.parse((REPOSITORY / "postprocess" / "config.pbtxt").read_text())
    pre = tc.parse((REPOSITORY / "preprocess" / "config.pbtxt").read_text())
    embedding = next(o for o in ensemble.output if o.name == modelspec.ENSEMBLE_EMBEDDING)
    assert tuple(embedding.dims) == outputs[modelspec.ONNX_EMBEDDING].dims
    assert outputs[modelspec.ONNX_EMBEDDING].dims[0] >= 64
    predictions = next(i for i in post.input if i.name == modelspec.ONNX_PREDICTIONS)
    graph_dims = outputs[modelspec.ONNX_PREDICTIONS].dims
    assert len(predictions.dims) == len(graph_dims)
    assert all(a in (-1, b) for a, b in zip(predictions.dims, graph_dims))
    images = next(o for o in pre.output if o.name == modelspec.ONNX_INPUT)
    assert tuple(images.dims) == graph.inputs[0].dims == (3, modelspec.INPUT_SIZE, modelspec.INPUT_SIZE)
    # preprocess hands over uint8 (a quarter of float32's bytes) and the served graph takes it
    assert tc.mc.DataType.Name(images.data_type) == graph.inputs[0].data_type == "TYPE_UINT8"
    for config in (pre, post):
        assert config.max_batch_size == ensemble.max_batch_size


STEP_CODE = [
    *sorted((REPO_ROOT / "sightline" / "steps").glob("*.py")),
    REPO_ROOT / "sightline" / "vision.py",
    REPO_ROOT / "sightline" / "quality.py",
    REPO_ROOT / "sightline" / "modelspec.py",
    *sorted(REPOSITORY.glob("*/1/model.py")),
]


@pytest.mark.parametrize("path", STEP_CODE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_code_that_runs_inside_triton_is_python_310_syntax(path):
    ast.parse(path.read_text(), feature_version=(3, 10))


def python310() -> list[str] | None:
    """A working Python 3.10 interpreter command, pyenv's included, or None."""
    if shutil.which("python3.10") is None:
        return None
    env = {**os.environ, "PYENV_VERSION": os.environ.get("PYENV_VERSION", "3.10")}
    probe = subprocess.run(["python3.10", "--version"], capture_output=True, text=True, env=env)
    return ["python3.10"] if probe.returncode == 0 else None


def test_code_that_runs_inside_triton_compiles_under_python_310():
    command = python310()
    if command is None:
        pytest.skip("no working python3.10 on this machine; the ast check above still runs")
    env = {**os.environ, "PYENV_VERSION": os.environ.get("PYENV_VERSION", "3.10")}
    result = subprocess.run([*command, "-m", "py_compile", *map(str, STEP_CODE)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
