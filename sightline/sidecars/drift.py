"""Drift of live traffic against the committed daylight reference.

``score(window)`` returns raw statistics; ``predict(window)`` applies thresholds and says
whether, and why, the window drifted (the alibi-detect split). Statistics:

* MMD² with an RBF kernel (median-heuristic bandwidth) and a permutation p-value. All
  permutations are one matrix product over a kernel computed once per window, which is
  what makes 500 vs 500 x 128-d with 100 permutations take a fraction of a second;
* per-dimension two-sample KS with a Bonferroni correction;
* distance between the window's mean embedding and the reference mean, as a ratio to the
  distance expected between two same-sized daylight samples. The ratio's limit is
  calibrated (``DistanceCalibration``) so that a healthy window exceeds it with a known
  probability, ``DriftThresholds.distance_false_alarm``: the original fixed "1.5x baseline"
  was exceeded by 6-8 % of healthy windows, because most of the embedding's variance lies
  in a few directions;
* quality features (brightness, sharpness, ...): KS p-value and PSI per feature (a feature
  shifted when its PSI is over ``psi`` and its KS p-value under ``p_value`` over the number
  of features);
* class distribution of detections: chi-square against the reference proportions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.01  # MMD permutation test and Bonferroni-corrected KS
    # The share of healthy windows whose distance ratio exceeds its calibrated limit. Below
    # 1 %: the drift SLO's slowest ticket fires at a 1.17 % breach share, and windows
    # evaluated every 10 s overlap, so one unlucky window is counted many times.
    distance_false_alarm: float = 0.0025
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
    distance_limit: float  # the calibrated limit of distance_ratio at this window size
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

CALIBRATION_DRAWS = 200_000
CALIBRATION_METHOD = "gaussian-spectrum"


@dataclass(frozen=True)
class DistanceCalibration:
    """The distance ratio a healthy window exceeds with probability ``false_alarm``.

    For a healthy window of m records against a reference of N, the difference of the two
    means is close to normal with covariance Σ(1/m + 1/N) (central limit theorem; the
    embeddings are bounded, L2-normalised vectors), so the squared ratio is distributed as
    Σ λᵢ zᵢ² / Σ λᵢ, with λ the eigenvalues of Σ and zᵢ independent standard normals,
    whatever m and N. With most of the variance in a few directions (the committed
    reference's effective dimension, (Σλ)²/Σλ², is about 3) that tail is long: the
    99.75th percentile is about 2.3, not 1.5. The limit is that percentile, drawn by Monte
    Carlo from the reference's own spectrum; ``bench/drift_calibration.py`` checks it on
    fresh frames and on a permutation bootstrap of the reference, per window size.
    """

    false_alarm: float
    limit: float
    effective_dim: float
    draws: int = CALIBRATION_DRAWS
    method: str = CALIBRATION_METHOD

    def limit_for(self, window_size: int) -> float:
        """The limit at a window size (the same at every size; see the class docstring)."""
        return self.limit

    def arrays(self) -> Dict[str, np.ndarray]:
        """The calibration as 0-d arrays, stored in a reference's ``.npz``."""
        return {"distance_false_alarm": np.array(self.false_alarm), "distance_limit": np.array(self.limit),
                "distance_effective_dim": np.array(self.effective_dim), "distance_draws": np.array(self.draws),
                "distance_method": np.array(self.method)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Optional["DistanceCalibration"]:
        """The calibration stored in a reference's arrays, or None when it has none."""
        if "distance_limit" not in arrays or "distance_false_alarm" not in arrays:
            return None
        return cls(false_alarm=float(arrays["distance_false_alarm"]), limit=float(arrays["distance_limit"]),
                   effective_dim=float(arrays.get("distance_effective_dim", np.nan)),
                   draws=int(arrays.get("distance_draws", 0)), method=str(arrays.get("distance_method", "")))


def calibrate_distance(reference: np.ndarray, false_alarm: float = DriftThresholds.distance_false_alarm,
                       draws: int = CALIBRATION_DRAWS, seed: int = 0) -> DistanceCalibration:
    """Calibrate the distance-ratio limit from a reference's embeddings (about 0.2 s).

    >>> rng = np.random.default_rng(0)
    >>> isotropic = calibrate_distance(rng.normal(size=(2000, 64)), 0.01)
    >>> round(isotropic.limit, 2), round(isotropic.effective_dim)  # sqrt(chi2(64).ppf(0.99) / 64)
    (1.21, 62)
    >>> skewed = calibrate_distance(rng.normal(size=(2000, 64)) * np.r_[10.0, np.ones(63)], 0.01)
    >>> skewed.limit > 2
    True
    """
    if not 0 < false_alarm < 1:
        raise ValueError(f"false_alarm must be a probability, got {false_alarm}")
    reference = np.asarray(reference, dtype=np.float64)
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(reference, rowvar=False)), 0.0, None)
    eigenvalues = eigenvalues[eigenvalues > eigenvalues.max() * 1e-9] if eigenvalues.max() > 0 else np.ones(1)
    weights = eigenvalues / eigenvalues.sum()
    rng = np.random.default_rng(seed)
    ratios_sq = np.empty(draws)
    chunk = max(1, 2_000_000 // len(weights))
    for start in range(0, draws, chunk):
        z = rng.standard_normal((min(chunk, draws - start), len(weights)))
        ratios_sq[start:start + len(z)] = np.square(z) @ weights
    limit = float(np.sqrt(np.quantile(ratios_sq, 1.0 - false_alarm)))
    return DistanceCalibration(false_alarm=float(false_alarm), limit=limit,
                               effective_dim=float(1.0 / np.sum(weights ** 2)), draws=draws)

def permutation_ratios(embeddings: np.ndarray, sizes: Sequence[int], draws: int = 2000,
                       seed: int = 0) -> Dict[int, np.ndarray]:
    """A permutation bootstrap of healthy distance ratios, to check a calibration against.

    Each draw splits the embeddings at random into a reference half and the rest, takes
    the first m of the rest as a window for every m in ``sizes`` (at most the rest's size),
    and computes the ratio exactly as the detector does: distance between the means over
    sqrt(tr Σ_ref (1/m + 1/n)). Disjoint samples of one set are what healthy traffic is to
    its reference, and no normal approximation is involved. One matrix product per size.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    e = e - e.mean(axis=0)
    total, n = len(e), len(e) // 2
    sizes = [m for m in sizes if 0 < m <= total - n]
    squares = np.einsum("ij,ij->i", e, e)
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((draws, total)), axis=1)
    rows = np.arange(draws)[:, None]
    ref_weights = np.zeros((draws, total))
    ref_weights[rows, order[:, :n]] = 1.0 / n
    ref_mean = ref_weights @ e
    # tr Σ_ref = (Σ‖e‖² − n‖mean‖²) / (n − 1) over the reference half of each draw.
    trace = (ref_weights @ squares * n - n * np.einsum("ij,ij->i", ref_mean, ref_mean)) / (n - 1)
    out = {}
    for m in sizes:
        weights = np.zeros((draws, total))
        weights[rows, order[:, n:n + m]] = 1.0 / m
        distance = np.linalg.norm(weights @ e - ref_mean, axis=1)
        out[m] = distance / np.sqrt(trace * (1.0 / m + 1.0 / n))
    return out


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
        calibration: Optional[DistanceCalibration] = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or len(reference) < 20:
            raise ValueError(f"the reference must be at least 20 embeddings as a 2-D array, got shape {reference.shape}")
        # The mean, its spread and the distance calibration use every reference embedding;
        # MMD and KS (quadratic in the sample) a subsample of at most max_reference.
        self.reference_mean = reference.mean(axis=0)
        self.reference_trace = float(np.sum(reference.var(axis=0, ddof=1)))
        self.reference_count = len(reference)
        if calibration is None or calibration.false_alarm != thresholds.distance_false_alarm:
            calibration = calibrate_distance(reference, thresholds.distance_false_alarm, seed=seed)
        self.calibration = calibration
        if len(reference) > max_reference:
            reference = reference[rng.choice(len(reference), max_reference, replace=False)]
        self.reference = reference
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
            value = np.sqrt(self.reference_trace * (1.0 / max(1, window_size) + 1.0 / self.reference_count))
            self._baseline_cache[window_size] = float(value) or 1e-12
        return self._baseline_cache[window_size]

    def distance_ratio(self, window: np.ndarray) -> float:
        """Distance of the window's mean embedding to the reference mean, over its healthy baseline."""
        window = np.asarray(window, dtype=np.float64)
        return float(np.linalg.norm(window.mean(axis=0) - self.reference_mean)) / self.baseline_distance(len(window))

    def distance_limit(self, window_size: int) -> float:
        """The distance ratio a healthy window of this size exceeds with the calibrated probability."""
        return self.calibration.limit_for(window_size)

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
            mean_distance=distance, distance_ratio=self.distance_ratio(window),
            distance_limit=self.distance_limit(len(window)),
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
        if score.distance_ratio > score.distance_limit:
            reasons.append(f"mean embedding distance {score.distance_ratio:.2f}x baseline > {score.distance_limit:.2f}x "
                           f"(exceeded by {t.distance_false_alarm:.2%} of healthy windows)")
        # Bonferroni over the features: the quality verdict as a whole keeps the p_value level.
        quality_p = t.p_value / max(1, len(score.quality_psi))
        for name, value in score.quality_psi.items():
            if value > t.psi and score.quality_ks_p.get(name, 1.0) < quality_p:
                reasons.append(f"{name} shifted (PSI {value:.2f}, KS p={score.quality_ks_p[name]:.3g} < {quality_p:.3g})")
        if score.class_p_value is not None and score.class_p_value < t.class_p_value:
            reasons.append(f"class mix shifted (chi-square p={score.class_p_value:.3g})")
        return DriftDecision(bool(reasons), reasons, score)
