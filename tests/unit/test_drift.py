"""Drift statistics: shifted windows are flagged with a reason, same-distribution ones are not."""

import numpy as np
import pytest

from sightline.sidecars.drift import DriftDetector, mmd_permutation_test, psi


@pytest.fixture(scope="module")
def detector() -> DriftDetector:
    rng = np.random.default_rng(0)
    return DriftDetector(
        rng.normal(size=(1000, 32)),
        quality_reference={"brightness": rng.normal(0.5, 0.05, 1000)},
        class_proportions=[0.5, 0.3, 0.2],
    )


def test_windows_from_the_reference_distribution_rarely_drift(detector):
    rng = np.random.default_rng(1)
    flagged = sum(detector.predict(rng.normal(size=(300, 32))).drift for _ in range(20))
    assert flagged <= 2  # at most 10 % false positives over 20 windows


def test_a_shifted_window_is_flagged_by_mmd_and_mean_distance(detector):
    window = np.random.default_rng(2).normal(size=(300, 32)) + 0.3
    decision = detector.predict(window)
    assert decision.drift
    assert decision.score.mmd_p_value < 0.01
    assert decision.score.distance_ratio > 1.5
    assert any("MMD" in r for r in decision.reasons)


def test_darker_frames_shift_the_brightness_feature(detector):
    rng = np.random.default_rng(3)
    window = rng.normal(size=(200, 32))
    decision = detector.predict(window, quality={"brightness": rng.normal(0.2, 0.05, 200)})
    assert any(r.startswith("brightness shifted") for r in decision.reasons)


def test_a_changed_class_mix_is_flagged(detector):
    window = np.random.default_rng(4).normal(size=(200, 32))
    assert detector.predict(window, class_counts=[20, 30, 150]).score.class_p_value < 0.01
    assert detector.predict(window, class_counts=[100, 60, 40]).score.class_p_value > 0.05


def test_a_small_window_gets_no_verdict(detector):
    decision = detector.predict(np.random.default_rng(5).normal(size=(10, 32)) + 5)
    assert not decision.drift and "no verdict" in decision.reasons[0]


def test_a_window_of_the_wrong_width_is_refused(detector):
    with pytest.raises(ValueError, match=r"window must be \(n, 32\)"):
        detector.score(np.zeros((100, 16)))


def test_mmd_p_value_is_small_only_for_different_samples():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 8))
    assert mmd_permutation_test(x, rng.normal(size=(200, 8)), 100)[1] > 0.05
    assert mmd_permutation_test(x, rng.normal(size=(200, 8)) * 1.5, 100)[1] < 0.02


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=5000)
    assert psi(ref, rng.normal(size=5000)) < 0.02
    assert psi(ref, rng.normal(1.0, 1.0, 5000)) > 0.25
