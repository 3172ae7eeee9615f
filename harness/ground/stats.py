"""Uncertainty of a dataset mean: the reference study's percentile bootstrap.

The reference computed `scipy.stats.bootstrap((values,), np.mean, n_resamples=9999,
method="percentile", random_state=1)` and reported the bootstrap distribution's mean and
standard deviation with the 95% percentile interval. This module reproduces those numbers
exactly (same random stream: a legacy `RandomState(1)` drawing resample indices row by row), but
draws the resamples in blocks so that 9,999 resamples of a 15,808-abstract test split do not
need a 1.2 GB index matrix at once.

It is the harness's one bootstrap engine: `bootstrap_mean` (one sample) and `bootstrap_gap`
(the difference of the means of two independent samples, e.g. fresh minus standard documents)
both draw their resamples through `_resampled_means`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from harness.ground.errors import FeynTuneError

# The reference study's bootstrap settings, for every interval the harness reports.
N_RESAMPLES = 9999
CONFIDENCE_LEVEL = 0.95
RANDOM_STATE = 1
# ... and as the tables and summaries state them.
SETTINGS_TEXT = f"{N_RESAMPLES:,} resamples, random state {RANDOM_STATE}"

# Elements of one block of resample indices; RandomState's stream does not depend on the block.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class BootstrapResult:
    n: int
    mean: float       # plain arithmetic mean of the values (the figure the study reports)
    boot_mean: float  # mean of the bootstrap distribution of the mean
    boot_std: float   # its standard deviation (ddof=1): the standard error of the mean
    ci_low: float     # percentile interval of the mean
    ci_high: float

    def as_dict(self) -> dict:
        return asdict(self)


def _resampled_means(samples: list[np.ndarray], n_resamples: int,
                     random_state: int) -> list[np.ndarray]:
    """The mean of every bootstrap resample of each sample, drawn as scipy.stats.bootstrap draws
    them: one legacy RandomState, blocks of resamples, and within a block the resample indices of
    each sample in turn. With one sample the stream does not depend on the block size; with
    several it does, so the block is scipy's `batch` (rows of at most 2**22 indices of the
    largest sample) and callers comparing with scipy pass that batch."""
    rng = np.random.RandomState(random_state)
    rows = max(1, _BLOCK_ELEMENTS // max(x.size for x in samples))
    means = [np.empty(n_resamples, dtype=np.float64) for _ in samples]
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        for x, out in zip(samples, means):
            idx = rng.randint(0, x.size, (stop - start, x.size))
            out[start:stop] = x[idx].mean(axis=-1)
    return means


def _percentile_interval(boot: np.ndarray, confidence_level: float) -> tuple[float, float]:
    """The interval of `bootstrap_mean`, as numpy's percentile rounds it (its published
    figures were computed so; the rounding differs from `_quantile_interval` in the last bit)."""
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.percentile(boot, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def _quantile_interval(boot: np.ndarray, confidence_level: float) -> tuple[float, float]:
    """The interval of `bootstrap_gap`: the same linear interpolation (Hyndman and Fan's
    definition 7), rounded as scipy.stats.quantile rounds it, which scipy.stats.bootstrap
    uses since scipy 1.15 and the gap's figures were first computed with."""
    y = np.sort(boot)
    n = y.size
    alpha = (1.0 - confidence_level) / 2.0
    p = np.asarray([alpha, 1.0 - alpha], dtype=np.float64)
    jg = p * n + (1 - p)
    upper = jg // 1
    lower = upper - 1
    g = np.where(lower < 0, 0.0, jg % 1)
    lower = np.clip(lower, 0, n - 1).astype(np.int64)
    upper = np.clip(upper, 0, n - 1).astype(np.int64)
    low, high = (1 - g) * y[lower] + g * y[upper]
    return float(low), float(high)


def _check_settings(name: str, n_resamples: int, confidence_level: float) -> None:
    if n_resamples < 2:
        raise FeynTuneError(f"{name}: n_resamples must be at least 2, got {n_resamples}")
    if not 0.0 < confidence_level < 1.0:
        raise FeynTuneError(f"{name}: confidence_level must be in (0, 1), got {confidence_level}")


