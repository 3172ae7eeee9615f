"""`feyntune reproduce --executor slurm|local` without a cluster or a model run: the per-model claim,
the SLURM array as submitit writes it for a fake `sbatch`, and the options' one-line errors. The
local executor's end-to-end run against the sequential one is in test_reproduce.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_commands import put_on_path

from harness import cli
from harness.ground.errors import FeynTuneError
from harness.study import claims, executors, fanout, reproduce
from harness.study.jobs import Outcome, State


@pytest.fixture
def live_process():
    """Another live process of this host, to own claims."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def write_claim(folder: Path, pid: int, token: str = "theirs") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / claims.CLAIM_FILE
    path.write_text(json.dumps({"host": claims.socket.gethostname(), "pid": pid, "job": None,
                                "since": "earlier", "token": token}))
    return path


# ---- claims -------------------------------------------------------------------------------------

def test_a_live_owner_keeps_its_claim(tmp_path, live_process):
    path = write_claim(tmp_path / "s3", live_process.pid)
    refused = rf"s3 is being evaluated by another run .*pid {live_process.pid}"
    with pytest.raises(claims.Claimed, match=refused), claims.claim(tmp_path / "s3"):
        pass
    assert json.loads(path.read_text())["token"] == "theirs"  # not removed, not changed
    assert claims.holder(tmp_path / "s3")["pid"] == live_process.pid


def test_stale_claims_are_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_claim(tmp_path / "s3", dead.pid)  # its process has ended
    assert claims.holder(tmp_path / "s3") is None
    with claims.claim(tmp_path / "s3") as mine:
        assert json.loads((tmp_path / "s3" / claims.CLAIM_FILE).read_text()) == mine
        assert mine["pid"] == os.getpid()
    assert not (tmp_path / "s3" / claims.CLAIM_FILE).exists()
    assert [p.name for p in (tmp_path / "s3").iterdir()] == []  # nothing left aside

    # a claim from another host is stale only when its heartbeat stopped
    path = write_claim(tmp_path / "s7", 1)
    record = {**json.loads(path.read_text()), "host": "other-node"}
    path.write_text(json.dumps(record))
    assert claims.holder(tmp_path / "s7")["host"] == "other-node"
    old = time.time() - claims.STALE_SECONDS - 5
    os.utime(path, (old, old))
    assert claims.holder(tmp_path / "s7") is None
    with claims.claim(tmp_path / "s7"):
        pass


def test_release_never_removes_a_claim_it_did_not_write(tmp_path):
    with claims.claim(tmp_path / "s3"):
        write_claim(tmp_path / "s3", 1, token="someone else's")  # e.g. after ours was broken
    assert json.loads((tmp_path / "s3" / claims.CLAIM_FILE).read_text())["token"] \
        == "someone else's"


def _race(folder, barrier, results):
    barrier.wait()
    try:
        with claims.claim(folder):
            time.sleep(1.0)
        results.put("won")
    except claims.Claimed:
        results.put("refused")


def test_two_processes_racing_for_one_model_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    racers = [context.Process(target=_race, args=(tmp_path / "s3", barrier, results))
              for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in racers)
    assert outcomes == ["refused", "refused", "refused", "won"]


# ---- SLURM through submitit, with fake sbatch/srun/sinfo ----------------------------------------

FAKE_SBATCH = """#!/bin/bash
# records what submitit hands to sbatch, answers like SLURM
echo "$@" >> "{record}/sbatch.args"
cp "$1" "{record}/sbatch.sh"
echo "Submitted batch job 4242"
"""
FAKE_SRUN = """#!/bin/bash
# runs the job step's command here (options dropped), as srun would on the allocated node
while [[ "$1" == --* ]]; do
  case "$1" in --unbuffered) shift ;; *) shift 2 ;; esac
done
exec "$@"
"""
FAKE_SINFO = """#!/bin/bash
printf 'gpu\\ncpu\\n'
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    return put_on_path(tmp_path, monkeypatch, {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "sinfo": FAKE_SINFO})


@pytest.fixture
def offline_models(tmp_path):
    """A base folder and two adapter folders whose configurations load (the pre-flight check
    reads them), enough for planning (no model is loaded here)."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    adapters = tmp_path / "adapters"
    for name in ("s3", "s3_qkv"):
        (adapters / name).mkdir(parents=True)
        (adapters / name / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base)}))
    return ["--base", str(base), "--adapters", str(adapters), "--models", "s3,s3_qkv",
            "--limit", "3", "--max-new-tokens", "4"]


