"""`feyntune review build|import`: blindness, the round trip into the leaderboard, bad rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from harness import cli
from harness.leaderboard.command import build as build_leaderboard
from harness.review.blind_page import build_review
from harness.review.criteria import CRITERION_KEYS, RATINGS_COLUMNS

ADAPTER = "LLMsForHepth/s3-L-3.1-8B-base_v3"


def two_models(real_runs: Path, dst: Path) -> Path:
    """The real smollm2 run, plus the same samples recorded as an adapter run in another folder
    (a second model identity without a second model run)."""
    shutil.copytree(real_runs, dst)
    (folder,) = {p.parent for p in dst.rglob("results_*.json")}
    (results,) = folder.glob("results_*.json")
    other = dst / "LLMsForHepth__s3-L-3.1-8B-base_v3"
    other.mkdir()
    data = json.loads(results.read_text())
    data["config"]["model_args"]["peft"] = ADAPTER
    (other / results.name).write_text(json.dumps(data))
    for samples in folder.glob("samples_*.jsonl"):
        # Distinct text per model so the key's mapping is checkable.
        lines = [json.loads(line) for line in samples.read_text().splitlines()]
        for sample in lines if "_gen_" in samples.name else []:
            sample["filtered_resps"] = [sample["filtered_resps"][0] + " [adapter]"]
        (other / samples.name).write_text("".join(json.dumps(s) + "\n" for s in lines))
    return dst


@pytest.fixture(scope="module")
def runs(hepth_eval_runs, tmp_path_factory) -> Path:
    return two_models(hepth_eval_runs, tmp_path_factory.mktemp("review") / "runs")


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def identifiers(runs: Path) -> set[str]:
    """Everything that names a model or a run in the runs folder."""
    names = {"smollm2", "SmolLM2", "LLMsForHepth", "s3-L-3.1-8B", "LoRA", "results_", "/root",
             "/tmp", "peft", "pretrained"}
    for results in runs.rglob("results_*.json"):
        data = json.loads(results.read_text())
        names |= {results.parent.name, results.stem, data["model_name"]}
        names |= {str(v) for v in data["config"]["model_args"].values() if len(str(v)) > 3}
    return names


@pytest.mark.slow
def test_review_page_names_no_model(runs, tmp_path):
    page, key_path, _ = build_review(runs, tmp_path / "review", n=3, seed=7)
    source = page.read_text()
    key = json.loads(key_path.read_text())
    assert key_path.parent == page.parent and key_path.name == "key.json"
    for name in identifiers(runs) | {m["model"] for m in key["models"]} | {m["run"] for m in key["models"]}:
        assert name not in source, f"the page gives away {name!r}"
    assert "true continuation" not in source.lower() and "y_true" not in source
    for doc in key["documents"]:
        assert doc["arxiv_id"] not in source  # no paper id either (the truth is one search away)
        assert set(doc["labels"]) == {"A", "B", "C"}  # two models and the true continuation
        assert sorted(v["model"] for v in doc["labels"].values()) == sorted(
            [m["model"] for m in key["models"]] + ["true continuation"])
    # One text per label and document, and each rating box is there.
    assert source.count('<section class="completion">') == 9
    assert source.count('data-criterion="overall"') == 9
    assert "http://" not in source and "https://" not in source
    # Same seed, same page; another seed, another order.
    again, _, _ = build_review(runs, tmp_path / "again", n=3, seed=7)
    assert again.read_bytes() == page.read_bytes()
    other_key = json.loads(build_review(runs, tmp_path / "other", n=3, seed=8)[1].read_text())
    assert other_key["documents"] != key["documents"]


@pytest.mark.slow
def test_round_trip_into_the_leaderboard(runs, tmp_path):
    _, key_path, _ = build_review(runs, tmp_path / "review", n=3, seed=1)
    key = json.loads(key_path.read_text())
    by_model = {"smollm2": 4, "smollm2 + LoRA-all s3": 6, "true continuation": 9}
    rows = []
    for rater, offset in (("ann", 0), ("bob", 1)):
        for doc in key["documents"]:
            for label, target in doc["labels"].items():
                score = by_model[target["model"]] + offset
                rows.append([key["review"], rater, doc["document"], label,
                             *([score] * len(CRITERION_KEYS))])
    ratings = write_csv(tmp_path / "ratings.csv", RATINGS_COLUMNS, rows)
    out = tmp_path / "results"
    assert cli.main(["review", "import", str(ratings), "--key", str(key_path),
                     "--out", str(out / "human_ratings.json")]) == 0
    stored = {m["model"]: m for m in json.loads((out / "human_ratings.json").read_text())["models"]}
    assert stored["smollm2"]["mean"] == pytest.approx(4.5)
    assert stored["smollm2"]["n"] == 6 and stored["smollm2"]["raters"] == 2
    assert stored["smollm2 + LoRA-all s3"]["criteria"]["accuracy"] == pytest.approx(6.5)
    assert stored["true continuation"]["run"] is None

    build_leaderboard(runs, out)
    board = {r["model"]: r for r in read_rows(out / "leaderboard.csv")}
    assert float(board["smollm2"]["human_mean"]) == pytest.approx(4.5)
    assert board["smollm2"]["human_n"] == "6"
    assert float(board["smollm2 + LoRA-all s3"]["human_mean"]) == pytest.approx(6.5)
    # Reported human ratings stay the study's.
    assert float(board["Llama-3.1-8B"]["human_mean"]) == 3.75
    md = (out / "leaderboard.md").read_text()
    assert "human rating of true continuation (no measured row): 9.50 (n=6)" in md


@pytest.mark.slow
def test_bad_rows_are_reported_and_the_rest_imported(runs, tmp_path, capsys):
    _, key_path, _ = build_review(runs, tmp_path / "review", n=2, seed=3)
    key = json.loads(key_path.read_text())
    review = key["review"]
    blank = [""] * (len(CRITERION_KEYS) - 1)
    rows = [
        [review, "ann", 1, "A", *blank, 7],    # line 2: fine
        [review, "ann", 1, "Z", *blank, 5],    # line 3: unknown label
        [review, "ann", 1, "B", *blank, 11],   # line 4: out of range
        [review, "ann", 1, "A", *blank, 8],    # line 5: duplicate of line 2
        [review, "ann", 9, "A", *blank, 5],    # line 6: unknown document
        ["0000", "ann", 2, "A", *blank, 5],    # line 7: another review
        [review, "ann", 2, "C", *blank, "x"],  # line 8: not a number
        [review, "", 2, "B", *blank, 5],       # line 9: no rater
        [review, "bob", 1, "A", *blank, 9],    # line 10: fine (another rater)
        [review, "bob", 2, "B", *blank, 6.5],  # line 11: not a whole number
    ]
    ratings = write_csv(tmp_path / "ratings.csv", RATINGS_COLUMNS, rows)
    junk = write_csv(tmp_path / "junk.csv", ["a", "b"], [[1, 2]])
    out = tmp_path / "human.json"
    assert cli.main(["review", "import", str(ratings), str(junk), "--key", str(key_path),
                     "--out", str(out)]) == 0
    captured = capsys.readouterr()
    for line, why in ((3, "unknown label 'Z'"), (4, "score 11 is outside 1-10"),
                      (5, "already rated at"), (6, "unknown document '9'"),
                      (7, "from review '0000'"), (8, "is not a number"), (9, "no rater name"),
                      (11, "is not a whole number")):
        assert f"skipped {ratings}:{line}: " in captured.err and why in captured.err, why
    assert f"skipped {junk}: unknown layout" in captured.err
    assert "imported 2 rating row(s)" in captured.out
    (entry,) = [m for m in json.loads(out.read_text())["models"]
                if m["model"] == key["documents"][0]["labels"]["A"]["model"]]
    assert entry["mean"] == 8.0 and entry["n"] == 2


def test_reference_csv_layout(tmp_path, capsys):
    rows = [
        ["2401.00001", "smollm2", "r1", 4, "completion", "hep-th"],
        ["2401.00001", "smollm2", "r2", 5, "completion", "hep-th"],
        ["2401.00002", "Claude", "r1", 8.5, "completion", "hep-th"],
        ["2401.00002", "Claude", "r1", 9, "completion", "hep-th"],   # duplicate
        ["2401.00003", "Claude", "r2", 0, "completion", "hep-th"],   # out of range
    ]
    ref = write_csv(tmp_path / "reference.csv",
                    ["paper", "model", "rater", "score", "source", "category"], rows)
    out = tmp_path / "human.json"
    assert cli.main(["review", "import", str(ref), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{ref}:5: paper 2401.00002 model 'Claude' by rater 'r1' already rated" in err
    assert f"{ref}:6: score 0 is outside 1-10" in err
    stored = {m["model"]: m for m in json.loads(out.read_text())["models"]}
    assert stored["smollm2"]["mean"] == 4.5 and stored["smollm2"]["n"] == 2
    assert stored["Claude"]["mean"] == 8.5 and stored["Claude"]["n"] == 1


def test_page_ratings_need_the_key(tmp_path, capsys):
    ratings = write_csv(tmp_path / "r.csv", RATINGS_COLUMNS,
                        [["abc", "ann", 1, "A", *([5] * len(CRITERION_KEYS))]])
    assert cli.main(["review", "import", str(ratings), "--out", str(tmp_path / "h.json")]) == 2
    assert "need --key" in capsys.readouterr().err


def test_build_without_completions_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["review", "build", "--runs", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no run with hepth_completion_gen samples" in capsys.readouterr().err


@pytest.mark.slow
def test_models_are_chosen_by_label_or_run(runs, tmp_path, capsys):
    _, key_path, _ = build_review(runs, tmp_path / "one", n=2, models=["smollm2"],
                                  include_truth=False)
    key = json.loads(key_path.read_text())
    assert [m["model"] for m in key["models"]] == ["smollm2"]
    assert all(list(d["labels"]) == ["A"] for d in key["documents"])
    assert cli.main(["review", "build", "--runs", str(runs), "--models", "gpt-9",
                     "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "no run with completions named gpt-9" in err and "smollm2 + LoRA-all s3" in err
    _, _, messages = build_review(runs, tmp_path / "many", n=50)
    assert any("only 3 documents were completed by every chosen model" in m for m in messages)
