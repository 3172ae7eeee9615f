"""What a new user's probes of `feyntune reproduce`, `feyntune eval --model vllm` and the
leaderboard found (issue 28), each held to a clear line or the right behaviour: one seed per
document for vLLM's sampling, bad values refused before any work, adapters of another base
size found in the pre-flight, merges made lazily and removed when their model fails, results
of another adapter content or seed not reused, the leaderboard's backend, dtype, caveat and
footer, and `--batch-size auto` on a CPU. No test here starts an engine or evaluates a model
(the ones that do are in test_reproduce.py and test_reproduce_vllm.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import cli
from harness.evaluate import backends
from harness.ground.errors import FeynTuneError
from harness.study import registry as study
from harness.study import reproduce


def _one_line(capsys, message: str) -> str:
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _save_adapter(model, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smollm2_path):
    """A LoRA adapter of SmolLM2 (random LoRA weights: what matters here is its shapes), and one
    of a smaller Llama of the same architecture (another hidden size), as a user's adapter for
    another base size would be."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    smol = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    fits = _save_adapter(smol, root / "smol")
    small = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=256))
    other = _save_adapter(small, root / "other-size")
    return SimpleNamespace(fits=fits, other=other)


@pytest.fixture
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"2401.0000{i}", "abstract": (
        f"We compute the one-loop partition function of a string model number {i} and find "
        "agreement with the dual conformal field theory at strong coupling.")}) + "\n"
        for i in range(3)), encoding="utf-8")
    return path


def _argv(smollm2_path, tmp_path, *more) -> list[str]:
    return ["reproduce", "--base", str(smollm2_path), "--runs", str(tmp_path / "runs"),
            "--work", str(tmp_path / "work"), *more]


# ---- 1: one sampling seed per document ----------------------------------------------------------

def _generation_requests(docs: Path, gen_kwargs: dict, reverse: bool = False) -> dict:
    from lm_eval.tasks import TaskManager

    from harness.evaluate.command import register_project_models
    from harness.ground.subtasks import GEN_TASK, TASK_DIR

    register_project_models()
    if reverse:
        lines = docs.read_text().splitlines()
        docs = docs.with_name("reversed.jsonl")
        docs.write_text("\n".join(reversed(lines)) + "\n")
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False,
                          metadata={"hepth_data": str(docs)})
    task = manager.load([GEN_TASK])["tasks"][GEN_TASK]
    task.set_config(key="generation_kwargs", value=gen_kwargs, update=True)
    task.build_all_requests(rank=0, world_size=1)
    return {request.doc["id"]: request.arguments[1] for request in task.instances}


def test_each_document_samples_with_its_own_seed_and_a_rerun_repeats_it(docs):
    """vLLM seeds each request with the seed in its generation arguments: the task gives each
    document its own, from the run seed and the document, the same in any order."""
    engine = backends.Engine("vllm", "float16", 1234, max_model_len=100, memory_share=0.1)
    assert "seed=1234" in engine.gen_kwargs(0.8, 8)
    first = _generation_requests(docs, {"seed": 1234})
    seeds = {doc_id: kwargs["seed"] for doc_id, kwargs in first.items()}
    assert len(seeds) == 3 and len(set(seeds.values())) == 3
    again = _generation_requests(docs, {"seed": 1234}, reverse=True)
    assert {doc_id: kwargs["seed"] for doc_id, kwargs in again.items()} == seeds
    other = _generation_requests(docs, {"seed": 7})
    assert all(other[doc_id]["seed"] != seed for doc_id, seed in seeds.items())
    # hf: no seed in its generation arguments (lm-eval seeds torch once per run), none added
    hf = backends.Engine("hf", "float16", 1234)
    assert "seed" not in hf.gen_kwargs(0.8, 8)
    assert all("seed" not in kwargs for kwargs in _generation_requests(docs, {}).values())


# ---- 2: the engine's processes end when its model is done -----------------------------------------

END_CHILDREN = """
import subprocess, sys, time
from multiprocessing import shared_memory
segment = shared_memory.SharedMemory(create=True, size=16)  # starts multiprocessing's tracker
segment.close()
segment.unlink()
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
from harness.study.reproduce import end_child_processes
started = time.monotonic()
end_child_processes(grace_seconds=20)
print(round(time.monotonic() - started, 1), engine.poll() is not None)
"""


