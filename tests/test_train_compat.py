"""Training on the versions pyproject declares, and the fast preset.

transformers 5.0-5.17 name two TrainingArguments differently from the installed release
(`gradient_checkpointing`, boolean `group_by_length`); the run must resolve every name against
the installed dataclass. An older TrainingArguments is simulated here: a subclass without the
new fields whose `__init__` rejects them exactly as the old releases do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import ClassVar

import pytest
import transformers
from sample_sets import build_tiny_llama, write_short_set

from finetune import compat, memory
from finetune import config as C
from finetune.train import add_arguments, cmd_train
from harness.ground.errors import FeynTuneError

NEW_FIELDS = ("activation_checkpointing", "activation_checkpointing_kwargs",
              "train_sampling_strategy")
INSTALLED_IS_NEWEST = set(NEW_FIELDS) <= compat.field_names(transformers.TrainingArguments)


@dataclasses.dataclass
class _OlderOnly:
    group_by_length: bool = False


class OlderTrainingArguments(transformers.TrainingArguments):
    """TrainingArguments as transformers 5.0-5.17 define it: `gradient_checkpointing(_kwargs)`
    and a boolean `group_by_length`, none of the newer names."""

    __dataclass_fields__: ClassVar[dict] = {
        **{k: v for k, v in transformers.TrainingArguments.__dataclass_fields__.items()
           if k not in NEW_FIELDS},
        **_OlderOnly.__dataclass_fields__,
    }
    seen: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        for key in NEW_FIELDS:
            if key in kwargs:
                raise TypeError(f"TrainingArguments.__init__() got an unexpected keyword "
                                f"argument '{key}'")
        OlderTrainingArguments.seen.append(dict(kwargs))
        grouped = kwargs.pop("group_by_length", False)
        # map back onto the installed class, which is what really runs
        checkpointing = kwargs.pop("gradient_checkpointing", False)
        ckpt_kwargs = kwargs.pop("gradient_checkpointing_kwargs", None)
        super().__init__(**kwargs, activation_checkpointing=checkpointing,
                         activation_checkpointing_kwargs=ckpt_kwargs,
                         train_sampling_strategy="group_by_length" if grouped else "random")


def _train(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return cmd_train(p.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def short_set(sample_path, tmp_path_factory):
    return write_short_set(sample_path, tmp_path_factory.mktemp("data") / "s1", n_train=8,
                           n_validation=4, words=16)


@pytest.fixture(scope="module")
def tiny_llama(smollm2_path, tmp_path_factory):
    return build_tiny_llama(smollm2_path, tmp_path_factory.mktemp("tiny") / "llama")


def test_newest_names_are_renamed_for_an_older_release():
    cfg = C.resolve("fast")
    targs = C.trainer_arguments(cfg, "o", bf16=False, use_cpu=True, checkpointing=True)
    older = compat.for_installed(targs, OlderTrainingArguments)
    assert not set(NEW_FIELDS) & set(older)
    assert older["gradient_checkpointing"] is True
    assert older["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert older["group_by_length"] is True
    if INSTALLED_IS_NEWEST:  # the installed release takes the newest names unchanged
        assert compat.for_installed(targs) == targs
    paper = C.trainer_arguments(C.resolve("paper"), "o", bf16=False, use_cpu=True)
    assert compat.for_installed(paper, OlderTrainingArguments)["group_by_length"] is False


def test_a_name_no_release_knows_is_a_clear_error():
    with pytest.raises(FeynTuneError, match=r"installed transformers .* no TrainingArguments field "
                                            r"'no_such_field'"):
        compat.for_installed({"output_dir": "o", "no_such_field": 1})
    with pytest.raises(FeynTuneError, match="batch_rebalance"):
        compat.for_installed({"train_sampling_strategy": "batch_rebalance"}, OlderTrainingArguments)


def test_checkpointing_methods_of_older_models():
    calls = []

    class OldModel:  # transformers <= 5.17: only the gradient_checkpointing_* methods
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(("on", gradient_checkpointing_kwargs))

        def gradient_checkpointing_disable(self):
            calls.append(("off", None))

    compat.enable_checkpointing(OldModel(), {"use_reentrant": False})
    compat.disable_checkpointing(OldModel())
    assert calls == [("on", {"use_reentrant": False}), ("off", None)]


@pytest.mark.skipif(not INSTALLED_IS_NEWEST, reason="the installed transformers is itself an "
                    "older release: every other training test runs against it")
def test_run_builds_and_trains_against_the_older_api(tiny_llama, short_set, tmp_path, monkeypatch):
    monkeypatch.setattr(compat, "training_arguments_class", lambda: OlderTrainingArguments)
    OlderTrainingArguments.seen.clear()
    with pytest.raises(TypeError, match="activation_checkpointing"):  # the crash of issue 13
        OlderTrainingArguments(output_dir="o", activation_checkpointing=True)
    out = tmp_path / "older"
    assert _train(["--base", tiny_llama, "--data", short_set, "--lora", "qkv", "--out", out,
                   "--max-steps", 1, "--batch-size", 4, "--group-by-length",
                   "--gradient-checkpointing"]) == 0
    passed = OlderTrainingArguments.seen[-1]
    assert passed["gradient_checkpointing"] is True and passed["group_by_length"] is True
    run = json.loads((out / "run.json").read_text())
    assert run["final"]["global_step"] == 1 and (out / "adapter_model.safetensors").is_file()
    assert run["training_args"]["gradient_checkpointing"] is True  # the names actually passed
    assert run["gradient_checkpointing"]["on"] is True


def test_fast_preset_is_the_paper_recipe_grouped_and_checkpointing_by_memory():
    paper, fast = C.resolve("paper").to_dict(), C.resolve("fast").to_dict()
    changed = {k for k in paper if paper[k] != fast[k]}
    assert changed == {"data_settings", "gradient_checkpointing", "dataloader_num_workers", "preset"}
    assert {k for k in paper["data_settings"]
            if paper["data_settings"][k] != fast["data_settings"][k]} == {"group_by_length"}
    assert fast["gradient_checkpointing"] == "auto" and fast["data_settings"]["group_by_length"]
    for key in ("lora", "quant", "optim", "epochs", "per_device_batch_size", "seed"):
        assert fast[key] == paper[key], key


def test_fast_preset_run_records_preset_and_checkpointing_reason(tiny_llama, short_set, tmp_path):
    out = tmp_path / "fast"
    assert _train(["--base", tiny_llama, "--data", short_set, "--lora", "all", "--out", out,
                   "--preset", "fast", "--max-steps", 1, "--batch-size", 4]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "fast" and run["config"]["preset"] == "fast"
    ckpt = run["gradient_checkpointing"]
    assert ckpt["setting"] == "auto" and ckpt["on"] is False and "CPU" in ckpt["reason"]
    expected = compat.for_installed({"train_sampling_strategy": "group_by_length",
                                     "activation_checkpointing": False})
    assert expected.items() <= run["training_args"].items()


def test_memory_rule():
    gib = memory.GIB
    # 8B LoRA-all: 21M trainable parameters -> 0.31 GiB of optimizer state
    assert memory.fits(60 * gib, 20_971_520, 80 * gib)
    assert not memory.fits(72 * gib, 20_971_520, 80 * gib)  # 72.3 > 0.9 * 80
    on_h200 = memory.decide("auto", on_gpu=True, peak_bytes=60 * gib, total_bytes=140 * gib,
                            trainable_params=20_971_520)
    assert not on_h200.on and "60.3 GiB" in on_h200.reason and "90% of 140.0 GiB" in on_h200.reason
    assert on_h200.record()["probe_peak_gib"] == 60.0
    small = memory.decide("auto", on_gpu=True, peak_bytes=60 * gib, total_bytes=40 * gib)
    assert small.on and "more than" in small.reason
    assert memory.decide("auto", on_gpu=True, total_bytes=40 * gib, out_of_memory=True).on
    assert memory.decide(True, on_gpu=True).on and not memory.decide(False, on_gpu=True).on
    assert "configuration" in memory.decide(False, on_gpu=False).reason


def test_worst_batch_holds_the_longest_abstracts(smollm2_path, sample_path, tmp_path):
    from transformers import AutoTokenizer

    from finetune import collate

    data = write_short_set(sample_path, tmp_path / "s", n_train=12, n_validation=1, words=40)
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    ds = collate.tokenize_dataset(tok, collate.read_texts(data / "train.jsonl"))
    batch = memory.worst_batch(ds, 4, collate.PaddingCollator(tok.eos_token_id, 8))
    longest = sorted(ds["length"], reverse=True)[:4]
    assert sorted(batch["attention_mask"].sum(1).tolist(), reverse=True) == longest
    assert batch["input_ids"].shape == (4, -(-longest[0] // 8) * 8)


def test_unknown_checkpointing_setting_is_rejected():
    with pytest.raises(FeynTuneError, match="true, false or auto"):
        C.resolve("paper", None, {"gradient_checkpointing": "sometimes"})
    with pytest.raises(FeynTuneError, match="true, false or auto"):
        C.resolve("paper", None, {"gradient_checkpointing": 1})


class _FakeCuda:
    """The torch.cuda calls of the probe, on a CPU: a fixed peak, RNG state kept apart."""

    def __init__(self, monkeypatch, peak):
        import torch

        self.reset = 0
        for name, fn in {"empty_cache": lambda: None, "synchronize": lambda device=None: None,
                         "reset_peak_memory_stats": self._reset,
                         "max_memory_allocated": lambda device=None: peak,
                         "get_rng_state_all": lambda: ["cuda-rng"],
                         "set_rng_state_all": lambda states: None}.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def _reset(self, device=None):
        self.reset += 1


def test_probe_leaves_the_run_as_it_was(tiny_llama, short_set, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune import collate

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    ds = collate.tokenize_dataset(tok, collate.read_texts(short_set / "train.jsonl"))
    batch = memory.worst_batch(ds, 4, collate.PaddingCollator(tok.eos_token_id, 8))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05,
                                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.eval()
    fake = _FakeCuda(monkeypatch, peak=5 * memory.GIB)
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    peak, oom = memory.probe_peak(model, batch)
    assert (peak, oom) == (5 * memory.GIB, False) and fake.reset == 1
    assert torch.equal(torch.get_rng_state(), rng)  # LoRA dropout drew numbers; put back
    assert all(p.grad is None for p in model.parameters())  # no gradient left for step 1
    assert not model.training

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "forward", out_of_memory)
    assert memory.probe_peak(model, batch) == (None, True)
    assert torch.equal(torch.get_rng_state(), rng)


def test_checkpointing_flags_override_either_preset(tmp_path):
    from finetune.train import overrides_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    common = ["--base", "m", "--data", "d", "--lora", "all", "--out", str(tmp_path / "o")]
    off = overrides_from_args(p.parse_args([*common, "--no-gradient-checkpointing"]))
    on = overrides_from_args(p.parse_args([*common, "--gradient-checkpointing"]))
    neither = overrides_from_args(p.parse_args(common))
    assert C.resolve("paper", None, off).gradient_checkpointing is False
    assert C.resolve("fast", None, on).gradient_checkpointing is True
    assert C.resolve("fast", None, neither).gradient_checkpointing == "auto"
    fast = C.resolve("fast")
    assert C.trainer_arguments(fast, "o", bf16=True, use_cpu=False)["activation_checkpointing"] is False
    forced = C.trainer_arguments(fast, "o", bf16=True, use_cpu=False, checkpointing=True)
    assert forced["activation_checkpointing_kwargs"] == {"use_reentrant": False}
