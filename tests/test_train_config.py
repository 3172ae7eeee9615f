"""The paper preset resolves to the reference recipe (docs/reference.md, "Training"), value by value."""

from __future__ import annotations

import argparse

import pytest
import yaml

from finetune import config as C
from finetune.compat import for_installed
from finetune.train import add_arguments, overrides_from_args
from harness.ground.errors import FeynTuneError


def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_paper_preset_is_the_reference_recipe():
    cfg = C.resolve("paper")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.bias) == (8, 32, 0.05, "none")
    assert cfg.lora.targets["qkv"] == ["q_proj", "k_proj", "v_proj"]
    assert cfg.lora.targets["all"] == ["q_proj", "k_proj", "v_proj", "o_proj",
                                       "gate_proj", "up_proj", "down_proj"]
    assert (cfg.quant.method, cfg.quant.double_quant, cfg.quant.compute_dtype) == ("nf4", True, "auto")
    assert cfg.precision == "auto"  # bf16 wherever the hardware has it
    ds = cfg.data_settings
    assert (ds.add_bos, ds.add_eos, ds.pad_to_multiple_of, ds.group_by_length) == (True, True, 8, False)
    assert (cfg.epochs, cfg.per_device_batch_size, cfg.seed, cfg.evaluations) == (4, 16, 42, 10)


def test_paper_trainer_arguments_value_by_value():
    cfg = C.resolve("paper")
    targs = C.trainer_arguments(cfg, "out", bf16=True, use_cpu=False)
    expected = {
        "optim": "adamw_torch", "learning_rate": 3e-4, "adam_beta1": 0.9, "adam_beta2": 0.95,
        "adam_epsilon": 1e-5, "weight_decay": 0.1, "warmup_steps": 0.1,
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.01},
        "num_train_epochs": 4, "per_device_train_batch_size": 16, "max_grad_norm": 1.0,
        "seed": 42, "bf16": True, "train_sampling_strategy": "random", "eval_on_start": True,
        "gradient_accumulation_steps": 1,
    }
    for key, value in expected.items():
        assert targs[key] == value, key
    assert C.trainer_arguments(cfg, "out", bf16=False, use_cpu=True)["bf16"] is False


def test_schedule_warms_up_over_ten_percent_then_decays_to_one_percent():
    import torch
    from transformers import TrainingArguments, get_scheduler

    cfg = C.resolve("paper")
    args = TrainingArguments(**for_installed(C.trainer_arguments(cfg, "unused", bf16=False,
                                                                 use_cpu=True)))
    total = 1000
    assert args.get_warmup_steps(total) == 100
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(total),
                          num_training_steps=total, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    lrs.append(sched.get_last_lr()[0])
    assert lrs[0] == 0.0 and lrs[50] == pytest.approx(1.5e-4)
    assert lrs[100] == pytest.approx(3e-4)
    assert lrs[-1] == pytest.approx(3e-6)  # 1% of the peak
    assert min(lrs[100:]) == pytest.approx(3e-6)


def test_flags_override_single_values(tmp_path):
    args = _parse(["--base", "m", "--data", "d", "--lora", "qkv", "--out", str(tmp_path / "o"),
                   "--batch-size", "4", "--quantize", "none", "--group-by-length", "--max-steps", "7"])
    cfg = C.resolve("paper", None, overrides_from_args(args))
    assert cfg.per_device_batch_size == 4 and cfg.quant.method == "none" and cfg.max_steps == 7
    assert cfg.lora.variant == "qkv" and cfg.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert cfg.data_settings.group_by_length is True
    targs = C.trainer_arguments(cfg, "o", bf16=False, use_cpu=True)
    assert targs["train_sampling_strategy"] == "group_by_length" and targs["max_steps"] == 7
    # everything not given keeps the preset's value
    paper = C.resolve("paper")
    assert cfg.optim == paper.optim and cfg.lora.r == paper.lora.r and cfg.epochs == 4


def test_config_file_overrides_nested_keys_and_round_trips(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"optim": {"learning_rate": 1e-4}, "lora": {"r": 16}}))
    cfg = C.resolve("paper", run)
    assert cfg.optim.learning_rate == 1e-4 and cfg.lora.r == 16
    assert cfg.optim.betas == [0.9, 0.95]
    stored = tmp_path / "config.yaml"
    stored.write_text(yaml.safe_dump(cfg.to_dict()))
    assert C.resolve("paper", stored).to_dict() == cfg.to_dict()


def test_unknown_configuration_keys_are_errors(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"optim": {"learning_rte": 1e-4}}))
    with pytest.raises(FeynTuneError, match="learning_rte"):
        C.resolve("paper", run)
    with pytest.raises(FeynTuneError, match="unknown preset"):
        C.resolve("nonexistent")
    with pytest.raises(FeynTuneError, match="LoRA variant"):
        C.resolve("paper", None, {"lora": {"variant": "mlp"}})


@pytest.mark.parametrize("total,expected", [
    (100, [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]),
    (4, [0, 1, 2, 3, 4]),
    (9, list(range(10))),
])
def test_ten_evaluations_including_step_zero(total, expected):
    assert C.evaluation_steps(total, 10) == expected


def test_steps_follow_epochs_batch_and_world_size():
    cfg = C.resolve("paper")
    # s1 of the Aug 2024 snapshot: 73,768 training abstracts, batch 16, one device
    assert C.steps_per_epoch(73_768, cfg, 1) == 4_611
    assert C.total_steps(73_768, cfg, 1) == 4 * 4_611
    assert C.steps_per_epoch(73_768, cfg, 8) == 577