def test_ending_the_engine_does_not_wait_on_the_resource_tracker():
    """After each vLLM model the lm-eval child ends what lm-eval left running. multiprocessing's
    resource tracker ignores SIGTERM, so ending it too waited out the whole grace period (30 s
    per model) before killing it; it is left to end by itself."""
    import subprocess
    import sys
    import time

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", END_CHILDREN], capture_output=True, text=True,
                          timeout=60, check=True)
    seconds, engine_ended = done.stdout.split()
    assert engine_ended == "True"
    assert float(seconds) < 5 and time.monotonic() - started < 15, done.stdout


# ---- 3 and 6: bad values, one line before any work ------------------------------------------------

@pytest.mark.parametrize("more, message", [
    (["--max-new-tokens", "-5"], "--max-new-tokens -5: must be at least 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
    (["--batch-size", "abc"], "--batch-size abc: a whole number of at least 1, auto or auto:N"),
    (["--batch-size", "0"], "--batch-size 0: a whole number of at least 1"),
    (["--batch-size", "auto:x"], "--batch-size auto:x:"),
    (["--memory-share", "0.5"], "--memory-share applies to --backend vllm only"),
    (["--tensor-parallel", "2"], "--tensor-parallel applies to --backend vllm only"),
    (["--data-parallel", "1"], "--data-parallel applies to --backend vllm only"),
    (["--backend", "vllm", "--memory-share", "0"], "--memory-share 0: must be above 0"),
    (["--backend", "vllm", "--tensor-parallel", "0"], "--tensor-parallel 0: must be at least 1"),
    (["--backend", "vllm", "--device", "cuda:1"], "--device cuda:1: vLLM chooses its devices"),
    (["--adapter", "s33=/tmp/a"], "no study model 's33'"),
    (["--models", "s3", "--adapter", "s5=/tmp/a"],
     "--adapter s5=/tmp/a: s5 is not among the models of this run"),
    (["--adapter", "Base=/tmp/a"], "Base is the base model; give its folder with --base"),
])
def test_values_that_were_substituted_or_ignored_are_one_line(more, message, smollm2_path,
                                                               tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce.backends, "require", lambda backend: None)
    for dry in ([], ["--dry-run"]):
        assert cli.main(_argv(smollm2_path, tmp_path, *more, *dry)) == 2
        _one_line(capsys, message)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "work").exists()


