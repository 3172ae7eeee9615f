"""`feyntune review`: no lost ratings. A built review is never replaced without --force, imports
accumulate (a rater's re-import replaces only that rater's rows of that review), scores are
exactly the integers 1-10 as the page allows, and a damaged key is one clear line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from test_review import write_csv

from harness import cli
from harness.review.blind_page import KEY_FORMAT, build_review
from harness.review.criteria import CRITERION_KEYS, RATINGS_COLUMNS
from harness.review.rating_import import page_score, reference_score

REVIEW = "5f3a9c0e1b2d"
# Document 1: A = m1, B = m2; document 2: A = m2, B = m1 (as a shuffled page would have them).
KEY = {
    "format": KEY_FORMAT,
    "review": REVIEW,
    "seed": 42,
    "runs_folder": "results/runs",
    "models": [{"run": "runs/m1", "model": "m1"}, {"run": "runs/m2", "model": "m2"}],
    "documents": [
        {"document": 1, "arxiv_id": "2401.00001",
         "labels": {"A": {"run": "runs/m1", "model": "m1"}, "B": {"run": "runs/m2", "model": "m2"}}},
        {"document": 2, "arxiv_id": "2401.00002",
         "labels": {"A": {"run": "runs/m2", "model": "m2"}, "B": {"run": "runs/m1", "model": "m1"}}},
    ],
}
BLANK = [""] * (len(CRITERION_KEYS) - 1)  # only the overall score (the last column) is given


def page_csv(path: Path, rater: str, overall: dict[tuple[int, str], object]) -> Path:
    return write_csv(path, RATINGS_COLUMNS,
                     [[REVIEW, rater, doc, label, *BLANK, score]
                      for (doc, label), score in overall.items()])


@pytest.fixture
def key_path(tmp_path) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KEY), encoding="utf-8")
    return path


def _import(files, out: Path, key: Path | None = None) -> int:
    argv = ["review", "import", *map(str, files), "--out", str(out)]
    return cli.main(argv + (["--key", str(key)] if key else []))


def _models(out: Path) -> dict[str, dict]:
    return {m["model"]: m for m in json.loads(out.read_text())["models"]}


# -- item 5: scores ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [str(i) for i in range(1, 11)])
def test_page_scores_are_the_integers_1_to_10(text):
    assert page_score(text) == int(text) and isinstance(page_score(text), int)


@pytest.mark.parametrize("text", ["1_0", "\u0663", "\u0661\u0660", "\uff15", "1e1", "10.0",
                                  "5.", ".5", "6.5", "0", "11", "05", "+5", "-3", " 5", "nan",
                                  "inf", "", "ten", "0x5"])
def test_anything_else_is_not_a_page_score(text):
    with pytest.raises(ValueError, match="score"):
        page_score(text)


def test_reference_scores_are_plain_decimals_in_range():
    assert [reference_score(t) for t in ("1", "8.5", "10", "10.0", "3.75")] == \
        [1.0, 8.5, 10.0, 10.0, 3.75]
    for text in ("1_0", "1e1", "\u0663", "nan", "inf", "10.5", "0.5", "-1", "+2", "5."):
        with pytest.raises(ValueError):
            reference_score(text)


def test_loose_scores_are_counted_and_reported_bad_rows(tmp_path, key_path, capsys):
    rows = {(1, "A"): 7, (1, "B"): "1_0", (2, "A"): "\u0663", (2, "B"): "1e1"}
    ratings = page_csv(tmp_path / "ann.csv", "ann", rows)
    with open(ratings, "a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerow([REVIEW, "bob", 1, "A", *BLANK, "10.0"])
    out = tmp_path / "human.json"
    assert _import([ratings], out, key_path) == 0
    captured = capsys.readouterr()
    for line, text in ((3, "'1_0' is not a number"), (4, "'\u0663' is not a number"),
                       (5, "'1e1' is not a number"), (6, "10.0 is not a whole number")):
        assert f"skipped {ratings}:{line}: overall: score {text}" in captured.err, text
    assert captured.err.count("skipped ") == 4
    assert "imported 1 rating row(s) from 1 file(s), 4 skipped" in captured.out
    assert _models(out)["m1"]["mean"] == 7.0 and "m2" not in _models(out)


@pytest.mark.parametrize(("drop", "field"), [
    (lambda k: k.pop("review"), "review"),
    (lambda k: k.pop("documents"), "documents"),
    (lambda k: k["models"][1].pop("run"), "models[1].run"),
    (lambda k: k["documents"][1].pop("labels"), "documents[1].labels"),
    (lambda k: k["documents"][0]["labels"]["B"].pop("model"), "documents[0].labels.B.model"),
])
def test_a_key_missing_a_field_is_one_clear_error(tmp_path, capsys, drop, field):
    key = json.loads(json.dumps(KEY))
    drop(key)
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    ratings = page_csv(tmp_path / "ann.csv", "ann", {(1, "A"): 7})
    assert _import([ratings], tmp_path / "human.json", key_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"review key {key_path} is damaged: missing field '{field}'" in err


# -- item 4: imports accumulate ----------------------------------------------------------------
def test_imports_accumulate_and_a_reimport_replaces_only_that_raters_rows(tmp_path, key_path,
                                                                           capsys):
    out = tmp_path / "results" / "human_ratings.json"
    alice = {(1, "A"): 8, (1, "B"): 4, (2, "A"): 5, (2, "B"): 9}   # m1: 8, 9; m2: 4, 5
    bob = {(1, "A"): 6, (1, "B"): 2, (2, "A"): 3}                  # m1: 6;    m2: 2, 3
    assert _import([page_csv(tmp_path / "alice.csv", "alice", alice)], out, key_path) == 0
    assert "4 row(s) added, 0 earlier row(s) replaced, 0 earlier row(s) kept" in \
        capsys.readouterr().out
    assert _import([page_csv(tmp_path / "bob.csv", "bob", bob)], out, key_path) == 0
    assert "3 row(s) added, 0 earlier row(s) replaced, 4 earlier row(s) kept" in \
        capsys.readouterr().out
    models = _models(out)
    assert models["m1"]["mean"] == pytest.approx((8 + 9 + 6) / 3) and models["m1"]["n"] == 3
    assert models["m2"]["mean"] == pytest.approx((4 + 5 + 2 + 3) / 4) and models["m2"]["raters"] == 2

    # Alice changes her mind on two texts and re-exports: her rows go, Bob's stay.
    alice2 = {(1, "A"): 10, (2, "B"): 1}
    assert _import([page_csv(tmp_path / "alice2.csv", "alice", alice2)], out, key_path) == 0
    printed = capsys.readouterr().out
    assert "2 row(s) added, 4 earlier row(s) replaced, 3 earlier row(s) kept" in printed
    assert f"replaced: rater 'alice' of review {REVIEW}" in printed
    models = _models(out)
    # Computed a second way: from the rows stored in the file.
    rows = json.loads(out.read_text())["ratings"]
    for name in ("m1", "m2"):
        values = [r["scores"]["overall"] for r in rows if r["model"] == name]
        assert models[name]["mean"] == pytest.approx(math.fsum(values) / len(values))
    assert models["m1"]["mean"] == pytest.approx((10 + 1 + 6) / 3)
    assert models["m2"]["mean"] == pytest.approx((2 + 3) / 2) and models["m2"]["raters"] == 1
    assert sorted((r["rater"], r["document"], r["label"]) for r in rows) == [
        ("alice", "1", "A"), ("alice", "2", "B"), ("bob", "1", "A"), ("bob", "1", "B"),
        ("bob", "2", "A")]


def test_reference_layout_rows_accumulate_beside_page_rows(tmp_path, key_path, capsys):
    out = tmp_path / "human.json"
    assert _import([page_csv(tmp_path / "alice.csv", "alice", {(1, "A"): 8})], out, key_path) == 0
    ref = write_csv(tmp_path / "ref.csv", ["paper", "model", "rater", "score", "source",
                                           "category"],
                    [["2401.00009", "Llama-3.1-8B", "r1", 3.5, "completion", "hep-th"]])
    assert _import([ref], out) == 0
    assert "1 row(s) added, 0 earlier row(s) replaced, 1 earlier row(s) kept" in \
        capsys.readouterr().out
    assert set(_models(out)) == {"m1", "Llama-3.1-8B"}


def test_a_summary_only_or_foreign_ratings_file_is_left_alone(tmp_path, key_path, capsys):
    ratings = page_csv(tmp_path / "alice.csv", "alice", {(1, "A"): 8})
    summary_only = tmp_path / "old.json"
    summary_only.write_text(json.dumps({"format": "feyntune-human-ratings/1", "models": [
        {"run": None, "model": "m1", "mean": 6.0, "n": 3}]}))
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"something": "else"}')
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"format": "feyntune-human-ratings/1", "models": [], "ratings": [
        {"run": None, "model": "m1", "rater": "x", "document": "1", "scores": {"overall": "9"},
         "review": None, "label": None, "file": "a.csv"}]}))
    for out, why in ((summary_only, "holds per-model scores but not the rating rows"),
                     (foreign, "is not a FeynTune human-ratings file"),
                     (edited, "a stored rating row is damaged (score '9' of rater 'x')")):
        before = out.read_bytes()
        assert _import([ratings], out, key_path) == 2
        assert why in capsys.readouterr().err
        assert out.read_bytes() == before


# -- item 3: an existing review is never overwritten without --force ---------------------------
@pytest.mark.slow
def test_an_existing_review_is_kept_and_a_new_one_written_beside_it(hepth_eval_runs, tmp_path,
                                                                    capsys):
    out = tmp_path / "review"
    page, key, _ = build_review(hepth_eval_runs, out, n=2, seed=1)
    first_page, first_key = page.read_bytes(), key.read_bytes()
    review = json.loads(first_key)["review"]

    _, _, messages = build_review(hepth_eval_runs, out, n=2, seed=1)  # the very same review
    assert not messages and key.read_bytes() == first_key

    argv = ["review", "build", "--runs", str(hepth_eval_runs), "--out", str(out), "--n", "3"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert page.read_bytes() == first_page and key.read_bytes() == first_key
    (new_key,) = out.glob("key-*.json")
    (new_page,) = out.glob("review-*.html")
    second = json.loads(new_key.read_text())["review"]
    assert second != review and new_key.name == f"key-{second}.json"
    assert new_page.name == f"review-{second}.html" and second in new_page.read_text()
    assert f"kept the existing {page}, {key} (review {review})" in captured.err
    assert f"key: {new_key}" in captured.out

    assert cli.main(argv) == 0  # the same new review again: nothing more is written
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["review.html", "key.json", new_page.name, new_key.name])

    assert cli.main([*argv, "--force"]) == 0
    assert json.loads(key.read_text())["review"] == second


def test_document_numbers_count_within_their_own_review():
    """A page numbers its documents 1..N: review A's document 1 and review B's are two papers."""
    from harness.review import uncertainty as agreement
    from harness.review.criteria import OVERALL
    from harness.review.rating_import import Rating, summarise

    rows = [Rating(None, "m1", rater, "1", {OVERALL: score}, review=review)
            for review, rater, score in (("A", "ann", 4), ("A", "bob", 5),
                                         ("B", "ann", 8), ("B", "bob", 9))]
    (model,) = summarise(rows)
    assert model["documents"] == 2 and model["raters"] == 2
    alpha = agreement.krippendorff_interval(rows)
    assert alpha["items"] == 2  # neither rater's review-A score is overwritten by review B's
