"""End-to-end QLoRA runs on the CPU: SmolLM2 and tiny random Llamas, NF4, real abstracts."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sample_sets import build_tiny_llama, write_short_set

from finetune.train import (
    TrainingInterrupted,
    add_arguments,
    cmd_train,
    resolve_from_args,
    run_training,
)
from harness.ground.errors import FeynTuneError

REPO = Path(__file__).resolve().parents[1]
# Short runs: no activation checkpointing (pure overhead at this size), 3 evaluations.
FAST = {"gradient_checkpointing": False, "evaluations": 3, "per_device_eval_batch_size": 4}


def _args(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([str(a) for a in argv])


def train(argv):
    return cmd_train(_args(argv))


@pytest.fixture(scope="module")
def short_set(sample_path, tmp_path_factory):
    return write_short_set(sample_path, tmp_path_factory.mktemp("data") / "s1", n_train=8,
                           n_validation=4, words=16)


@pytest.fixture(scope="module")
def fast_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


@pytest.fixture(scope="module")
def tiny_llama(smollm2_path, tmp_path_factory):
    # SmolLM2's 49k-token vocabulary keeps the output layer, the bulk of the work, small
    return build_tiny_llama(smollm2_path, tmp_path_factory.mktemp("tiny") / "llama")


def _log_history(out: Path) -> list[dict]:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((ckpts[-1] / "trainer_state.json").read_text())["log_history"]


def _curves(out: Path) -> list[dict]:
    with open(out / "curves.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smollm2_lora_qkv_nf4_short_run(smollm2_path, short_set, fast_yaml, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qkv"
    (short_set.parent / "manifest.json").write_text('{"set": "s1"}')
    assert train(["--base", smollm2_path, "--data", short_set, "--lora", "qkv", "--out", out,
                  "--max-steps", 2, "--batch-size", 2, "--config", fast_yaml]) == 0

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj"}
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 32, 0.05)
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == str(smollm2_path) and run["world_size"] == 1
    assert run["quantization"] == "nf4" and run["compute_dtype"] == "float32"  # CPU
    assert run["attn_implementation"] == "sdpa"
    assert run["data"]["manifest"]["sha256"] and run["data"]["files"]["train"]["sha256"]
    assert run["packages"]["transformers"] and run["packages"]["bitsandbytes"]
    targs = run["training_args"]
    assert (targs["learning_rate"], targs["adam_beta2"], targs["warmup_steps"]) == (3e-4, 0.95, 0.1)
    assert targs["per_device_train_batch_size"] == 2 and targs["max_steps"] == 2
    assert run["evaluation_steps"] == [0, 1, 2]

    rows = _curves(out)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["val_loss"] and not rows[0]["train_loss"]  # evaluation before the first step
    assert all(rows[i]["train_loss"] and rows[i]["val_loss"] for i in (1, 2))
    assert float(rows[2]["val_perplexity"]) == pytest.approx(2.718281828 ** float(rows[2]["val_loss"]))
    assert (out / "curves.png").stat().st_size > 10_000
    # every step, including those right after an evaluation, gets a gradient (bitsandbytes'
    # CPU repacking would silently cut it)
    norms = [e["grad_norm"] for e in _log_history(out) if "grad_norm" in e]
    assert len(norms) == 2 and all(n > 0 for n in norms)

    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 2849, 3278, 282, 253, 1790, 2]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, out)
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after)


def test_tiny_llama_lora_all_nf4_run_and_lm_eval_loading(tiny_llama, short_set, fast_yaml, tmp_path):
    out = tmp_path / "all"
    train(["--base", tiny_llama, "--data", short_set, "--lora", "all", "--out", out,
           "--max-steps", 2, "--batch-size", 4, "--config", fast_yaml])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"}
    run = json.loads((out / "run.json").read_text())
    assert run["steps_per_epoch"] == 2 and run["total_steps"] == 2
    assert run["data"]["manifest"] is None or run["data"]["manifest"]["sha256"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["lora"]["variant"] == "all" and resolved["per_device_batch_size"] == 4

    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_llama), peft=str(out), device="cpu", batch_size=1)
    assert type(lm.model).__name__.startswith("Peft")


def _fresh_cfg(base, data, out, steps=4):
    from finetune import config as C

    return C.resolve("paper", None, {"base": str(base), "data": str(data), "out": str(out),
                                     "lora": {"variant": "all"}, "max_steps": steps,
                                     "per_device_batch_size": 4, **FAST})


@pytest.mark.slow
def test_interrupt_and_resume_reproduce_the_uninterrupted_run(tiny_llama, short_set, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class CtrlCAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # mid second epoch (2 steps per epoch)
                os.kill(os.getpid(), signal.SIGINT)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(_fresh_cfg(tiny_llama, short_set, straight))
    with pytest.raises(TrainingInterrupted, match="step 3 of 4"):
        run_training(_fresh_cfg(tiny_llama, short_set, resumed), extra_callbacks=[CtrlCAt()])
    assert (resumed / "checkpoints" / "checkpoint-3").is_dir()
    assert not (resumed / "adapter_model.safetensors").exists()
    # resuming needs only --out: the run folder holds the configuration
    args = _args(["--out", resumed, "--resume"])
    run_training(resolve_from_args(args), resume=True)

    a = load_file(straight / "adapter_model.safetensors")
    b = load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # across an epoch boundary, LoRA dropout on
        assert (a[key] == b[key]).all(), key
    assert _curves(straight) == _curves(resumed)


@pytest.mark.slow
def test_two_cpu_processes(tiny_llama, short_set, fast_yaml, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.train", "--base", str(tiny_llama), "--data", str(short_set),
         "--lora", "qkv", "--out", str(out), "--max-steps", "2", "--batch-size", "2",
         "--num-processes", "2", "--config", str(fast_yaml)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert run["steps_per_epoch"] == 2  # 8 abstracts / (2 per device x 2 processes)
    assert run["final"]["global_step"] == 2 and (out / "adapter_model.safetensors").is_file()


def test_bad_inputs_fail_before_any_work(tiny_llama, short_set, tmp_path):
    out = tmp_path / "never"
    common = ["--lora", "qkv", "--out", out]
    no_val = tmp_path / "no_val"
    no_val.mkdir()
    (no_val / "train.jsonl").write_text((short_set / "train.jsonl").read_text())
    with pytest.raises(FeynTuneError, match="validation.jsonl"):
        train(["--base", tiny_llama, "--data", no_val, *common])
    with pytest.raises(FeynTuneError, match="cannot load base model"):
        train(["--base", tmp_path / "no-such-model", "--data", short_set, *common])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    (empty / "validation.jsonl").write_text((short_set / "validation.jsonl").read_text())
    with pytest.raises(FeynTuneError, match="holds no abstracts"):
        train(["--base", tiny_llama, "--data", empty, *common])
    bad_targets = tmp_path / "targets.yaml"
    bad_targets.write_text(yaml.safe_dump({"lora": {"targets": {"qkv": ["q_proj", "query_key_value"]}}}))
    with pytest.raises(FeynTuneError, match="query_key_value.*linear layers are: .*q_proj"):
        train(["--base", tiny_llama, "--data", short_set, *common, "--config", bad_targets])
    with pytest.raises(FeynTuneError, match="no checkpoint"):
        train(["--base", tiny_llama, "--data", short_set, *common, "--resume"])
    with pytest.raises(FeynTuneError, match="--lora"):
        train(["--base", tiny_llama, "--data", short_set, "--out", out])
    assert not out.exists()


def test_cli_reports_bad_input_as_a_message(tmp_path, capsys):
    from harness.cli import main

    rc = main(["train", "--base", str(tmp_path), "--data", str(tmp_path / "nodata"), "--lora", "qkv",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "feyntune train: error: data folder" in err and "Traceback" not in err
