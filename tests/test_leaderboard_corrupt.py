"""One corrupt results or samples file, or one NaN sample, must not stop or blank the leaderboard:
it is skipped, counted and named on every output that carries notes (md, html), and the rest is
built. Each case corrupts a copy of a real `feyntune eval` output (conftest's hepth_eval_runs)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from harness import cli

pytestmark = pytest.mark.slow  # uses the session's real eval run


def _two_runs(hepth_eval_runs: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The real run, and a copy of it one day later in bad/ for the test to corrupt."""
    runs = tmp_path / "runs"
    shutil.copytree(hepth_eval_runs, runs)
    (folder,) = {p.parent for p in runs.rglob("results_*.json")}
    bad = runs / "bad"
    bad.mkdir()
    for path in folder.iterdir():
        target = bad / path.name
        if path.name.startswith("results_"):
            data = json.loads(path.read_text())
            data["date"] += 86400
            target.write_text(json.dumps(data))
        else:
            shutil.copy(path, target)
    return runs, bad


def _board(runs: Path, out: Path, capsys) -> tuple[list[dict], str, str, str]:
    assert cli.main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    with open(out / "leaderboard.csv", encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "measured"]
    return (rows, (out / "leaderboard.md").read_text(), (out / "index.html").read_text(),
            captured.out + captured.err)


def _rewrite_first_sample(path: Path, **changes) -> None:
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first.update(changes)
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")


def test_a_results_file_with_an_impossible_date_is_skipped(hepth_eval_runs, tmp_path, capsys):
    runs, bad = _two_runs(hepth_eval_runs, tmp_path)
    (results,) = bad.glob("results_*.json")
    data = json.loads(results.read_text())
    data["date"] = 1e20  # far past datetime's range: OverflowError before
    results.write_text(json.dumps(data))

    rows, md, html, said = _board(runs, tmp_path / "out", capsys)
    name = f"bad/{results.name}"
    assert f"skipped {name}: 'date' 1e+20 is not a time" in said
    assert f"`{name}`: 'date' 1e+20 is not a time" in md
    assert f"<code>{name}</code>: &#x27;date&#x27; 1e+20 is not a time" in html
    assert "1 file(s)" not in said and "file(s) skipped" in said
    (row,) = rows  # the intact run is built in full
    assert row["ppl_token_boot_std"] != "NA" and not row["run"].startswith("bad/")
    # its samples files are named too, not silently ignored
    assert f"bad/samples_hepth_completion_gen_{results.stem[8:]}.jsonl`: its {results.name} was skipped" in md


@pytest.mark.parametrize("doc_id", [None, [1], "1", True, 1.5])
def test_a_samples_file_with_a_bad_doc_id_is_skipped(hepth_eval_runs, tmp_path, capsys, doc_id):
    runs, bad = _two_runs(hepth_eval_runs, tmp_path)
    (samples,) = bad.glob("samples_hepth_completion_gen_*.jsonl")
    _rewrite_first_sample(samples, doc_id=doc_id)

    rows, md, html, said = _board(runs, tmp_path / "out", capsys)
    reason = f"line 1: doc_id {json.dumps(doc_id)} is not a document number"
    assert f"skipped bad/{samples.name}: {reason}" in said
    assert f"`bad/{samples.name}`: {reason}" in md
    assert f"<code>bad/{samples.name}</code>: {reason}".replace('"', "&quot;") in html
    assert len(rows) == 2
    intact = next(r for r in rows if not r["run"].startswith("bad/"))
    damaged = next(r for r in rows if r["run"].startswith("bad/"))
    assert intact["semscore_min"] != "NA"
    # the damaged run keeps its perplexity samples and lm-eval's generation aggregates
    assert damaged["semscore_min"] == "NA" and damaged["ppl_token_boot_std"] != "NA"
    assert damaged["semscore_mean"] == intact["semscore_mean"] or math.isclose(
        float(damaged["semscore_mean"]), float(intact["semscore_mean"]), rel_tol=1e-12)
    assert "hepth_completion_gen: samples file skipped" in md


def test_one_nan_sample_is_left_out_and_named(hepth_eval_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(hepth_eval_runs, runs)
    (samples,) = runs.rglob("samples_hepth_completion_gen_*.jsonl")
    originals = [json.loads(line) for line in samples.read_text().splitlines() if line]
    first = originals[0]
    _rewrite_first_sample(samples, semscore=math.nan)  # json writes NaN, as lm-eval would

    rows, md, html, said = _board(runs, tmp_path / "out", capsys)
    (row,) = rows
    rest = [s["semscore"] for s in originals[1:]]
    assert row["semscore_mean"] != "NA"
    assert float(row["semscore_mean"]) == math.fsum(rest) / len(rest)
    assert float(row["semscore_min"]) == min(rest)
    assert float(row["semscore_full_mean"]) == math.fsum(s["semscore_full"] for s in originals[1:]) / len(rest)
    reason = f"line 1 (doc_id {first['doc_id']}): semscore is NaN"
    rel = samples.relative_to(runs).as_posix()
    assert f"`{rel}`: {reason}" in md and f"<code>{rel}</code>: {reason}" in html
    assert f"skipped {rel}: {reason}" in said
    assert "0 file(s) and 1 sample(s) skipped" in said
    note = f"hepth_completion_gen: 1 sample(s) with a NaN value skipped; figures over the other {len(rest)}"
    assert note in md and note in html
    assert row["ppl_token_boot_std"] != "NA"  # the perplexity samples are untouched
