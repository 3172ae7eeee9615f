"""`feyntune merge`: the merged 16-bit model computes what base + adapter computes."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from sample_sets import build_tiny_llama

from finetune.merge import PROBE_TEXTS, merge_adapter, register
from harness.errors import FeynTuneError


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
    assert report["verified"] and report["max_abs_logit_difference"] <= report["tolerance"]
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