def bootstrap_mean(
    values: Iterable[float],
    n_resamples: int = N_RESAMPLES,
    confidence_level: float = CONFIDENCE_LEVEL,
    random_state: int = RANDOM_STATE,
) -> BootstrapResult:
    """Percentile bootstrap of the mean, identical to scipy.stats.bootstrap(method="percentile").

    Raises FeynTuneError for no values or for NaN/inf values (a perplexity of inf means a
    document the model could not score; it has to be reported, not averaged away).
    """
    x = np.asarray(list(values), dtype=np.float64).ravel()
    if x.size == 0:
        raise FeynTuneError("bootstrap_mean: no values to bootstrap")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise FeynTuneError(f"bootstrap_mean: {bad} of {x.size} values are NaN or infinite")
    _check_settings("bootstrap_mean", n_resamples, confidence_level)

    (boot,) = _resampled_means([x], n_resamples, random_state)
    low, high = _percentile_interval(boot, confidence_level)
    return BootstrapResult(
        n=int(x.size),
        mean=float(x.mean()),
        boot_mean=float(boot.mean()),
        boot_std=float(boot.std(ddof=1)),
        ci_low=low,
        ci_high=high,
    )


@dataclass(frozen=True)
class Gap:
    """Fresh minus standard figure of one metric, with a percentile bootstrap interval of the
    difference (two independent samples, each resampled on its own)."""

    n_standard: int
    n_fresh: int
    standard: float   # arithmetic means, as the leaderboard reports them
    fresh: float
    gap: float        # fresh - standard: for perplexity, > 0 means worse on unseen papers
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_gap(standard: Iterable[float], fresh: Iterable[float],
                  n_resamples: int = N_RESAMPLES, confidence_level: float = CONFIDENCE_LEVEL,
                  random_state: int = RANDOM_STATE) -> Gap:
    """mean(fresh) - mean(standard) with its percentile bootstrap interval: the two samples are
    different documents, so nothing pairs them and each is resampled on its own.

    The settings of `bootstrap_mean`; the numbers are those of
    `scipy.stats.bootstrap((fresh, standard), mean(x) - mean(y), paired=False,
    vectorized=True, method="percentile", random_state=1, batch=2**22 // max(sizes))`.
    """
    a = np.asarray(list(fresh), dtype=np.float64).ravel()
    b = np.asarray(list(standard), dtype=np.float64).ravel()
    for name, values in (("fresh", a), ("standard", b)):
        if values.size < 2:
            raise FeynTuneError(f"freshness gap: {values.size} {name} value(s); need at least 2")
        if not np.isfinite(values).all():
            raise FeynTuneError(f"freshness gap: {name} values hold NaN or infinity")
    _check_settings("freshness gap", n_resamples, confidence_level)

    boot_fresh, boot_standard = _resampled_means([a, b], n_resamples, random_state)
    low, high = _quantile_interval(boot_fresh - boot_standard, confidence_level)
    return Gap(n_standard=int(b.size), n_fresh=int(a.size), standard=float(b.mean()),
               fresh=float(a.mean()), gap=float(a.mean() - b.mean()), ci_low=low, ci_high=high)


@dataclass(frozen=True)
class PairedChange:
    n: int               # documents both runs scored
    reference_mean: float
    change: BootstrapResult  # bootstrap of the per-document differences (values - reference)

    @property
    def mean(self) -> float:
        return self.reference_mean + self.change.mean


def paired_change(values: dict, reference: dict) -> PairedChange | None:
    """Change of a per-document figure against a reference run on the same documents.

    Two runs on the same documents are compared pairwise: the bootstrap of the per-document
    differences (keys present in both), not two overlapping intervals. None when fewer than two
    documents are shared.
    """
    shared = sorted(set(values) & set(reference), key=str)
    if len(shared) < 2:
        return None
    change = bootstrap_mean([values[k] - reference[k] for k in shared])
    reference_mean = float(np.mean([reference[k] for k in shared]))
    return PairedChange(len(shared), reference_mean, change)


def interval_alpha(rows) -> float | None:
    """Krippendorff's alpha at the interval level (the maintained `krippendorff` package) of a
    raters x items matrix, NaN for 'not rated'; None when it is undefined (no item rated twice,
    or every value the same)."""
    import math

    import krippendorff

    data = np.asarray(rows, dtype=float)
    pairable = np.sum(~np.isnan(data), axis=0) >= 2
    if pairable.sum() < 1 or np.unique(data[:, pairable][~np.isnan(data[:, pairable])]).size < 2:
        return None
    value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    return value if math.isfinite(value) else None
