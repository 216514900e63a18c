"""Drift of live traffic against the committed daylight reference.

``score(window)`` returns raw statistics; ``predict(window)`` applies thresholds and says
whether, and why, the window drifted (the alibi-detect split). Statistics:

* MMD² with an RBF kernel (median-heuristic bandwidth) and a permutation p-value. All
  permutations are one matrix product over a kernel computed once per window, which is
  what makes 500 vs 500 x 128-d with 100 permutations take a fraction of a second;
* per-dimension two-sample KS with a Bonferroni correction;
* distance between the window's mean embedding and the reference mean, as a ratio to the
  distance expected between two same-sized daylight samples (the "1.5x baseline" rule);
* quality features (brightness, sharpness, ...): KS p-value and PSI per feature;
* class distribution of detections: chi-square against the reference proportions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.01  # MMD permutation test and Bonferroni-corrected KS
    distance_ratio: float = 1.5  # mean-embedding distance vs its daylight baseline
    psi: float = 0.25  # population stability index of a quality feature
    class_p_value: float = 0.01
    min_window: int = 50  # below this, no verdict


@dataclass
class DriftScore:
    window_size: int
    mmd2: float
    mmd_p_value: float
    ks_p_value: float  # Bonferroni-corrected minimum over dimensions
    mean_distance: float
    distance_ratio: float
    quality_ks_p: dict[str, float] = field(default_factory=dict)
    quality_psi: dict[str, float] = field(default_factory=dict)
    class_p_value: Optional[float] = None


@dataclass
class DriftDecision:
    drift: bool
    reasons: list[str]
    score: DriftScore


def _sq_distances(z: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", z, z)
    d2 = norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 100,
                         rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Biased MMD² with an RBF kernel and its permutation p-value."""
    rng = rng or np.random.default_rng(0)
    z = np.concatenate([x, y]).astype(np.float64)
    n, total = len(x), len(x) + len(y)
    d2 = _sq_distances(z)
    upper = d2[np.triu_indices(total, k=1)]
    bandwidth = float(np.median(upper)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    # Row 0 is the observed split; each other row a random relabelling. An assignment
    # vector s has +1/n on one side and -1/m on the other: MMD² = sᵀ K s.
    assign = np.empty((permutations + 1, total))
    sides = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    assign[0] = sides
    for row in range(1, permutations + 1):
        assign[row] = sides[rng.permutation(total)]
    values = np.einsum("pi,pi->p", assign @ kernel, assign)
    observed = float(values[0])
    p_value = float((1 + np.sum(values[1:] >= observed)) / (permutations + 1))
    return observed, p_value


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / max(1, len(current))
    expected = np.clip(expected, 1e-4, None)
    actual = np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftDetector:
    """Compare windows of live embeddings (and quality, classes) to a fixed reference.

    >>> ref = np.random.default_rng(0).normal(size=(400, 16))
    >>> detector = DriftDetector(ref, permutations=50)
    >>> detector.predict(np.random.default_rng(1).normal(size=(200, 16))).drift
    False
    """

    def __init__(
        self,
        reference: np.ndarray,
        quality_reference: Optional[Mapping[str, np.ndarray]] = None,
        class_proportions: Optional[Sequence[float]] = None,
        permutations: int = 100,
        max_reference: int = 500,
        thresholds: DriftThresholds = DriftThresholds(),
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or len(reference) < 20:
            raise ValueError(f"the reference must be at least 20 embeddings as a 2-D array, got shape {reference.shape}")
        if len(reference) > max_reference:
            reference = reference[rng.choice(len(reference), max_reference, replace=False)]
        self.reference = reference
        self.reference_mean = reference.mean(axis=0)
        self.quality_reference = {k: np.asarray(v, dtype=np.float64) for k, v in (quality_reference or {}).items()}
        self.class_proportions = None if class_proportions is None else np.asarray(class_proportions, dtype=np.float64)
        self.permutations = permutations
        self.thresholds = thresholds
        self._rng = rng
        self._baseline_cache: dict[int, float] = {}

    def baseline_distance(self, window_size: int) -> float:
        """Expected distance between a same-sized daylight window's mean and the reference mean.

        For independent samples E‖mean_w − mean_r‖² = tr(Σ)(1/m + 1/N), with Σ estimated
        from the reference itself.
        """
        if window_size not in self._baseline_cache:
            trace = float(np.sum(self.reference.var(axis=0, ddof=1)))
            value = np.sqrt(trace * (1.0 / max(1, window_size) + 1.0 / len(self.reference)))
            self._baseline_cache[window_size] = float(value) or 1e-12
        return self._baseline_cache[window_size]

    def score(
        self,
        window: np.ndarray,
        quality: Optional[Mapping[str, np.ndarray]] = None,
        class_counts: Optional[Sequence[int]] = None,
    ) -> DriftScore:
        window = np.asarray(window, dtype=np.float64)
        if window.ndim != 2 or window.shape[1] != self.reference.shape[1]:
            raise ValueError(f"window must be (n, {self.reference.shape[1]}) embeddings, got shape {window.shape}")
        mmd2, mmd_p = mmd_permutation_test(self.reference, window, self.permutations, self._rng)
        ks = stats.ks_2samp(self.reference, window, axis=0)
        ks_p = float(min(1.0, np.min(ks.pvalue) * window.shape[1]))
        distance = float(np.linalg.norm(window.mean(axis=0) - self.reference_mean))
        result = DriftScore(
            window_size=len(window), mmd2=mmd2, mmd_p_value=mmd_p, ks_p_value=ks_p,
            mean_distance=distance, distance_ratio=distance / self.baseline_distance(len(window)),
        )
        for name, values in (quality or {}).items():
            ref = self.quality_reference.get(name)
            if ref is None or len(values) == 0:
                continue
            result.quality_ks_p[name] = float(stats.ks_2samp(ref, np.asarray(values, dtype=np.float64)).pvalue)
            result.quality_psi[name] = psi(ref, np.asarray(values, dtype=np.float64))
        if class_counts is not None and self.class_proportions is not None and sum(class_counts) > 0:
            counts = np.asarray(class_counts, dtype=np.float64)
            expected = self.class_proportions / self.class_proportions.sum() * counts.sum()
            result.class_p_value = float(stats.chisquare(counts, np.clip(expected, 1e-9, None)).pvalue)
        return result

    def predict(
        self,
        window: np.ndarray,
        quality: Optional[Mapping[str, np.ndarray]] = None,
        class_counts: Optional[Sequence[int]] = None,
    ) -> DriftDecision:
        score = self.score(window, quality, class_counts)
        t = self.thresholds
        reasons = []
        if score.window_size < t.min_window:
            return DriftDecision(False, [f"window of {score.window_size} < {t.min_window}: no verdict"], score)
        if score.mmd_p_value < t.p_value:
            reasons.append(f"embedding MMD p={score.mmd_p_value:.3g} < {t.p_value}")
        if score.distance_ratio > t.distance_ratio:
            reasons.append(f"mean embedding distance {score.distance_ratio:.2f}x baseline > {t.distance_ratio}x")
        for name, value in score.quality_psi.items():
            if value > t.psi and score.quality_ks_p.get(name, 1.0) < t.p_value:
                reasons.append(f"{name} shifted (PSI {value:.2f}, KS p={score.quality_ks_p[name]:.3g})")
        if score.class_p_value is not None and score.class_p_value < t.class_p_value:
            reasons.append(f"class mix shifted (chi-square p={score.class_p_value:.3g})")
        return DriftDecision(bool(reasons), reasons, score)
