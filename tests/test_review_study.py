"""`feyntune review import` of ratings in the reference study's layout: per-mix human means with
bootstrap intervals on the reported rows, category means, and the agreement across raters."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness import cli
from harness.review.rating_import import Rating
from harness.review.uncertainty import krippendorff_interval

RATERS = ("A", "B", "C")
PAPERS = [f"2401.{n:05d}" for n in range(1, 7)]
# (study model name as the study writes it, category column, base score)
MODELS = (("Base", "base", 3), ("s3", "LoRA-all", 6), ("s7", "LoRA-all", 5),
          ("s3_qkv", "LoRA-QKV", 5), ("ChatGPT-4", "commercial", 8))


def score(model_index: int, rater_index: int, paper_index: int, base: int) -> int:
    """Deterministic scores that differ across raters and papers, all within 1-10."""
    return max(1, min(10, base + (rater_index - 1) + ((paper_index * 7 + model_index) % 3) - 1))


@pytest.fixture
def study_csv(tmp_path):
    rows = []
    for (m, (model, category, base)), (r, rater), (p, paper) in itertools.product(
            enumerate(MODELS), enumerate(RATERS), enumerate(PAPERS)):
        rows.append([paper, model, rater, score(m, r, p, base), "arXiv", category])
    # one unknown model name: imported, shown as a note, never dropped silently
    rows.append([PAPERS[0], "mystery-model", "A", 7, "arXiv", "other"])
    path = tmp_path / "study-ratings.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["paper", "model", "rater", "score", "source", "category"])
        writer.writerows(rows)
    return path, rows


def expected_scores(rows, model):
    return [float(r[3]) for r in rows if r[1] == model]


def alpha_by_hand(matrix: np.ndarray) -> float:
    """Krippendorff's alpha, interval metric, complete data (raters x items): 1 - Do/De."""
    values = matrix.T  # items x raters
    n = values.size
    observed = sum((a - b) ** 2 for item in values
                   for a, b in itertools.permutations(item, 2)) / (values.shape[1] - 1)
    flat = values.ravel()
    expected = sum((a - b) ** 2 for a, b in itertools.permutations(flat, 2)) / (n - 1)
    return 1.0 - observed / expected


def test_study_csv_fills_reported_rows_with_intervals_and_agreement(study_csv, tmp_path, capsys):
    path, rows = study_csv
    out = tmp_path / "results"
    assert cli.main(["review", "import", str(path), "--out", str(out / "human_ratings.json")]) == 0
    printed = capsys.readouterr().out
    assert "Krippendorff's alpha (interval)" in printed
    stored = json.loads((out / "human_ratings.json").read_text())
    models = {m["model"]: m for m in stored["models"]}

    for model in ("Base", "s3", "s3_qkv", "ChatGPT-4"):
        values = expected_scores(rows, model)
        entry = models[model]
        assert entry["study"] == model
        assert entry["mean"] == pytest.approx(sum(values) / len(values), abs=1e-12)
        assert (entry["n"], entry["raters"], entry["documents"]) == (18, 3, 6)
        # the bootstrap interval, computed a second way with scipy's own bootstrap
        ref = scipy_stats.bootstrap((np.array(values),), np.mean, n_resamples=9999,
                                    method="percentile", random_state=1)
        assert entry["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-12)
        assert entry["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    assert models["mystery-model"]["study"] is None

    categories = {c["category"]: c for c in stored["categories"]}
    lora_all = expected_scores(rows, "s3") + expected_scores(rows, "s7")
    assert categories["LoRA-all"]["mean"] == pytest.approx(sum(lora_all) / len(lora_all))
    assert categories["LoRA-all"]["n"] == 36
    assert categories["Base"]["mean"] == pytest.approx(models["Base"]["mean"])
    assert categories["LoRA-QKV"]["mean"] == pytest.approx(models["s3_qkv"]["mean"])

    # alpha on the 30 texts every rater scored (the mystery model's one rating is left out)
    matrix = np.array([[score(m, r, p, base) for m, (_, _, base) in enumerate(MODELS)
                        for p in range(len(PAPERS))] for r in range(len(RATERS))], dtype=float)
    agreement = stored["agreement"]
    assert (agreement["raters"], agreement["items"]) == (3, 30)
    assert agreement["alpha"] == pytest.approx(alpha_by_hand(matrix), abs=1e-9)

    # the leaderboard puts them on the study's reported rows, per mix
    (tmp_path / "no-runs").mkdir()  # an empty runs folder: the reported rows alone
    assert cli.main(["leaderboard", "--runs", str(tmp_path / "no-runs"), "--out", str(out)]) == 0
    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as handle:
        board = {r["model"]: r for r in csv.DictReader(handle)}
    s3 = board["Llama-3.1-8B + LoRA-all s3"]
    assert float(s3["human_mean"]) == pytest.approx(models["s3"]["mean"])
    assert float(s3["human_ci_low"]) == pytest.approx(models["s3"]["ci_low"])
    assert (s3["human_n"], s3["human_raters"], s3["human_documents"]) == ("18", "3", "6")
    assert float(board["Llama-3.1-8B + LoRA-QKV s3"]["human_mean"]) == pytest.approx(
        models["s3_qkv"]["mean"])
    assert float(board["Llama-3.1-8B"]["human_mean"]) == pytest.approx(models["Base"]["mean"])
    assert float(board["ChatGPT-4"]["human_mean"]) == pytest.approx(models["ChatGPT-4"]["mean"])
    assert float(board["Llama-3.1-8B + LoRA-all (mix not stated)"]["human_mean"]) == \
        pytest.approx(categories["LoRA-all"]["mean"])
    # a mix nobody rated keeps no human value
    assert board["Llama-3.1-8B + LoRA-all s9"]["human_mean"] == "NA"
    md = (out / "leaderboard.md").read_text()
    assert f"Krippendorff's alpha (interval) {agreement['alpha']:.3f} across 3 raters" in md
    assert "human rating of mystery-model (no measured row)" in md
    assert "human rating of s3 " not in md


def test_published_category_means_come_from_a_file_built_to_match_them(tmp_path):
    """The published category means are plain means of the category's ratings: a file whose
    ratings average to 3.75 / 5.43 / 4.92 gives back exactly those figures."""
    from harness.review.rating_import import summarise
    from harness.review.uncertainty import annotate
    from harness.study import registry as study

    # 100 ratings per category; sums 375, 543, 492
    def spread(total):
        base, extra = divmod(total, 100)
        return [base + 1] * extra + [base] * (100 - extra)

    ratings = []
    for model, total in (("Base", 375), ("s1", 543), ("s1_qkv", 492)):
        for i, value in enumerate(spread(total)):
            ratings.append(Rating(None, model, f"r{i % 3}", f"p{i // 3}", {"overall": value}))
    _models, extras = annotate(summarise(ratings), ratings, study.load())
    means = {c["category"]: round(c["mean"], 2) for c in extras["categories"]}
    assert means == study.load().human["categories"]


def test_alpha_is_undefined_with_one_rater():
    ratings = [Rating(None, "s1", "A", f"p{i}", {"overall": i + 1}) for i in range(4)]
    result = krippendorff_interval(ratings)
    assert result["alpha"] is None and "2 raters" in result["why"]
