"""harness.ground.stats.bootstrap_mean against scipy.stats.bootstrap (the reference's call)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from harness.ground.errors import FeynTuneError
from harness.ground.stats import BootstrapResult, bootstrap_gap, bootstrap_mean


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
    import harness.ground.stats as hs

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


def _scipy_gap(standard, fresh, n_resamples=9999, confidence_level=0.95, random_state=1):
    """The gap as the leaderboard computed it before the harness had one bootstrap engine."""
    a, b = np.asarray(fresh, dtype=float), np.asarray(standard, dtype=float)

    def difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    res = stats.bootstrap((a, b), difference, paired=False, vectorized=True,
                          n_resamples=n_resamples, confidence_level=confidence_level,
                          method="percentile", random_state=random_state,
                          batch=max(1, (1 << 22) // max(a.size, b.size)))
    return res.confidence_interval


def test_gap_matches_scipy_on_real_abstracts(sample_path):
    """Fresh minus standard, on a real quantity: the words of the sample's abstracts first
    versioned after 2024-12-31 against the others (several resample blocks: 9,999 x 1,000+)."""
    import json

    from harness.ground.freshness import first_version, parse_cut

    cut = parse_cut("2024-12-31")
    fresh, standard = [], []
    with open(sample_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            first = first_version(record)
            words = float(len(record["abstract"].split()))
            (fresh if first.date is not None and first.date > cut else standard).append(words)
    assert len(fresh) >= 2 and len(standard) > 420  # more than one block of resamples
    gap = bootstrap_gap(standard, fresh)
    ci = _scipy_gap(standard, fresh)
    exact = hasattr(stats, "quantile")  # scipy >= 1.15 rounds its interval as bootstrap_gap does
    if exact:
        assert (gap.ci_low, gap.ci_high) == (float(ci.low), float(ci.high))
    assert (gap.ci_low, gap.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert gap.gap == float(np.mean(fresh)) - float(np.mean(standard))
    assert (gap.n_fresh, gap.n_standard) == (len(fresh), len(standard))


@pytest.mark.parametrize("sizes", [(2, 3), (7, 40), (300, 29)])
def test_gap_matches_scipy_other_settings(sizes):
    rng = np.random.default_rng(sum(sizes))
    standard, fresh = rng.lognormal(2.5, 0.6, sizes[0]), rng.lognormal(2.7, 0.6, sizes[1])
    gap = bootstrap_gap(standard, fresh, n_resamples=777, confidence_level=0.9, random_state=7)
    ci = _scipy_gap(standard, fresh, n_resamples=777, confidence_level=0.9, random_state=7)
    assert (gap.ci_low, gap.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_gap():
    rng = np.random.default_rng(0)
    standard = rng.normal(10.0, 2.0, 400)
    worse = rng.normal(12.0, 2.0, 300)
    gap = bootstrap_gap(standard, worse)
    assert (gap.n_standard, gap.n_fresh) == (400, 300)
    assert gap.gap == pytest.approx(worse.mean() - standard.mean())
    assert gap.standard == pytest.approx(standard.mean()) and gap.fresh == pytest.approx(worse.mean())
    assert 0 < gap.ci_low < gap.gap < gap.ci_high  # a real shift of 2: the interval excludes 0
    # about +-1.96 standard errors of a difference of means
    se = np.sqrt(standard.var(ddof=1) / 400 + worse.var(ddof=1) / 300)
    assert gap.ci_high - gap.ci_low == pytest.approx(2 * 1.96 * se, rel=0.1)
    same = bootstrap_gap(standard, rng.normal(10.0, 2.0, 300))
    assert same.ci_low < 0 < same.ci_high
    assert bootstrap_gap(standard, worse) == gap  # seeded: reproducible
    with pytest.raises(FeynTuneError, match="need at least 2"):
        bootstrap_gap(standard, [1.0])
    with pytest.raises(FeynTuneError, match="NaN or infinity"):
        bootstrap_gap(standard, [1.0, float("inf")])
