"""hepth_completion_ppl through lm-eval equals a direct transformers computation.

Direct computation (docs/reference.md, Perplexity): BOS + the abstract's tokens, every abstract token
scored, per-abstract perplexity exp(mean cross-entropy). Checked within 1e-4 relative for the
SmolLM2 asset, with a PEFT LoRA adapter (random B, so it changes the logits), and with a
tokenizer that adds BOS by itself (where lm-eval's loglikelihood_rolling would score a second
BOS).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.evaluate.command import run_lm_eval
from harness.ground.abstracts import clean_abstract, is_withdrawn, primary_category

N_DOCS = 3


@pytest.fixture(scope="module")
def hepth_jsonl(sample_path, tmp_path_factory) -> Path:
    """A few real hep-th abstracts of different lengths as a JSON-lines document file."""
    records = []
    for line in sample_path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if primary_category(r["categories"]) == "hep-th" and not is_withdrawn(r.get("comments"), r["abstract"]):
            records.append({"id": r["id"], "title": r["title"], "abstract": r["abstract"]})
    records.sort(key=lambda r: len(r["abstract"]))
    # shortest, lower quartile, median: real variety at a small CPU cost
    picked = [records[0], records[len(records) // 4], records[len(records) // 2]]
    path = tmp_path_factory.mktemp("docs") / "hepth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path


def run_ppl(model_args: str, docs: Path, out: Path) -> list[dict]:
    code = run_lm_eval([
        "run", "--model", "hf", "--model_args", model_args, "--tasks", "hepth_completion_ppl",
        "--device", "cpu", "--batch_size", "2", "--metadata", json.dumps({"hepth_data": str(docs)}),
        "--log_samples", "--output_path", str(out)])
    assert code == 0
    (samples,) = list(out.rglob("samples_hepth_completion_ppl_*.jsonl"))
    (results,) = list(out.rglob("results_*.json"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    agg = json.loads(results.read_text())["results"]["hepth_completion_ppl"]
    assert agg["ppl_token,none"] == pytest.approx(sum(r["ppl_token"] for r in rows) / len(rows), rel=1e-12)
    return sorted(rows, key=lambda r: r["doc_id"])


def direct_ppl(model, tokenizer, abstracts: list[str]) -> list[float]:
    import torch

    out = []
    for text in abstracts:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="mean")
        out.append(math.exp(loss.item()))
    return out


@pytest.fixture(scope="module")
def base_model(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_path)


def _check(rows, expected, tokenizer):
    assert len(rows) == len(expected) == N_DOCS
    for row, ppl in zip(rows, expected):
        n_tokens = len(tokenizer(row["doc"]["abstract"], add_special_tokens=False)["input_ids"])
        assert row["doc"]["ppl_tokens"] == n_tokens
        assert row["ppl_token"] == pytest.approx(ppl, rel=1e-4)
        words = len(row["doc"]["abstract"].split())
        assert row["ppl_word"] == pytest.approx(math.exp(math.log(ppl) * n_tokens / words), rel=1e-4)
        ll, n_words = row["word_perplexity"]
        assert n_words == words and ll == pytest.approx(-math.log(ppl) * n_tokens, rel=1e-4)


def test_base_model_matches_transformers(smollm2_path, hepth_jsonl, base_model, tmp_path):
    model, tok = base_model
    rows = run_ppl(f"pretrained={smollm2_path},dtype=float32", hepth_jsonl, tmp_path)
    assert [r["doc"]["abstract"] for r in rows] == [
        clean_abstract(json.loads(line)["abstract"]) for line in hepth_jsonl.read_text().splitlines()]
    # lm-eval scored the abstract after an empty context: its BOS prefix, no second BOS
    assert all(r["arguments"]["gen_args_0"]["arg_0"] == "" for r in rows)
    _check(rows, direct_ppl(model, tok, [r["doc"]["abstract"] for r in rows]), tok)
    # a small real model on real hep-th text: perplexity in the tens (SmolLM2-135M scores about 26 on a hep-th abstract)
    assert all(5 < r["ppl_token"] < 200 for r in rows)


@pytest.mark.slow
def test_peft_adapter_matches_transformers(smollm2_path, hepth_jsonl, base_model, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(fresh, config).save_pretrained(tmp_path / "adapter")

    model, tok = base_model
    abstracts = [clean_abstract(json.loads(line)["abstract"]) for line in hepth_jsonl.read_text().splitlines()]
    base = direct_ppl(model, tok, abstracts)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32), tmp_path / "adapter").eval()
    expected = direct_ppl(adapted, tok, abstracts)
    assert all(abs(e / b - 1) > 1e-3 for e, b in zip(expected, base)), "the adapter must change the logits"

    rows = run_ppl(f"pretrained={smollm2_path},peft={tmp_path / 'adapter'},dtype=float32",
                   hepth_jsonl, tmp_path / "out")
    _check(rows, expected, tok)


@pytest.mark.slow
def test_tokenizer_that_adds_bos_is_not_scored_twice(smollm2_path, hepth_jsonl, base_model, tmp_path):
    from transformers import AutoTokenizer

    bos_tok = AutoTokenizer.from_pretrained(smollm2_path, add_bos_token=True)
    bos_tok.save_pretrained(tmp_path / "tok")
    assert AutoTokenizer.from_pretrained(tmp_path / "tok")("x")["input_ids"][0] == bos_tok.bos_token_id

    model, tok = base_model
    rows = run_ppl(f"pretrained={smollm2_path},tokenizer={tmp_path / 'tok'},dtype=float32",
                   hepth_jsonl, tmp_path / "out")
    assert all(r["doc"]["tokenizer"] == str(tmp_path / "tok") for r in rows)
    _check(rows, direct_ppl(model, tok, [r["doc"]["abstract"] for r in rows]), tok)
