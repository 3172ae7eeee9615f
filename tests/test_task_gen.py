"""The whole hepth_completion group through `feyntune eval` (lm-eval in-process) on 3 real
documents: sample layout, generation settings, per-document metrics, the bootstrap summary."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main
from harness.evaluate import metrics
from harness.ground.abstracts import clean_abstract, is_withdrawn, primary_category
from harness.ground.stats import bootstrap_mean

GEN_KEYS = ("semscore", "semscore_full", "word_entropy", "completion_words", "metadata_leak", "repetition")
PPL_KEYS = ("ppl_token", "ppl_word", "word_perplexity", "byte_perplexity", "bits_per_byte")


@pytest.fixture(scope="module")
def run(sample_path, smollm2_path, minilm_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    records = []
    for line in sample_path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if primary_category(r["categories"]) == "hep-th" and not is_withdrawn(r.get("comments"), r["abstract"]):
            records.append({"id": r["id"], "title": r["title"], "abstract": r["abstract"]})
    records = sorted(records, key=lambda r: len(r["abstract"]))[:3]
    docs = tmp / "docs.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp / "runs"
    code = main(["eval", "--model", "hf", "--model_args", f"pretrained={smollm2_path},dtype=float32",
                 "--tasks", "hepth_completion", "--device", "cpu", "--batch_size", "3",
                 "--gen_kwargs", "max_gen_toks=8", "--output_path", str(out),
                 "--metadata", json.dumps({"hepth_data": str(docs), "semscore_model": str(minilm_path)})])
    return code, out, records


def _samples(out, task):
    (path,) = list(out.rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_layout_and_aggregates(run):
    code, out, records = run
    assert code == 0
    (results_path,) = list(out.rglob("results_*.json"))
    assert results_path.parent.parent == out  # <output_path>/<model name sanitised>/
    results = json.loads(results_path.read_text())["results"]
    gen, ppl = _samples(out, "hepth_completion_gen"), _samples(out, "hepth_completion_ppl")
    assert len(gen) == len(ppl) == 3
    for key in GEN_KEYS:
        assert results["hepth_completion_gen"][f"{key},none"] == pytest.approx(sum(s[key] for s in gen) / 3)
    for key in ("ppl_token", "ppl_word"):
        assert results["hepth_completion_ppl"][f"{key},none"] == pytest.approx(sum(s[key] for s in ppl) / 3)
    assert "word_perplexity,none" in results["hepth_completion_ppl"]
    for s in gen + ppl:
        assert {"id", "abstract", "prompt", "y_true"} <= set(s["doc"])
    assert [s["doc"]["id"] for s in sorted(gen, key=lambda s: s["doc_id"])] == [r["id"] for r in records]
    assert all(set(GEN_KEYS) <= set(s) and s["metrics"] == list(GEN_KEYS) for s in gen)
    assert all(set(PPL_KEYS) <= set(s) for s in ppl)


def test_generation_settings(run):
    _, out, records = run
    for s in _samples(out, "hepth_completion_gen"):
        context, gen_kwargs = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
        assert context == s["doc"]["prompt"]  # raw text, no template, nothing added
        assert gen_kwargs == {"until": [], "do_sample": True, "temperature": 0.8, "max_gen_toks": 8}
        assert s["doc"]["abstract"] == clean_abstract(next(r["abstract"] for r in records if r["id"] == s["doc"]["id"]))


def test_per_document_metrics_recomputed(run, minilm_path):
    _, out, _ = run
    for s in _samples(out, "hepth_completion_gen"):
        completion = s["filtered_resps"][0]
        doc = s["doc"]
        assert doc["semscore_model"] == str(minilm_path)
        assert s["semscore"] == pytest.approx(metrics.semscore(completion, doc["y_true"], str(minilm_path)), abs=1e-6)
        full = metrics.join_completion(doc["prompt"], completion)
        assert s["semscore_full"] == pytest.approx(metrics.semscore(full, doc["abstract"], str(minilm_path)), abs=1e-6)
        assert s["word_entropy"] == pytest.approx(metrics.word_entropy(completion))
        assert s["completion_words"] == metrics.completion_words(completion)
        assert s["repetition"] == metrics.repetition(completion)
        assert s["metadata_leak"] == metrics.metadata_leak(completion)
    for s in _samples(out, "hepth_completion_ppl"):
        ll = float(s["resps"][0][0][0])  # lm-eval writes response tuples as strings
        assert s["ppl_token"] == pytest.approx(math.exp(-ll / s["doc"]["ppl_tokens"]), rel=1e-12)


def test_summary_prints_the_bootstrap(run, capsys):
    # the module fixture ran before this test captured; rebuild the expected summary lines
    _, out, _ = run
    from harness.evaluate.command import format_summary, summary_rows, written_samples

    rows = summary_rows(written_samples(out, 0))
    ppl = [s["ppl_token"] for s in _samples(out, "hepth_completion_ppl")]
    (row,) = [r for r in rows if r["metric"] == "ppl_token"]
    assert {k: row[k] for k in ("n", "mean", "boot_mean", "boot_std", "ci_low", "ci_high")} == bootstrap_mean(ppl).as_dict()
    text = format_summary(rows)
    assert "ppl_token" in text and "semscore_full" in text and "9,999 resamples" in text
