"""Uncertainty of a dataset mean: the reference study's percentile bootstrap.

The reference computed `scipy.stats.bootstrap((values,), np.mean, n_resamples=9999,
method="percentile", random_state=1)` and reported the bootstrap distribution's mean and
standard deviation with the 95% percentile interval. This module reproduces those numbers
exactly (same random stream: a legacy `RandomState(1)` drawing resample indices row by row), but
draws the resamples in blocks so that 9,999 resamples of a 15,808-abstract test split do not
need a 1.2 GB index matrix at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from harness.errors import FeynTuneError

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


def bootstrap_mean(
    values: Iterable[float],
    n_resamples: int = 9999,
    confidence_level: float = 0.95,
    random_state: int = 1,
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
    if n_resamples < 2:
        raise FeynTuneError(f"bootstrap_mean: n_resamples must be at least 2, got {n_resamples}")
    if not 0.0 < confidence_level < 1.0:
        raise FeynTuneError(f"bootstrap_mean: confidence_level must be in (0, 1), got {confidence_level}")

    n = x.size
    rng = np.random.RandomState(random_state)
    rows = max(1, _BLOCK_ELEMENTS // n)
    boot = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        idx = rng.randint(0, n, (stop - start, n))
        boot[start:stop] = x[idx].mean(axis=-1)

    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.percentile(boot, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return BootstrapResult(
        n=int(n),
        mean=float(x.mean()),
        boot_mean=float(boot.mean()),
        boot_std=float(boot.std(ddof=1)),
        ci_low=float(low),
        ci_high=float(high),
    )


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
