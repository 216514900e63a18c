"""Drift on the real model's embeddings against the committed daylight reference."""

from __future__ import annotations

import numpy as np
import pytest

from sightline import modelspec, vision
from sightline.export.scenes import Conditions, generate_scene
from sightline.quality import quality_features
from sightline.runtime import REPO_ROOT
from sightline.sidecars.tap_receiver import build_detector
from sightline.steps.ort_runner import OrtRunner

pytestmark = pytest.mark.slow
WINDOW = 100


@pytest.fixture(scope="module")
def runner() -> OrtRunner:
    return OrtRunner(REPO_ROOT / "model_repository" / modelspec.MODEL_NAME / "1" / "model.onnx", intra_op_threads=2)


@pytest.fixture(scope="module")
def detector():
    return build_detector()


def window(runner: OrtRunner, seed: int, conditions: Conditions) -> tuple[np.ndarray, dict]:
    frames = [generate_scene(seed=seed + i, conditions=conditions).image for i in range(WINDOW)]
    batch = np.stack([vision.letterbox(f, modelspec.INPUT_SIZE)[0] for f in frames]).astype(np.float32)
    embeddings = runner.run({modelspec.ONNX_INPUT: batch})[modelspec.ONNX_EMBEDDING]
    features = [quality_features(f) for f in frames]
    quality = {k: np.array([q[k] for q in features]) for k in ("brightness", "sharpness", "contrast")}
    return embeddings, quality


def test_daylight_windows_from_new_seeds_rarely_drift(runner, detector):
    flagged = []
    for w in range(20):
        embeddings, quality = window(runner, 30_000_000 + w * WINDOW, Conditions())
        decision = detector.predict(embeddings, quality)
        flagged.append(decision.reasons if decision.drift else None)
    false_positives = [r for r in flagged if r]
    assert len(false_positives) <= 2, false_positives  # <= 10 % of 20 windows


@pytest.mark.parametrize(
    "conditions",
    [Conditions(brightness="night"), Conditions(motion_blur=15), Conditions(brightness="dusk", rain=2.0)],
    ids=["night", "motion-blur", "rainy-dusk"],
)
def test_night_blur_and_rain_drift_with_p_below_001(runner, detector, conditions):
    embeddings, quality = window(runner, 31_000_000, conditions)
    decision = detector.predict(embeddings, quality)
    assert decision.score.mmd_p_value < 0.01
    assert decision.drift
