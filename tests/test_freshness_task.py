"""The hepth_completion_fresh task (issue 9): its documents from a `--fresh-after` build or a
date cut on any hepth_data source, and one tiny lm-eval run of the group on the real sample."""

from __future__ import annotations

import csv
import json

import pytest

from finetune import curate
from harness.cli import main
from harness.evaluate import documents, fresh_documents
from harness.ground import subtasks
from harness.ground.errors import FeynTuneError
from harness.ground.freshness import parse_cut
from harness.ground.stats import bootstrap_gap

GEN_KEYS = ("semscore", "semscore_full", "word_entropy", "completion_words", "metadata_leak", "repetition")


def ids_of(path):
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(sample_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh-task")
    curate.build(sample_path, root / "cut", sets=["s1"], progress=False, fresh_after="2024-12-31")
    curate.build(sample_path, root / "plain", sets=["s1"], progress=False)
    return root


def test_records_from_a_build(built, capsys):
    fresh_ids = ids_of(built / "cut" / "hepth-fresh" / "test.jsonl")
    for given in (built / "cut", built / "cut" / "hepth-fresh", built / "cut" / "hepth-fresh" / "test.jsonl"):
        got = fresh_documents.load_fresh_records({"hepth_fresh_data": str(given)})
        assert [r["id"] for r in got.records] == fresh_ids  # file order kept
        assert got.cut == parse_cut("2024-12-31")  # read from the build manifest
    assert "300 first versioned after 2024-12-31" in capsys.readouterr().err
    # hepth_after on top of the build's cut: the later one wins
    later = fresh_documents.load_fresh_records({"hepth_fresh_data": str(built / "cut"), "hepth_after": "2026-07"})
    assert later.cut == parse_cut("2026-07-31")
    assert {r["id"][:4] for r in later.records} == {"2608"}
    earlier = fresh_documents.load_fresh_records({"hepth_fresh_data": str(built / "cut"), "hepth_after": "2020-01-01"})
    assert earlier.cut == parse_cut("2024-12-31") and len(earlier.records) == 300


def test_date_cut_on_any_hepth_data_source(built):
    standard = built / "plain" / "s1" / "test.jsonl"
    expected = [i for i in ids_of(standard) if i[:2] == "26"]  # the sample's 2026 listings
    assert expected
    for metadata in ({"hepth_data": str(built / "plain"), "hepth_after": "2024-12-31"},
                     {"hepth_data": str(standard), "hepth_after": "2024-12-31"}):
        got = fresh_documents.load_fresh_records(metadata)
        assert [r["id"] for r in got.records] == expected
        assert got.tally.verdicts["not_fresh"] == len(ids_of(standard)) - len(expected)


def test_missing_or_empty_inputs_are_clear_errors(built, tmp_path):
    with pytest.raises(FeynTuneError, match="hepth_fresh_data.*hepth_after"):
        fresh_documents.load_fresh_records({"hepth_data": str(built / "plain")})
    loose = tmp_path / "docs.jsonl"
    loose.write_text((built / "cut" / "hepth-fresh" / "test.jsonl").read_text())
    with pytest.raises(FeynTuneError, match="no `feyntune data build` manifest"):
        fresh_documents.load_fresh_records({"hepth_fresh_data": str(loose)})
    assert len(fresh_documents.load_fresh_records({"hepth_fresh_data": str(loose), "hepth_after": "2024-12"}).records) == 300
    with pytest.raises(FeynTuneError, match="no hep-th document .* after 2100-01-01"):
        fresh_documents.load_fresh_records({"hepth_fresh_data": str(loose), "hepth_after": "2100-01-01"})
    with pytest.raises(FeynTuneError, match="does not exist"):
        fresh_documents.load_fresh_records({"hepth_fresh_data": str(tmp_path / "nope")})
    with pytest.raises(FeynTuneError, match="hepth_after"):
        fresh_documents.load_fresh_records({"hepth_fresh_data": str(loose), "hepth_after": "soon"})


def test_documents_carry_the_cut(built, minilm_path):
    dataset = fresh_documents.fresh_dataset({"hepth_fresh_data": str(built / "cut"),
                                       "semscore_model": str(minilm_path)},
                                      documents.generation_dataset)
    rows = list(dataset["test"])
    fresh = [json.loads(line) for line in
             (built / "cut" / "hepth-fresh" / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in fresh]
    for row, record in zip(rows, fresh):
        assert row["fresh_after"] == "2024-12-31"
        assert row["first_version"] == "20" + record["id"][:2] + "-" + record["id"][2:4]
        assert row["first_version_source"] == "id"
        # the documents are those of hepth_completion, built by the same code
        assert {k: row[k] for k in documents.DOC_FIELDS} == documents.to_document(record, 0, "x")


@pytest.mark.slow
def test_both_groups_in_one_run_and_the_leaderboard(built, smollm2_path, minilm_path, tmp_path, capsys):
    """Standard and fresh subtasks in one `feyntune eval` (the way to get the gap), then the
    leaderboard's fresh columns recomputed from the samples."""
    from harness.leaderboard import command as leaderboard

    out = tmp_path / "runs"
    code = main(["eval", "--model", "hf", "--model_args", f"pretrained={smollm2_path},dtype=float32",
                 "--tasks", "hepth_completion,hepth_completion_fresh", "--device", "cpu",
                 "--batch_size", "2", "--limit", "2", "--gen_kwargs", "max_gen_toks=4",
                 "--output_path", str(out),
                 "--metadata", json.dumps({"hepth_data": str(built / "cut"),
                                           "hepth_fresh_data": str(built / "cut"),
                                           "semscore_model": str(minilm_path)})])
    assert code == 0
    (results_path,) = list(out.rglob("results_*.json"))
    results = json.loads(results_path.read_text())["results"]
    fresh_ids = set(ids_of(built / "cut" / "hepth-fresh" / "test.jsonl"))
    samples = {}
    for task, keys in (("hepth_completion_fresh_gen", GEN_KEYS),
                       ("hepth_completion_fresh_ppl", ("ppl_token", "ppl_word")),
                       ("hepth_completion_gen", GEN_KEYS), ("hepth_completion_ppl", ("ppl_token",))):
        (path,) = list(out.rglob(f"samples_{task}_*.jsonl"))
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(samples[task]) == 2
        for s in samples[task]:
            assert (s["doc"]["id"] in fresh_ids) == ("fresh" in task)
            if "fresh" in task:
                assert s["doc"]["fresh_after"] == "2024-12-31"
                assert s["doc"]["first_version"] in ("2026-07", "2026-08")
        for key in keys:
            assert results[task][f"{key},none"] == pytest.approx(sum(s[key] for s in samples[task]) / 2)
    assert "word_perplexity,none" in results["hepth_completion_fresh_ppl"]
    printed = capsys.readouterr().out  # feyntune eval's bootstrap summary covers them too
    assert "hepth_completion_fresh_ppl" in printed and "hepth_completion_fresh_gen" in printed

    built_board = leaderboard.build(out, tmp_path / "board")
    assert built_board.measured_rows == 1 and not built_board.skipped
    rows = list(csv.DictReader((tmp_path / "board" / "leaderboard.csv").open()))
    row = next(r for r in rows if r["source"] == "measured")
    assert row["fresh_after"] == "2024-12-31" and row["fresh_documents"] == "2" and row["documents"] == "2"
    for metric, fresh_task, task in (("ppl_token", "hepth_completion_fresh_ppl", "hepth_completion_ppl"),
                                     ("semscore", "hepth_completion_fresh_gen", "hepth_completion_gen")):
        fresh = [s[metric] for s in samples[fresh_task]]
        standard = [s[metric] for s in samples[task]]
        gap = bootstrap_gap(standard, fresh)
        assert float(row[f"{metric}_fresh_mean"]) == pytest.approx(sum(fresh) / 2)
        assert float(row[f"{metric}_fresh_gap"]) == pytest.approx(gap.gap)
        assert float(row[f"{metric}_fresh_gap_ci_low"]) == pytest.approx(gap.ci_low)
        assert float(row[f"{metric}_fresh_gap_ci_high"]) == pytest.approx(gap.ci_high)
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "PPL fresh (gap [95% CI])" in markdown and "| 2024-12-31 | 2 |" in markdown


def test_eval_warns_when_documents_predate_the_cutoff(built, tmp_path, capsys):
    from harness.evaluate import command as evaluate

    samples = tmp_path / "samples_hepth_completion_ppl_x.jsonl"
    standard = [json.loads(line) for line in
                (built / "plain" / "s1" / "test.jsonl").read_text().splitlines()]
    samples.write_text("".join(json.dumps({"doc_id": i, "doc": {"id": r["id"]}}) + "\n"
                               for i, r in enumerate(standard)))
    older = sum(1 for r in standard if not r["id"].startswith("26"))
    evaluate._warn_contamination("pretrained=meta-llama/Llama-3.1-8B,dtype=bfloat16",
                                 [("hepth_completion_ppl", samples)])
    err = capsys.readouterr().err
    assert f"feyntune eval: warning: {older} of {len(standard)} documents were first versioned on " \
           "or before 2023-12" in err and "hepth_completion_fresh" in err
    evaluate._warn_contamination("pretrained=/tmp/tiny-random",
                                 [("hepth_completion_ppl", samples)])
    assert "note: no training cut-off is known for /tmp/tiny-random" in capsys.readouterr().err
    assert set(evaluate.TASK_METRICS) >= set(subtasks.FRESH_PAIRS)
    for fresh, twin in subtasks.FRESH_PAIRS.items():
        assert evaluate.TASK_METRICS[fresh] == evaluate.TASK_METRICS[twin]
