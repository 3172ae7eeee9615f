"""Shared fixtures: the real arXiv sample, the offline models, an offline hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEYNTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED_DATA / "arxiv" / "arxiv-sample.jsonl"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(f"{msg} (CI=true: missing shared data is a failure)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The real 1,477-record arXiv metadata sample in ../shared/data."""
    return _need(SAMPLE, "shared arXiv sample")


def _asset(name: str) -> Path:
    from harness import assets

    try:
        return assets.path(name)
    except assets.AssetError as err:
        if IN_CI:
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder (the embedded default model)."""
    return _asset("smollm2")


@pytest.fixture(scope="session")
def mpnet_path() -> Path:
    return _asset("mpnet")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return _asset("minilm")


@pytest.fixture(scope="session")
def llama3_tokenizer_path() -> Path:
    return _asset("llama3-tokenizer")


@pytest.fixture(scope="session")
def hepth_eval_runs(tmp_path_factory, sample_path, smollm2_path, minilm_path) -> Path:
    """A real `feyntune eval` output folder (results_*.json + samples_*.jsonl, lm-eval's own
    layout): the embedded SmolLM2 on the first 4 real hep-th abstracts of the sample, --limit 3,
    8 new tokens, SemScore with MiniLM for speed. Made once per session; treat it as read-only."""
    import json
    import subprocess
    import sys

    from harness.ground.abstracts import clean_abstract, is_control, is_withdrawn, primary_category

    root = tmp_path_factory.mktemp("hepth_eval")
    docs = root / "docs.jsonl"
    with open(sample_path, encoding="utf-8") as src, open(docs, "w", encoding="utf-8") as dst:
        kept = 0
        for line in src:
            r = json.loads(line)
            if (primary_category(r["categories"]) == "hep-th" and not is_control(r["id"])
                    and not is_withdrawn(r.get("comments"), r["abstract"])):
                dst.write(json.dumps({"id": r["id"], "title": r["title"],
                                      "abstract": clean_abstract(r["abstract"])}) + "\n")
                kept += 1
                if kept == 4:
                    break
    runs = root / "runs"
    metadata = json.dumps({"hepth_data": str(docs), "semscore_model": str(minilm_path)})
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "eval", "--model", "hf",
         "--model_args", f"pretrained={smollm2_path},dtype=float32", "--tasks", "hepth_completion",
         "--limit", "3", "--gen_kwargs", "max_gen_toks=8", "--seed", "1234",
         "--output_path", str(runs), "--metadata", metadata],
        cwd=root, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"feyntune eval failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return runs


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, smollm2_path, sample_path):
    """Two adapters of SmolLM2 with random non-zero updates (one per LoRA variant), named as the
    study's s3 and s3_qkv, and three real hep-th abstracts (`feyntune reproduce` tests). Made
    once per test module; tests read them and must not change them."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.ground.abstracts import clean_abstract, primary_category

    tmp_path = tmp_path_factory.mktemp("stand_ins")
    adapters = tmp_path / "adapters"
    targets = {"s3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
               "s3_qkv": ["q_proj", "k_proj", "v_proj"]}
    for seed, (name, modules) in enumerate(targets.items()):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=modules, init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():  # small updates: the adapters change, not wreck, the model
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.mul_(0.05)
        peft_model.save_pretrained(adapters / name)
    docs = tmp_path / "docs.jsonl"
    with open(sample_path, encoding="utf-8") as src, open(docs, "w", encoding="utf-8") as dst:
        kept = 0
        for line in src:
            record = json.loads(line)
            if primary_category(record["categories"]) == "hep-th" and kept < 3:
                dst.write(json.dumps({"id": record["id"], "title": record["title"],
                                      "abstract": clean_abstract(record["abstract"])}) + "\n")
                kept += 1
    return adapters, docs
