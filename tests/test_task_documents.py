"""Document sources of the hepth_completion task, the prompt split on edge cases, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evaluate import documents as d
from harness.ground.errors import FeynTuneError


def _write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


REC = {"id": "1234.5678", "title": "T", "abstract": "First claim. Second claim.\n  Third claim."}


def test_file_source_and_derived_split(tmp_path):
    docs = d.load_documents(_write(tmp_path / "x.jsonl", [REC]), environ={})
    assert docs.source.kind == "file" and docs.skipped_empty == 0
    (doc,) = docs.docs
    assert doc == {"id": "1234.5678", "title": "T", "abstract": "First claim. Second claim. Third claim.",
                   "prompt": "First claim. Second claim.", "y_true": "Third claim."}


def test_given_prompt_and_truth_are_kept(tmp_path):
    rec = {**REC, "prompt": "P", "y_true": "Y"}
    (doc,) = d.load_documents(_write(tmp_path / "x.jsonl", [rec]), environ={}).docs
    assert (doc["prompt"], doc["y_true"]) == ("P", "Y")


@pytest.mark.parametrize("abstract, prompt, truth", [
    ("A single sentence of exactly seven words", "A single sentence of", "exactly seven words"),
    ("Word", "Word", ""),
    ("One. Two.", "One.", "Two."),
    ("One. Two. Three.", "One. Two.", "Three."),
    ("We use e.g. lattices. Then we conclude.", "We use e.g. lattices.", "Then we conclude."),
    ("As Smith et al. showed, it holds. We extend it.", "As Smith et al. showed, it holds.", "We extend it."),
    ("Smith et al. agree. Jones et al. disagree.", "Smith et al. agree.", "Jones et al. disagree."),
    ("Why? Because it works! So we use it.", "Why? Because it works!", "So we use it."),
    ("  One. Two.   \n ", "One.", "Two."),
    ("Is it? Yes.\nIt is.", "Is it? Yes.", "It is."),
])
def test_split_edge_cases_through_documents(tmp_path, abstract, prompt, truth):
    (doc,) = d.load_documents(_write(tmp_path / "x.jsonl", [{"id": "1", "abstract": abstract}]), environ={}).docs
    assert (doc["prompt"], doc["y_true"]) == (prompt, truth)


def test_bad_records(tmp_path, capsys):
    docs = d.load_documents(_write(tmp_path / "x.jsonl", [
        {"abstract": ""}, {"id": "a", "abstract": "  \n "}, {"abstract": "Ünïcödé abstract: ℏ=1."}, {"id": None, "abstract": "Word"},
    ]), environ={})
    assert docs.skipped_empty == 2
    assert "skipped 2 of 4 records with an empty abstract" in capsys.readouterr().err
    assert [x["id"] for x in docs.docs] == ["#2", "#3"]
    assert docs.docs[0]["abstract"] == "Ünïcödé abstract: ℏ=1."
    with pytest.raises(FeynTuneError, match=r"record 1 has no 'abstract'"):
        d.load_documents(_write(tmp_path / "y.jsonl", [REC, {"id": "x"}]), environ={})
    (tmp_path / "z.jsonl").write_text('{"abstract": "ok"}\nnot json\n')
    with pytest.raises(FeynTuneError, match=r"z.jsonl:2: not a JSON object"):
        d.load_documents(tmp_path / "z.jsonl", environ={})
    with pytest.raises(FeynTuneError, match="no hep-th documents .* 1 records, 1 with an empty abstract"):
        d.load_documents(_write(tmp_path / "e.jsonl", [{"abstract": ""}]), environ={})


def test_folders_relative_paths_and_precedence(tmp_path, monkeypatch):
    build = tmp_path / "data"
    _write(build / "s1" / "test.jsonl", [{**REC, "id": "s1"}])
    _write(build / "s2" / "test.jsonl", [{**REC, "id": "s2"}])
    other = _write(tmp_path / "other.jsonl", [{**REC, "id": "env"}])
    monkeypatch.chdir(tmp_path)
    assert d.load_documents("data", environ={}).docs[0]["id"] == "s1"           # build folder -> s1
    assert d.load_documents("data/s2", environ={}).docs[0]["id"] == "s2"        # a set folder
    src = d.resolve_source("data", environ={})
    assert src.location == str((build / "s1" / "test.jsonl").resolve())
    env = {d.ENV_VAR: "other.jsonl"}
    assert d.load_documents(None, environ=env).docs[0]["id"] == "env"           # the variable
    assert d.load_documents("data", environ=env).docs[0]["id"] == "s1"          # metadata first
    assert d.resolve_source(None, cwd=tmp_path, environ={d.ENV_VAR: str(other)}).location == str(other)


def test_missing_sources_name_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FeynTuneError, match=r"metadata hepth_data=nowhere.*does not exist"):
        d.load_documents("nowhere", environ={})
    with pytest.raises(FeynTuneError, match=rf"{d.ENV_VAR}=gone.*does not exist"):
        d.load_documents(None, environ={d.ENV_VAR: "gone"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeynTuneError, match="without s1/test.jsonl"):
        d.load_documents("empty", environ={})
    assert d.resolve_source(None, environ={}).kind == "hub"


def test_hub_fallback_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FeynTuneError) as err:
        d.load_documents(None, environ={})
    msg = str(err.value)
    assert "metadata hepth_data" in msg and d.ENV_VAR in msg and d.HUB_DATASET in msg


def test_perplexity_dataset_needs_a_tokenizer(tmp_path):
    path = _write(tmp_path / "x.jsonl", [REC])
    with pytest.raises(FeynTuneError, match="hepth_completion_gen"):
        d.perplexity_dataset({"hepth_data": str(path), "model": "gpt-4o"})


def test_perplexity_dataset_counts_tokens(tmp_path, smollm2_path):
    from transformers import AutoTokenizer

    path = _write(tmp_path / "x.jsonl", [REC, {"id": "u", "abstract": "Ünïcödé ℏ."}])
    ds = d.perplexity_dataset({"hepth_data": str(path), "pretrained": str(smollm2_path)})["test"]
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    assert ds["ppl_tokens"] == [len(tok(a, add_special_tokens=False)["input_ids"]) for a in ds["abstract"]]
    assert set(ds.column_names) >= {"id", "abstract", "prompt", "y_true", "ppl_tokens", "tokenizer"}


def test_feyntune_eval_reports_source_errors_without_traceback(tmp_path, monkeypatch, capsys):
    """lm-eval's `dummy` model loads nothing, so this reaches the task loading quickly."""
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["eval", "--model", "dummy", "--tasks", "hepth_completion_gen",
                 "--metadata", '{"hepth_data": "missing.jsonl"}', "--output_path", "out"])
    err = capsys.readouterr().err
    assert code == 2
    assert "feyntune eval: error: hep-th documents from metadata hepth_data=missing.jsonl" in err
    assert "Traceback" not in err
    docs = _write(tmp_path / "docs.jsonl", [REC])
    code = main(["eval", "--model", "dummy", "--tasks", "hepth_completion_ppl",
                 "--metadata", json.dumps({"hepth_data": str(docs)}), "--output_path", "out"])
    assert code == 2
    assert "API models can run only hepth_completion_gen" in capsys.readouterr().err


def test_hub_documents_named_by_metadata_and_the_reference_default(tmp_path):
    """`hepth_hub` ("NAME" or "NAME:SPLIT") names a hub dataset; without any source the task
    reads the reference study file's published split."""
    source = d.resolve_source(None, environ={}, hub="org/docs:validation")
    assert (source.kind, source.location, source.split) == ("hub", "org/docs", "validation")
    assert d.resolve_source(None, environ={}, hub="org/docs").split == "test"
    default = d.resolve_source(None, environ={})
    assert (default.location, default.split) == (d.HUB_DATASET, d.HUB_SPLIT)
    assert (d.HUB_DATASET, d.HUB_SPLIT) == ("LLMsForHepth/hep-th_primary", "test")
    # a file source still wins over the hub
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"abstract": "A text."}\n')
    assert d.resolve_source(str(docs), environ={}, hub="org/docs").kind == "file"