def test_slurm_array_parameters_and_the_command_each_job_runs(
        fake_slurm, offline_models, tmp_path, capsys, live_process):
    from submitit.core.utils import DelayedSubmission

    runs = tmp_path / "runs"
    argv = ["reproduce", *offline_models, "--runs", str(runs), "--work", str(tmp_path / "work"),
            "--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1",
            "--cpus-per-job", "4", "--mem-gb", "16", "--time", "1:30:00",
            "--array-parallelism", "2", "--slurm", "account=phys", "--slurm",
            "setup=echo set-up"]
    assert cli.main([*argv, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert ("sbatch --account=phys --array=0-2%2 --cpus-per-task=4 --gpus-per-node=1 "
            "--job-name=feyntune-reproduce --mem=16GB --partition=gpu --time=90") in dry
    assert "job 0: Base" in dry and "job 2: s3_qkv" in dry
    assert not (fake_slurm / "sbatch.sh").exists() and not runs.exists()

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    logs = runs / ".logs"
    assert "submitted SLURM array 4242: 3 job(s)" in out
    for index, study in enumerate(("Base", "s3", "s3_qkv")):
        assert f"4242_{index}" in out and study in out
    assert "squeue -j 4242" in out and f"tail -f {logs}/4242_0_0_log.out" in out
    assert "[1/3]" not in out  # returned at once: not followed without --wait

    sbatch = (fake_slurm / "sbatch.sh").read_text()
    lines = set(sbatch.splitlines())
    for flag in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--mem=16GB", "--time=90", "--account=phys", "--job-name=feyntune-reproduce",
                 f"--output={logs}/%A_%a_0_log.out"):
        assert f"#SBATCH {flag}" in lines, flag
    assert not any(line.startswith("#SBATCH --error") for line in lines)  # one log per job
    assert "echo set-up" in lines
    command = f"{sys.executable} -u -m submitit.core._submit {logs}"
    assert any(line.startswith("srun ") and line.endswith(command) for line in lines)

    # what each array task calls: the sequential run's evaluation, for its own model, as a
    # Job whose outcome comes back typed (executors.JobCall)
    for index, study in enumerate(("Base", "s3", "s3_qkv")):
        job = DelayedSubmission.load(logs / f"4242_{index}_submitted.pkl")
        assert isinstance(job.function, executors.JobCall) and job.function.job.stage == "eval"
        assert job.function.job.name == f"eval/{study}"
        call = job.function.job.call
        evaluate, item, opts, settings = call.args
        assert call.func is fanout.evaluate_job and evaluate is reproduce.evaluate_model
        assert item.study == study and item.out == runs / study and opts.runs == runs
        assert item.todo == (reproduce.PPL_TASK, reproduce.GEN_TASK) and opts.limit == 3
        assert settings["temperature"] == 0.8

    # array task 1 run by the batch script, as SLURM would: its model is being evaluated by
    # another live run, so the job leaves it alone and says so
    write_claim(runs / "s3", live_process.pid)
    env = {**os.environ, "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1"}
    ran = subprocess.run(["bash", str(logs / "4242_submission.sh")], env=env, timeout=120,
                         capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "set-up" in ran.stdout
    status, outcome = pickle.loads((logs / "4242_1_0_result.pkl").read_bytes())
    assert status == "success" and outcome.state is State.ELSEWHERE
    assert outcome.detail.startswith("s3 is being evaluated by another run")
    assert json.loads((runs / "s3" / claims.CLAIM_FILE).read_text())["token"] == "theirs"


def test_slurm_wait_follows_jobs_and_fails_when_one_failed(fake_slurm, offline_models, tmp_path,
                                                          capsys, monkeypatch):
    """--wait: a line as each job ends; non-zero when one failed (submitit's job objects
    answer from the result files the jobs write)."""
    from submitit.slurm.slurm import SlurmJob

    runs = tmp_path / "runs"
    logs = runs / ".logs"

    trace = ("Traceback (most recent call last):\n  File ...\n"
             "RuntimeError: CUDA out of memory\n")

    results = [("success", Outcome("eval/Base", State.DONE)), ("error", trace),
               ("success", Outcome("eval/s3_qkv", State.ELSEWHERE,
                                   "s3_qkv is being evaluated by another run"))]

    def finished(self, force_check=False):  # the jobs "ran": one each way
        result = results[int(self.job_id.split("_")[1])]
        path = logs / f"{self.job_id}_0_result.pkl"
        if not path.exists():
            path.write_bytes(pickle.dumps(result))
        return True

    monkeypatch.setattr(SlurmJob, "done", finished)
    argv = ["reproduce", *offline_models, "--runs", str(runs), "--executor", "slurm", "--wait"]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "[1/3] eval/Base (job 4242_0): done" in out
    assert "eval/s3 (job 4242_1): failed: CUDA out of memory (log " in err
    assert "[3/3] eval/s3_qkv (job 4242_2): elsewhere: s3_qkv is being" in out
    assert "jobs: 1 ended well, 1 left to another run, 1 failed" in out
    assert "1 job(s) failed: s3 (CUDA out of memory)" in err.splitlines()[-1]
    assert len(err.splitlines()) == 2  # the job's line as it ended, and the summary


# ---- bad input: one line each -------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--partition", "gpu"], "--partition needs --executor slurm"),
    (["--jobs", "2"], "--jobs needs --executor local"),
    (["--executor", "slurm", "--jobs", "2"], "--jobs is for --executor local"),
    (["--executor", "local", "--partition", "gpu"], "SLURM option(s), not for --executor local"),
    (["--executor", "slurm", "--slurm", "partitions=gpu"], "--slurm partitions: not an sbatch"),
    (["--executor", "slurm", "--slurm", "time=10"], "--slurm time: use --time"),
    (["--executor", "slurm", "--slurm", "account"], "expected KEY=VALUE"),
    (["--executor", "slurm", "--time", "ten"], "--time 'ten': expected minutes"),
    (["--executor", "local", "--jobs", "0"], "--jobs must be at least 1"),
    (["--requeues", "2"], "--requeues needs --executor slurm or local"),
    (["--executor", "slurm", "--requeues", "-1"], "--requeues must be 0 or more"),
])
def test_bad_job_options_are_one_line(extra, message, offline_models, tmp_path, capsys):
    argv = ["reproduce", *offline_models, "--runs", str(tmp_path / "runs"), "--dry-run", *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_partition_submitit_missing_and_unwritable_runs(fake_slurm, offline_models,
                                                                tmp_path, capsys, monkeypatch):
    def fails(*extra, runs=tmp_path / "runs"):
        assert cli.main(["reproduce", *offline_models, "--runs", str(runs), *extra]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        return err

    assert "--partition gpux: no such SLURM partition (sinfo lists cpu, gpu)" in fails(
        "--executor", "slurm", "--partition", "gpux")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for executor in ("slurm", "local", None):
        chosen = ["--executor", executor] if executor else []
        assert f"--runs {blocker / 'runs'} cannot be written" in fails(*chosen,
                                                                       runs=blocker / "runs")
    assert not (fake_slurm / "sbatch.sh").exists()
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    assert "needs submitit, which is not installed: pip install 'feyntune[cluster]'" in fails(
        "--executor", "local", "--dry-run")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delitem(sys.modules, "submitit")
    assert "sbatch and srun not found on PATH" in fails("--executor", "slurm")


def test_time_limits_in_slurm_forms():
    assert [fanout.parse_minutes(t) for t in ("90", "1:30:00", "2-00:00:00", "1-2", "5:30")] == \
        [90, 90, 2880, 1560, 6]
    with pytest.raises(FeynTuneError):
        fanout.parse_minutes("0")


def test_local_jobs_get_one_gpu_each(monkeypatch):
    cluster = fanout.Cluster("local", Path("logs"), wait=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5")
    assert fanout.local_slots(cluster) == [[2], [3], [5]]
    cluster.jobs = 2
    assert fanout.local_slots(cluster) == [[2], [3]]
    cluster.jobs, cluster.gpus_per_job = None, 2
    assert fanout.local_slots(cluster) == [[2, 3]]
    cluster.jobs = 3
    with pytest.raises(FeynTuneError, match="allow 1 at once"):
        fanout.local_slots(cluster)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cluster.jobs = 3
    assert fanout.local_slots(cluster) == [[], [], []]  # no GPU: --jobs processes on the CPU


def test_job_logs_and_claims_are_not_taken_for_runs(tmp_path):
    from harness.runs import lmeval_outputs

    (tmp_path / ".logs").mkdir()
    (tmp_path / ".logs" / "4242_0_0_log.out").write_text("log")
    write_claim(tmp_path / "Base", 1)
    (tmp_path / "Base" / "notes.txt").write_text("not lm-eval's")
    scan = lmeval_outputs.scan(tmp_path)
    assert [skip.path for skip in scan.skips] == ["Base/notes.txt"]
