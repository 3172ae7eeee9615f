"""`feyntune merge`: the merged 16-bit model computes what base + adapter computes.

The check compares per-token log-likelihoods (what perplexity sums) with a tolerance derived
from rounding the base to the saved dtype; a deeper model with large adapter updates shows
that a correct merge passes in bf16 and fp16 and a wrong (scaled) one is refused.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from sample_sets import build_tiny_llama

from finetune.merge import PROBE_TEXTS, merge_adapter, register
from harness.ground.errors import FeynTuneError


@pytest.fixture(scope="module")
def base_and_adapter(smollm2_path, tmp_path_factory):
    """A tiny Llama and a LoRA-all adapter with non-zero B (a fresh LoRA adapter is a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("merge")
    base = build_tiny_llama(smollm2_path, root / "base")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(1)
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                      "gate_proj", "up_proj", "down_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _logits(model, tokenizer):
    ids = tokenizer(PROBE_TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_float32_model_equals_base_plus_adapter(base_and_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = base_and_adapter
    report = merge_adapter(str(base), adapter, tmp_path / "m32", dtype="float32")
    assert report["verified"] and report["logprob_shift"] <= report["tolerance"]
    tok = AutoTokenizer.from_pretrained(tmp_path / "m32")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m32", dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    a, b, c = _logits(merged, tok), _logits(unmerged, tok), _logits(plain, tok)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert (a - c).abs().max() > 1e-2  # the adapter really changes the model


def test_cli_writes_a_bf16_model_by_default(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["merge", "--base", str(base), "--adapter", str(adapter),
                              "--out", str(tmp_path / "m16")])
    assert args.func(args) == 0
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "m16" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "m16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_merge_rejects_a_folder_without_adapter(base_and_adapter, tmp_path):
    base, _ = base_and_adapter
    with pytest.raises(FeynTuneError, match="no PEFT adapter"):
        merge_adapter(str(base), tmp_path, tmp_path / "out")
    with pytest.raises(FeynTuneError, match="cannot load base model"):
        merge_adapter(str(tmp_path / "missing"), base_and_adapter[1], tmp_path / "out")


@pytest.fixture(scope="module")
def deep_base_and_large_adapter(smollm2_path, tmp_path_factory):
    """8 layers of width 128 and a LoRA-all adapter whose updates move the probe texts'
    log-likelihoods by a lot (trained adapters are not small perturbations)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("merge_deep")
    base = build_tiny_llama(smollm2_path, root / "base", layers=8, hidden=128)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                      "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_correct_merge_of_a_deep_model_is_accepted(deep_base_and_large_adapter, tmp_path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = deep_base_and_large_adapter
    report = merge_adapter(str(base), adapter, tmp_path / dtype, dtype=dtype)
    assert report["verified"] and report["logprob_shift"] <= report["tolerance"]
    # the check has power: the adapter moves the log-likelihoods far beyond the tolerance
    assert report["adapter_effect"] > 20 * report["tolerance"]
    assert report["base_rounding_shift"] > 0 and report["probe_tokens"] > 60
    # perplexity of the saved model, computed a second way (the model's own loss)
    tok = AutoTokenizer.from_pretrained(tmp_path / dtype)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / dtype, dtype=getattr(torch, dtype))
    nll, n = 0.0, 0
    for text in PROBE_TEXTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = saved(input_ids=ids, labels=ids).loss.float()
        nll += float(loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    assert n == report["probe_tokens"]
    assert math.exp(nll / n) == pytest.approx(report["perplexity_merged"], rel=1e-3)


def test_wrong_merge_is_refused_and_nothing_is_written(deep_base_and_large_adapter, tmp_path,
                                                       monkeypatch):
    from peft.tuners.lora.layer import Linear

    base, adapter = deep_base_and_large_adapter
    right = Linear.get_delta_weight
    # a merge that folds in 1.5 x the update (e.g. a wrong alpha / r scaling)
    monkeypatch.setattr(Linear, "get_delta_weight", lambda self, name: 1.5 * right(self, name))
    with pytest.raises(FeynTuneError, match=r"log-likelihoods differ .* not saved"):
        merge_adapter(str(base), adapter, tmp_path / "wrong", dtype="bfloat16")
    assert not (tmp_path / "wrong").exists()


def test_tolerance_is_the_rounding_shift_of_the_base_plus_float32_reordering():
    from finetune.merge import tolerance

    assert tolerance(0.01, 10.0) == pytest.approx(0.03 + 640 * 2 ** -23)
    assert tolerance(0.0, 0.5) == pytest.approx(64 * 2 ** -23)  # float32: reordering only
