"""`sightline export onnx`: a user's own model becomes a servable Triton model directory."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from sightline.cli import main
from sightline.export import triton_config as tc


def test_a_factory_model_is_exported_with_a_dynamic_batch_and_all_profiles(tmp_path, capsys):
    out = tmp_path / "mymodel"
    code = main(["export", "onnx", "--factory", "tiny_models:build", "--out", str(out), "--name", "mymodel"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "max |diff|" in printed and "trtexec --onnx=model.onnx" in printed
    session = ort.InferenceSession(str(out / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        # the served copy takes the steps' uint8 frames and scales them to the model's 0..1 itself
        frames = np.random.default_rng(batch).integers(0, 256, (batch, 3, 256, 256), dtype=np.uint8)
        predictions, embedding = session.run(None, {"images": frames})
        assert predictions.shape == (batch, 1024, 7) and embedding.shape == (batch, 64)
    config = tc.parse((out / "config.pbtxt").read_text())
    assert config.name == "mymodel" and [list(o.dims) for o in config.output] == [[1024, 7], [64]]
    assert [tc.mc.DataType.Name(i.data_type) for i in config.input] == ["TYPE_UINT8"]
    assert (out / "configs" / "local.pbtxt").exists() and (out / "configs" / "tensorrt_plan.pbtxt").exists()


def test_a_factory_whose_model_returns_one_tensor_is_refused(tmp_path, capsys):
    code = main(["export", "onnx", "--factory", "tiny_models:build_single_output", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "must return (predictions, embedding)" in capsys.readouterr().err


def test_an_unknown_factory_is_named_in_the_error(tmp_path, capsys):
    code = main(["export", "onnx", "--factory", "tiny_models:nope", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "has no callable 'nope'" in capsys.readouterr().err


def test_an_onnx_file_exported_elsewhere_is_wrapped(tmp_path, capsys):
    assert main(["export", "onnx", "--factory", "tiny_models:build", "--out", str(tmp_path / "a")]) == 0
    code = main(["export", "onnx", "--onnx", str(tmp_path / "a" / "1" / "model.onnx"), "--out", str(tmp_path / "b"),
                 "--max-batch-size", "8", "--preferred-batch-sizes", "4", "8"])
    assert code == 0, capsys.readouterr().err
    config = tc.parse((tmp_path / "b" / "config.pbtxt").read_text())
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert (tmp_path / "b" / "1" / "model.onnx").read_bytes() == (tmp_path / "a" / "1" / "model.onnx").read_bytes()