def test_models_and_adapter_names_in_any_case(smollm2_path, tmp_path, capsys, adapters):
    assert cli.main(_argv(smollm2_path, tmp_path, "--models", "S3,s3_QKV", "--adapter",
                          f"S3={adapters.fits}", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "3 model(s)" in out and f"  s3       LoRA-all s3      {adapters.fits}" in out
    assert "  s3_qkv " in out


def test_adapter_of_another_base_size_is_one_line_before_any_work(smollm2_path, tmp_path,
                                                                  capsys, adapters):
    argv = _argv(smollm2_path, tmp_path, "--models", "s3", "--adapter", f"s3={adapters.other}")
    assert cli.main(argv) == 2
    err = _one_line(capsys, f"adapter s3 ({adapters.other}) does not fit base model "
                    f"{smollm2_path}")
    assert "model.layers.0.self_attn.q_proj has 64 inputs, the base's 576" in err  # named
    assert not (tmp_path / "runs").exists() and not (tmp_path / "work").exists()


def test_unwritable_work_is_one_line_before_the_base_model_is_evaluated(
        smollm2_path, tmp_path, capsys, adapters, monkeypatch):
    from harness.evaluate import command

    monkeypatch.setattr(command, "run_lm_eval",
                        lambda argv: pytest.fail("a model was evaluated"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["reproduce", "--base", str(smollm2_path), "--models", "s3", "--adapter",
            f"s3={adapters.fits}", "--runs", str(tmp_path / "runs"), "--work",
            str(blocker / "work")]
    assert cli.main(argv) == 2
    _one_line(capsys, f"--work {blocker / 'work'} cannot be written")


def test_tensor_parallel_beyond_the_devices_is_one_line_before_any_merge(
        smollm2_path, tmp_path, capsys, adapters, monkeypatch):
    monkeypatch.setattr(reproduce.backends, "require", lambda backend: None)
    monkeypatch.setattr(backends, "cuda_devices", lambda: 0)
    argv = _argv(smollm2_path, tmp_path, "--models", "s3", "--adapter", f"s3={adapters.fits}",
                 "--backend", "vllm", "--tensor-parallel", "4", "--memory-share", "0.01")
    assert cli.main(argv) == 2
    _one_line(capsys, "--tensor-parallel x --data-parallel = 4 needs that many GPUs; this "
              "machine has no GPU")
    assert not (tmp_path / "work").exists()


# ---- 4: merged lazily, removed when the model fails -----------------------------------------------

@pytest.mark.parametrize("keep", [False, True])
def test_merges_are_made_just_before_their_model_and_removed_when_it_fails(
        keep, smollm2_path, tmp_path, capsys, adapters, docs, monkeypatch):
    import finetune.merge
    from harness.evaluate import command

    events = []

    def merge(base, adapter, out, dtype):
        events.append(("merge", Path(out).name.split("-")[0]))
        (Path(out) / "config.json").write_text("{}")

    def run(argv):
        weights = argv[argv.index("--model_args") + 1].split(",")[0]
        events.append(("evaluate", "merged" if str(tmp_path / "work") in weights else "base"))
        return 1  # every model fails, as with --tensor-parallel 4 on a CPU

    monkeypatch.setattr(finetune.merge, "merge_adapter", merge)
    monkeypatch.setattr(command, "run_lm_eval", run)
    argv = _argv(smollm2_path, tmp_path, "--models", "s3,s3_qkv", "--adapter",
                 f"s3={adapters.fits}", "--adapter", f"s3_qkv={adapters.fits}",
                 "--data", str(docs), "--batch-size", "2", "--dtype", "float32",
                 *(["--keep-merged"] if keep else []))
    assert cli.main(argv) == 2
    assert "3 model(s) failed" in capsys.readouterr().err
    assert events == [("evaluate", "base"), ("merge", "s3"), ("evaluate", "merged"),
                      ("merge", "s3_qkv"), ("evaluate", "merged")]
    left = sorted(p.name.split("-")[0] for p in (tmp_path / "work").iterdir())
    assert left == (["s3", "s3_qkv"] if keep else [])


# ---- 7: results of another adapter content, seed or SemScore model are not reused ---------------

def test_the_run_marker_holds_adapter_content_seed_and_semscore_model(tmp_path, monkeypatch,
                                                                      adapters):
    import shutil

    from harness.runs import lmeval_outputs

    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    adapter = tmp_path / "s3"
    shutil.copytree(adapters.fits, adapter)
    registry = study.load()
    models = reproduce.select_models(registry, "s3")
    settings = {"dtype": "float16", "limit": 3, "max_new_tokens": 8, "data": None,
                "backend": "hf", "seed": 1234, "semscore_model": None}

    def marker(**changed):
        (_, item) = reproduce.plan(models, "base", None, {"s3": str(adapter)}, tmp_path / "runs",
                                   (reproduce.PPL_TASK,), {**settings, **changed})
        return item.marker

    before = marker()
    assert before["seed"] == 1234 and "semscore_model" in before
    assert len(before["adapter_sha256"]) == 64 and before["adapter"] == str(adapter)
    assert (tmp_path / "home" / "adapter-digests.json").is_file()  # hashed once, then cached
    assert marker() == before
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")  # retrained in the same folder
    after = marker()
    assert after["adapter_sha256"] != before["adapter_sha256"]

    def done(recorded, wanted):
        run = SimpleNamespace(study=recorded, samples={reproduce.PPL_TASK: []})
        monkeypatch.setattr(lmeval_outputs, "scan",
                            lambda out, since=None: SimpleNamespace(runs=[run]))
        return reproduce.finished_tasks(tmp_path, wanted)

    assert done(after, after) == {reproduce.PPL_TASK}
    assert done(before, after) == set()  # another adapter content
    assert done(after, marker(seed=7)) == set()
    assert done(after, marker(semscore_model="minilm")) == set()
    # a marker written before these keys existed: not this run's result, and no crash
    old = {k: v for k, v in after.items() if k not in ("seed", "semscore_model",
                                                        "adapter_sha256", "backend")}
    assert done(old, after) == set()


# ---- 5: `feyntune eval --model vllm` -----------------------------------------------------------

def test_eval_with_vllm_takes_the_safe_memory_share_and_checks_it(monkeypatch, capsys,
                                                                  smollm2_path):
    from harness.evaluate.command import check_run_arguments

    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    monkeypatch.setattr(backends, "on_cuda", lambda: False)
    args = argparse.Namespace(model="vllm", model_args={"pretrained": str(smollm2_path)},
                              limit=None, tasks=["hepth_completion_gen"], metadata=None)
    monkeypatch.setattr("harness.evaluate.command._check_documents", lambda args: None)
    check_run_arguments(args)
    share = args.model_args["gpu_memory_utilization"]
    assert share == backends.default_memory_share() and share < 0.9
    assert "gpu_memory_utilization=" in capsys.readouterr().err
    args.model_args["gpu_memory_utilization"] = "1.0"  # all of the RAM is never free
    with pytest.raises(FeynTuneError, match="--model_args gpu_memory_utilization 1 asks for"):
        check_run_arguments(args)


def test_eval_checks_the_documents_before_any_model_loads(monkeypatch, capsys, smollm2_path,
                                                          tmp_path):
    from lm_eval._cli.harness import HarnessCLI

    monkeypatch.setattr(HarnessCLI, "execute",
                        lambda self, args: pytest.fail("a model was loaded"))
    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    argv = ["eval", "--model", "vllm", "--model_args",
            f"pretrained={smollm2_path},gpu_memory_utilization=0.01", "--tasks",
            "hepth_completion", "--metadata", json.dumps({"hepth_data": str(tmp_path / "none")})]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"hep-th documents from metadata hepth_data={tmp_path / 'none'}" in err
    assert "does not exist" in err and "Traceback" not in err


# ---- 10: --batch-size auto on a CPU -------------------------------------------------------------

def test_batch_size_auto_on_a_cpu_is_a_fixed_batch_said_on_screen(monkeypatch, capsys,
                                                                  smollm2_path, tmp_path):
    monkeypatch.setattr(backends, "on_cuda", lambda: False)
    size, note = backends.get("hf").batch_size("auto", None)
    assert size == str(backends.HF_CPU_BATCH_SIZE) and "does not end" in note
    assert backends.get("hf").batch_size("auto", "cuda:0") == ("auto", None)
    assert backends.get("hf").batch_size("16", None) == ("16", None)
    assert backends.get("vllm").batch_size("auto", None) == ("auto", None)  # vLLM schedules
    # decided where the model runs: at its evaluation, said on screen ...
    opts = SimpleNamespace(engine=None, batch_size="auto", device=None)
    assert reproduce.run_batch_size(opts) == str(backends.HF_CPU_BATCH_SIZE)
    assert f"using {backends.HF_CPU_BATCH_SIZE} here (--batch-size N to choose)" \
        in capsys.readouterr().out
    # ... not while planning, which for SLURM happens on a login node without the jobs' GPUs
    assert cli.main(_argv(smollm2_path, tmp_path, "--dry-run")) == 0
    assert "using" not in capsys.readouterr().out


# ---- 8: the leaderboard ------------------------------------------------------------------------

def test_leaderboard_rows_name_backend_and_dtype():
    from harness.leaderboard import rows
    from harness.runs import lmeval_outputs
    from harness.runs.identity import ModelIdentity

    settings = lmeval_outputs._settings({"config": {"model": "vllm", "model_args":
                                                    "pretrained=/m,dtype=float16,seed=1"}})
    run = lmeval_outputs.Run("r", ModelIdentity(base="/m"), None, settings, {})
    row = rows.measured_row(run, "m", None)
    assert (row["backend"], row["dtype"]) == ("vllm", "float16")
    assert {"backend", "dtype", "reported_caveat"} <= set(rows.COLUMN_KEYS)


def test_measured_rows_of_another_setting_carry_a_caveat():
    from harness.leaderboard import compare, render

    registry = study.load()
    row = {"base_model": "SmolLM2-135M-Instruct", "documents": 3, "dtype": "float32"}
    text = compare.caveat(row, registry)
    assert text == ("base SmolLM2-135M-Instruct, not meta-llama/Llama-3.1-8B; 3 of the 15,808 "
                    "published documents; float32, not float16")
    same = {"base_model": "Llama-3.1-8B", "documents": 15808, "dtype": "float16"}
    assert compare.caveat(same, registry) is None
    from harness.leaderboard.rows import COLUMN_KEYS

    measured = {**dict.fromkeys(COLUMN_KEYS), "model": "m", "reported_ppl": 9.8,
                "reported_caveat": text}
    md = render.to_markdown([measured], [], [], [], "study.yaml")
    assert "**Caveat**" in md and text in md


def test_leaderboard_footer_is_the_command_that_was_run(tmp_path, monkeypatch):
    from harness.leaderboard.command import build

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my runs").mkdir()
    build(Path("my runs"), tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "Regenerate with `feyntune leaderboard --runs 'my runs' --out board`." in md
    elsewhere = tmp_path.parent / f"{tmp_path.name}-board"
    try:
        build(tmp_path / "my runs", elsewhere)
        assert f"--out {elsewhere}`" in (elsewhere / "leaderboard.md").read_text()
    finally:
        import shutil

        shutil.rmtree(elsewhere, ignore_errors=True)
