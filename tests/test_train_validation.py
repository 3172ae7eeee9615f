"""Short validation for smoke runs: `--eval-documents N` and `--evaluations N`, what run.json
records of the passes, and the progress bar's account of a pass while it runs."""

from __future__ import annotations

import argparse
import json

import pytest
from sample_sets import build_tiny_llama, write_short_set

from finetune import config as C
from finetune.train import add_arguments, cmd_train, overrides_from_args
from harness.ground.errors import FeynTuneError


def _args(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def short_set(sample_path, tmp_path_factory):
    return write_short_set(sample_path, tmp_path_factory.mktemp("data") / "s1", n_train=8,
                           n_validation=6, words=16)


@pytest.fixture(scope="module")
def tiny_llama(smollm2_path, tmp_path_factory):
    return build_tiny_llama(smollm2_path, tmp_path_factory.mktemp("tiny") / "llama")


def test_paper_preset_validates_on_the_whole_split_ten_times():
    cfg = C.resolve("paper")
    assert cfg.evaluations == 10 and cfg.eval_documents is None
    assert C.evaluation_steps(100, cfg.evaluations)[0] == 0


def test_flags_set_evaluations_and_documents():
    args = _args(["--out", "x", "--evaluations", 2, "--eval-documents", 5])
    cfg = C.resolve("paper", None, overrides_from_args(args))
    assert (cfg.evaluations, cfg.eval_documents) == (2, 5)
    # unset flags leave the preset's values alone
    untouched = C.resolve("paper", None, overrides_from_args(_args(["--out", "x"])))
    assert (untouched.evaluations, untouched.eval_documents) == (10, None)


@pytest.mark.parametrize("overrides, message", [
    ({"eval_documents": 0}, "eval_documents must be a whole number of at least 1"),
    ({"eval_documents": True}, "eval_documents must be a whole number"),
    ({"eval_documents": "all"}, "eval_documents must be a whole number"),
    ({"evaluations": 0}, "evaluations must be a whole number of at least 1"),
    ({"evaluations": 2.5}, "evaluations must be a whole number"),
])
def test_bad_validation_settings_are_refused(overrides, message):
    with pytest.raises(FeynTuneError, match=message):
        C.resolve("paper", None, overrides)


def test_more_documents_than_the_split_holds_is_refused_before_any_work(tiny_llama, short_set,
                                                                         tmp_path):
    out = tmp_path / "never"
    with pytest.raises(FeynTuneError, match=r"eval_documents 7: .*validation.jsonl holds only 6"):
        cmd_train(_args(["--base", tiny_llama, "--data", short_set, "--lora", "qkv", "--out", out,
                         "--eval-documents", 7]))
    assert not out.exists()


def test_short_validation_is_done_recorded_and_shown(tiny_llama, short_set, tmp_path, capsys):
    out = tmp_path / "run"
    assert cmd_train(_args([
        "--base", tiny_llama, "--data", short_set, "--lora", "qkv", "--out", out,
        "--quantize", "none", "--no-gradient-checkpointing", "--max-steps", 4, "--batch-size", 4,
        "--evaluations", 2, "--eval-documents", 3])) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["validation"] == {"documents_per_pass": 3, "split_documents": 6, "passes": 2,
                                 "pass_steps": [0, 4]}
    assert run["evaluation_steps"] == [0, 4] and run["examples"]["validation"] == 3
    assert run["config"]["eval_documents"] == 3 and run["config"]["evaluations"] == 2
    # eval batch = train batch = 4: three documents make one batch per pass
    shown = capsys.readouterr()
    assert "validating 0/3 docs" in shown.err and "validating 3/3 docs, batch 1/1" in shown.err
    assert shown.out.count("validation loss") == 2  # tqdm.write: one line per finished pass


def test_the_progress_label_counts_documents_and_batches():
    from types import SimpleNamespace

    from finetune.train_callbacks import TokenProgress

    shown = []
    progress = TokenProgress(validation_documents=10)
    progress.bar = SimpleNamespace(set_description_str=shown.append)
    args = SimpleNamespace(per_device_eval_batch_size=4, world_size=1)
    state = control = None
    progress._validation_started(args)
    for _ in range(3):
        progress.on_prediction_step(args, state, control, eval_dataloader=[0, 1, 2])
    progress.on_evaluate(args, state, control)
    assert shown == ["validating 0/10 docs", "validating 4/10 docs, batch 1/3",
                     "validating 8/10 docs, batch 2/3", "validating 10/10 docs, batch 3/3",
                     "training"]
