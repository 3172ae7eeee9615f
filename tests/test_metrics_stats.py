"""harness.stats.bootstrap_mean against scipy.stats.bootstrap (the reference's call)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from harness.errors import FeynTuneError
from harness.stats import BootstrapResult, bootstrap_mean


def _scipy(values, n_resamples=9999, confidence_level=0.95, random_state=1):
    res = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=n_resamples,
                          confidence_level=confidence_level, method="percentile",
                          random_state=random_state)
    dist = res.bootstrap_distribution
    return dist, res.confidence_interval, res.standard_error


@pytest.mark.parametrize("n", [2, 7, 100, 1000])
def test_matches_scipy_percentile_bootstrap(n):
    # perplexity-like values: positive, right-skewed
    values = np.random.default_rng(n).lognormal(mean=2.4, sigma=0.4, size=n)
    ours = bootstrap_mean(values)
    dist, ci, se = _scipy(values)
    assert ours.n == n
    assert ours.mean == pytest.approx(float(np.mean(values)), rel=1e-15)
    assert ours.boot_mean == pytest.approx(float(dist.mean()), rel=1e-12)
    assert ours.boot_std == pytest.approx(float(se), rel=1e-9, abs=1e-15)
    assert ours.boot_std == pytest.approx(float(dist.std(ddof=1)), rel=1e-9, abs=1e-15)
    assert ours.ci_low == pytest.approx(float(ci.low), rel=1e-12)
    assert ours.ci_high == pytest.approx(float(ci.high), rel=1e-12)


def test_blocks_do_not_change_the_stream(monkeypatch):
    """Drawing the resamples in blocks gives exactly scipy's one-shot draw."""
    import harness.stats as hs

    values = np.random.default_rng(3).normal(10, 2, size=50)
    monkeypatch.setattr(hs, "_BLOCK_ELEMENTS", 50 * 7)  # 7 rows a block, last one partial
    ours = hs.bootstrap_mean(values, n_resamples=999)
    dist, ci, _ = _scipy(values, n_resamples=999)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-13)
    assert ours.boot_mean == pytest.approx(float(dist.mean()), rel=1e-13)


def test_other_level_seed_and_resamples():
    values = np.arange(1.0, 31.0) ** 1.5
    ours = bootstrap_mean(values, n_resamples=500, confidence_level=0.9, random_state=7)
    _, ci, se = _scipy(values, n_resamples=500, confidence_level=0.9, random_state=7)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert ours.boot_std == pytest.approx(float(se), rel=1e-9)


def test_result_is_frozen_and_serialisable():
    res = bootstrap_mean([10.0, 12.0, 11.0, 30.0])
    assert isinstance(res, BootstrapResult)
    d = res.as_dict()
    assert set(d) == {"n", "mean", "boot_mean", "boot_std", "ci_low", "ci_high"}
    assert d["mean"] == 15.75 and d["n"] == 4
    assert d["ci_low"] <= d["boot_mean"] <= d["ci_high"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.mean = 1.0  # type: ignore[misc]


def test_one_value_is_defined():
    # scipy refuses one observation; a one-document run still gets a (zero-width) figure
    res = bootstrap_mean([12.5])
    assert (res.n, res.mean, res.boot_std, res.ci_low, res.ci_high) == (1, 12.5, 0.0, 12.5, 12.5)


def test_constant_values_give_a_zero_width_interval():
    res = bootstrap_mean([5.0] * 20)
    assert (res.mean, res.boot_mean, res.boot_std, res.ci_low, res.ci_high) == (5.0, 5.0, 0.0, 5.0, 5.0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")]])
def test_bad_values_are_a_clear_error(bad):
    with pytest.raises(FeynTuneError, match="bootstrap_mean"):
        bootstrap_mean(bad)
