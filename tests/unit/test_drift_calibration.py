"""The distance-ratio verdict has a known false-alarm rate: a calibrated limit, not a fixed 1.5x."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sightline.sidecars.drift import (
    DistanceCalibration,
    DriftDetector,
    DriftThresholds,
    calibrate_distance,
    permutation_ratios,
)
from sightline.sidecars.reference import (
    CALIBRATION_GENERATED,
    calibration_path,
    calibration_payload,
    main,
    stored_calibration,
)
from sightline.sidecars.tap_receiver import DEFAULT_REFERENCE, build_detector, load_reference

SIZES = (50, 100, 250, 500)  # the sidecar's windows grow from min_window (50) to drift_window (500)


@pytest.fixture(scope="module")
def committed() -> np.ndarray:
    return load_reference()[0]


@pytest.fixture(scope="module")
def healthy_ratios(committed) -> dict:
    """3000 permutation draws: disjoint healthy samples of the committed reference, per window size."""
    return permutation_ratios(committed, SIZES, draws=3000, seed=11)


def test_the_fixed_1_5x_rule_breaches_on_healthy_windows_far_too_often(healthy_ratios):
    """The finding: 6-8 % of healthy windows of the committed reference exceed 1.5x."""
    for size, ratios in healthy_ratios.items():
        assert np.mean(ratios > 1.5) > 0.05, size


def test_the_calibrated_limit_is_breached_by_at_most_1_percent_of_healthy_windows(healthy_ratios):
    limit = build_detector().distance_limit
    for size, ratios in healthy_ratios.items():
        share = np.mean(ratios > limit(size))
        assert share <= 0.01, f"{share:.2%} of healthy windows of {size} breach {limit(size):.2f}"
    overall = np.mean(np.concatenate([r > limit(s) for s, r in healthy_ratios.items()]))
    assert overall <= 0.006  # calibrated for 0.25 %; 12 000 draws put 1 % far out of reach


def test_the_committed_detector_uses_the_stored_calibration():
    detector = build_detector()
    stored = stored_calibration(DEFAULT_REFERENCE)
    assert stored is not None and detector.calibration == stored
    assert stored.false_alarm == DriftThresholds().distance_false_alarm
    assert 2.0 < detector.distance_limit(50) == detector.distance_limit(500) < 3.0


def test_the_committed_calibration_file_is_generated_and_current():
    path = calibration_path(DEFAULT_REFERENCE)
    payload = json.loads(path.read_text())
    assert next(iter(payload)) == "_generated" and payload["_generated"] == CALIBRATION_GENERATED
    assert payload == calibration_payload(DEFAULT_REFERENCE)
    assert main(["calibrate", "--check"]) == 0


def test_a_calibration_file_for_another_reference_is_ignored(tmp_path):
    reference = tmp_path / "daylight_reference.npz"
    shutil.copy(DEFAULT_REFERENCE, reference)
    shutil.copy(calibration_path(DEFAULT_REFERENCE), calibration_path(reference))
    assert stored_calibration(reference) is not None
    with np.load(reference) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"] = arrays["embeddings"][:900]  # re-exported: the stored limit is stale
    np.savez(reference, **arrays)
    assert stored_calibration(reference) is None
    assert main(["calibrate", "--check", str(reference)]) == 1
    main(["calibrate", str(reference)])
    assert stored_calibration(reference) is not None


def test_a_limit_stored_in_the_reference_wins_and_a_different_false_alarm_recalibrates(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(300, 16))
    path = tmp_path / "ref.npz"
    np.savez(path, embeddings=embeddings, **DistanceCalibration(0.0025, 9.0, 16.0).arrays())
    assert build_detector(path).distance_limit(100) == 9.0
    other = build_detector(path, thresholds=DriftThresholds(distance_false_alarm=0.01))
    assert other.calibration.false_alarm == 0.01 and other.distance_limit(100) < 2


def test_the_limit_follows_the_spectrum_not_a_constant():
    rng = np.random.default_rng(1)
    isotropic = calibrate_distance(rng.normal(size=(2000, 64)), 0.0025)
    one_direction = calibrate_distance(rng.normal(size=(2000, 64)) * np.r_[10.0, np.ones(63)], 0.0025)
    assert isotropic.limit < 1.3 and round(isotropic.effective_dim) > 55
    assert one_direction.limit > 2.3 and one_direction.effective_dim < 3
    assert calibrate_distance(rng.normal(size=(2000, 64)), 0.01).limit < isotropic.limit


def test_the_detector_ratio_is_the_mean_distance_over_the_full_reference_baseline(committed):
    detector = DriftDetector(committed, permutations=10)
    window = committed[:100].astype(np.float64) + 0.01
    reference = committed.astype(np.float64)
    trace = reference.var(axis=0, ddof=1).sum()
    expected = np.linalg.norm(window.mean(axis=0) - reference.mean(axis=0)) / np.sqrt(trace * (1 / 100 + 1 / 1000))
    assert detector.score(window).distance_ratio == pytest.approx(expected)
    assert len(detector.reference) == 500  # MMD and KS still run on a subsample


def test_a_ratio_between_1_5_and_the_limit_is_no_longer_a_verdict():
    rng = np.random.default_rng(2)
    scale = np.r_[10.0, np.ones(31)]  # most variance in one direction, like the real embeddings
    detector = DriftDetector(rng.normal(size=(2000, 32)) * scale, permutations=20)
    window = rng.normal(size=(200, 32)) * scale
    baseline = detector.baseline_distance(200)
    for ratio, flagged in ((1.9, False), (detector.distance_limit(200) * 1.2, True)):
        shifted = window - window.mean(axis=0) + detector.reference_mean
        shifted[:, 0] += ratio * baseline
        decision = detector.predict(shifted)
        assert decision.score.distance_ratio == pytest.approx(ratio, rel=1e-6)
        assert any(r.startswith("mean embedding distance") for r in decision.reasons) is flagged


def test_the_quality_verdict_keeps_its_level_over_three_features():
    """Each feature at KS p < 0.01 made three chances: 3.7 % of healthy windows of 50 were 'shifted'."""
    rng = np.random.default_rng(3)
    features = ("brightness", "sharpness", "contrast")
    detector = DriftDetector(rng.normal(size=(200, 4)), {f: rng.normal(0.5, 0.05, 1000) for f in features},
                             permutations=10)
    windows = 600
    flagged = 0
    for _ in range(windows):
        decision = detector.predict(rng.normal(size=(50, 4)), {f: rng.normal(0.5, 0.05, 50) for f in features})
        flagged += any(" shifted " in r for r in decision.reasons)
    assert flagged <= 0.02 * windows


def test_the_bench_table_is_rendered_from_the_committed_results(monkeypatch):
    """bench/README.md's drift-calibration table is what bench/drift_calibration.py renders from its JSON."""
    from sightline.runtime import REPO_ROOT

    bench = REPO_ROOT / "bench"
    monkeypatch.syspath_prepend(str(bench))
    import drift_calibration

    report = json.loads((bench / "results" / "drift-calibration.json").read_text())
    assert next(iter(report)) == "_generated"
    assert drift_calibration.render(report) in (bench / "README.md").read_text()
    for size, row in report["healthy_windows"].items():
        assert row["windows"] >= 200 and row["ratio_over_limit"] <= 0.01, size
    assert report["timeline"]["overall"]["ratio_over_limit"] <= 0.01
    for condition, scopes in report["detection"].items():
        for scope, row in scopes.items():
            assert row["camera_ratio"]["detected"] == 1.0 and row["camera_ratio"]["max_s"] <= 600, (condition, scope)
