"""The demo detector's training pipeline, end to end on the short schedule."""

import json

import pytest
import torch

from sightline.export.demo import MODEL_PATH, REFERENCE_DIR, build_demo
from sightline.export.detector import Detector
from sightline.export.evaluate import EVAL_SEED_START, evaluate_map, torch_predictor

FRAMES = 100


@pytest.mark.slow
def test_the_short_schedule_learns_to_detect_and_writes_every_artefact(tmp_path):
    report = build_demo(out_dir=tmp_path, schedule="short", progress=False,
                        eval_frames=FRAMES, night_frames=20, reference_frames=64)

    training = report["training"]
    assert training["epoch_losses"][-1] < training["first_steps_loss"] / 4

    torch.manual_seed(0)
    untrained = evaluate_map(torch_predictor(Detector().eval()), range(EVAL_SEED_START, EVAL_SEED_START + FRAMES))
    assert report["map50_daylight"] > untrained.map50 + 0.3

    assert (tmp_path / MODEL_PATH).is_file()
    for name in ("detector.pt", "daylight_reference.npz", "daylight_reference.json", "report.json"):
        assert (tmp_path / REFERENCE_DIR / name).is_file()
    written = json.loads((tmp_path / REFERENCE_DIR / "report.json").read_text())
    assert written["map50_daylight"] == report["map50_daylight"]
