"""The committed demo detector: the file Triton serves, its gate and its references."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.export.demo import GENERATED, MAP_GATE, MODEL_PATH, REFERENCE_DIR
from sightline.export.detector import Detector
from sightline.export.evaluate import EVAL_SEED_START, evaluate_map, onnx_predictor
from sightline.export.onnx_export import check_onnx, parity, real_batch
from sightline.export.scenes import Conditions
from sightline.modelspec import CLASS_NAMES, EMBEDDING_DIM, ONNX_EMBEDDING, ONNX_INPUT, ONNX_PREDICTIONS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / MODEL_PATH
REFERENCE = ROOT / REFERENCE_DIR


@pytest.fixture(scope="module")
def session():
    import onnxruntime as ort

    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


def test_the_committed_model_keeps_the_contract_and_a_dynamic_batch():
    info = check_onnx(MODEL)
    assert info["batch_dim"] == "batch" and info["opset"] >= 17
    assert info["bytes"] < 5_000_000


def test_a_frame_gets_the_same_answer_alone_or_inside_a_batch(session):
    frames = real_batch(7)
    batch_pred, batch_emb = session.run([ONNX_PREDICTIONS, ONNX_EMBEDDING], {ONNX_INPUT: frames})
    one_pred, one_emb = session.run([ONNX_PREDICTIONS, ONNX_EMBEDDING], {ONNX_INPUT: frames[3:4]})
    assert batch_pred.shape[0] == 7 and one_pred.shape[0] == 1
    np.testing.assert_allclose(one_pred[0], batch_pred[3], atol=1e-3)
    np.testing.assert_allclose(one_emb[0], batch_emb[3], atol=1e-5)


def test_the_committed_model_matches_its_torch_weights():
    model = Detector()
    model.load_state_dict(torch.load(REFERENCE / "detector.pt"))
    checked = parity(model.eval(), MODEL)
    assert checked["predictions_max_abs_diff"] < 1e-2  # box corners in pixels, scores in 0..1
    assert checked["embedding_max_abs_diff"] < 1e-4


def test_the_committed_model_reaches_the_map_gate_on_500_fresh_daylight_frames():
    result = evaluate_map(onnx_predictor(str(MODEL)), range(EVAL_SEED_START, EVAL_SEED_START + 500))
    assert result.frames == 500 and result.objects > 1000
    assert result.map50 >= MAP_GATE, result
    assert all(result.ap_per_class[name] >= 0.5 for name in CLASS_NAMES), result


def test_the_committed_model_loses_most_of_its_accuracy_at_night():
    """The drift demo relies on this: the model never saw night frames."""
    predict = onnx_predictor(str(MODEL))
    seeds = range(EVAL_SEED_START, EVAL_SEED_START + 100)
    day = evaluate_map(predict, seeds).map50
    night = evaluate_map(predict, seeds, Conditions(brightness="night")).map50
    assert night < 0.5 * day


def test_the_daylight_reference_describes_the_committed_model():
    summary = json.loads((REFERENCE / "daylight_reference.json").read_text())
    assert next(iter(summary)) == "_generated" and summary["_generated"] == GENERATED
    assert summary["model_sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    npz_path = REFERENCE / "daylight_reference.npz"
    assert npz_path.stat().st_size < 2_000_000
    with np.load(npz_path) as ref:
        embeddings = ref["embeddings"]
        assert embeddings.shape == (summary["frames"], EMBEDDING_DIM)
        np.testing.assert_allclose(np.linalg.norm(embeddings.astype(np.float32), axis=1), 1.0, atol=1e-2)
        assert ref["quality_brightness"].shape == (summary["frames"],)
        assert ref["quality_brightness"].mean() == pytest.approx(summary["quality"]["brightness"]["mean"], rel=1e-5)


def test_the_report_records_the_gate_parity_and_training_time():
    report = json.loads((REFERENCE / "report.json").read_text())
    assert next(iter(report)) == "_generated"
    assert report["gate_passed"] and report["map50_daylight"] >= MAP_GATE
    assert report["training"]["schedule"] == "full" and report["training"]["wall_seconds"] <= 600
    assert report["parity"]["predictions_max_abs_diff"] < 1e-2
