"""The facts that have one home now: the interval text, the change verdict, the JSON writer of
both rating files, the bootstrap settings' text and the short model name."""

from __future__ import annotations

import json

import pytest

from harness.ground import stats
from harness.ground.jsonl import write_json
from harness.ground.names import short_name
from harness.judge import judge_ratings
from harness.leaderboard.compare import change_verdict
from harness.review.uncertainty import ci_text, interval_text


def test_one_interval_text():
    assert ci_text(1.234, 5.678) == "[95% CI 1.23, 5.68]"
    assert ci_text(-13.021, -6.84, sign=True) == "[95% CI -13.02, -6.84]"
    assert ci_text(None, 0.5, sign=True) == "[95% CI n/a, +0.50]"
    assert interval_text({"ci_low": 1.0, "ci_high": 2.0}) == " [95% CI 1.00, 2.00]"
    assert interval_text({"ci_low": None, "ci_high": 2.0}) == ""


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-3.0, -0.1, "lower"), (0.1, 2.0, "higher"), (-1.0, 1.0, "not shown"), (-1.0, 0.0, "not shown")])
def test_one_change_verdict(low, high, verdict):
    assert change_verdict(low, high) == verdict


def test_rating_files_are_written_beside_then_renamed(tmp_path, monkeypatch):
    path = tmp_path / "judge_ratings.json"
    judge_ratings.save(path, {"models": []})
    assert json.loads(path.read_text())["format"] == judge_ratings.FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["judge_ratings.json"]
    before = path.read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(path), "replace", broken)
    with pytest.raises(OSError):
        write_json(path, {"other": 1})
    assert path.read_text() == before  # the earlier ratings are whole


def test_bootstrap_settings_text_follows_the_settings():
    assert stats.SETTINGS_TEXT == "9,999 resamples, random state 1"
    assert stats.bootstrap_mean([1.0, 2.0, 4.0]).as_dict() == stats.bootstrap_mean(
        [1.0, 2.0, 4.0], stats.N_RESAMPLES, stats.CONFIDENCE_LEVEL, stats.RANDOM_STATE).as_dict()


def test_short_name():
    assert short_name("meta-llama/Llama-3.1-8B") == "Llama-3.1-8B"
    assert short_name("/models/adapters/s3/") == "s3"
    assert short_name("plain") == "plain"
