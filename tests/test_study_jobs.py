"""A study's jobs on the local and slurm executors (harness.study.executors), training as a job
(harness.study.train_job): the SLURM submission of a whole study checked without a cluster,
dependencies and typed outcomes on the local executor, Ctrl-C there, an interrupted training
job that resumes exactly, and `feyntune train --report-to`."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from fake_commands import put_on_path
from sample_sets import build_tiny_llama, write_short_set

from harness.ground.errors import FeynTuneError
from harness.study import claims, executors, train_job
from harness.study.jobs import Job, Outcome, State

REPO = Path(__file__).resolve().parents[1]
# the jobs below call functions of this module in other processes
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---- SLURM, with fake sbatch/srun/squeue on PATH ------------------------------------------------

FAKE_SBATCH = """#!/bin/bash
# records each script submitit hands to sbatch, answers like SLURM with a new job id
n=$(( $(cat "{record}/next" 2>/dev/null || echo 4241) + 1 ))
echo "$n" > "{record}/next"
cp "$1" "{record}/sbatch-$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SRUN = """#!/bin/bash
exit 0
"""
FAKE_SQUEUE = """#!/bin/bash
# what the queue holds: the file `queue` (job id|state lines) when the test wrote one
echo "$@" >> "{record}/squeue.args"
cat "{record}/queue" 2>/dev/null
exit 0
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    return put_on_path(tmp_path, monkeypatch, {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "squeue": FAKE_SQUEUE})


def sbatch_flags(path: Path) -> dict[str, str]:
    flags = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            flags[key] = value
    return flags


def study_jobs(tmp_path: Path) -> list[Job]:
    """A study as the study runner builds it: two adapters trained on 2 GPUs each, the base and
    both adapters evaluated, the leaderboard last."""
    trains = [train_job.train_job(f"train/{name}", ["--base", "b", "--data", f"data/{name}",
                                                    "--lora", lora, "--report-to", "tensorboard"],
                                  tmp_path / "adapters" / name, gpus=2)
              for name, lora in (("s3", "all"), ("s3_qkv", "qkv"))]
    evals = [Job("eval/Base", "eval", functools.partial(print, "Base"), gpus=1)]
    evals += [Job(f"eval/{name}", "eval", functools.partial(print, name), gpus=1,
                  after=(f"train/{name}",)) for name in ("s3", "s3_qkv")]
    report = Job("report", "report", functools.partial(print, "board"),
                 after=tuple(job.name for job in evals))
    return [*trains, *evals, report]


def test_the_slurm_submission_is_checked_without_a_cluster(fake_slurm, tmp_path, capsys):
    from submitit.core.utils import DelayedSubmission

    logs = tmp_path / "logs"
    executor = executors.SlurmExecutor(logs, {"time": 120, "partition": "gpu",
                                              "stderr_to_stdout": True}, max_requeues=5)
    outcomes = executor.run(study_jobs(tmp_path))
    assert [o.state for o in outcomes] == [State.SUBMITTED] * 6
    ids = {o.job: o.detail.removeprefix("SLURM job ") for o in outcomes}
    assert ids == {"train/s3": "4242_0", "train/s3_qkv": "4242_1", "eval/Base": "4243",
                   "eval/s3": "4244", "eval/s3_qkv": "4245", "report": "4246"}

    # training: one array, two GPUs per job, requeued on SLURM's signal before the time limit
    train = sbatch_flags(fake_slurm / "sbatch-4242.sh")
    assert train["array"] == "0-1%2" and train["gpus-per-node"] == "2"
    assert train["signal"] == "USR2@90" and "requeue" in train and train["time"] == "120"
    assert train["partition"] == "gpu" and train["job-name"] == "feyntune-train"
    assert "dependency" not in train
    for index, (name, lora) in enumerate((("s3", "all"), ("s3_qkv", "qkv"))):
        submission = DelayedSubmission.load(logs / f"4242_{index}_submitted.pkl")
        call = submission.function
        assert isinstance(call, executors.JobCall) and call.job.checkpointable
        assert call.job.call.out == tmp_path / "adapters" / name
        assert call.job.call.processes == 2
        assert submission._timeout_countdown == 5  # requeues after a time limit
        command = call.job.call.command(resume=False)
        assert command[1:6] == ["-m", "torch.distributed.run", "--standalone",
                                "--nproc_per_node=2", "-m"]
        assert ["--lora", lora] == command[command.index("--lora"):command.index("--lora") + 2]
        assert "--report-to" in command and "--resume" not in command
        assert call.job.call.command(resume=True)[-1] == "--resume"
        # submitit's requeue hook gives the same training job back (it then resumes)
        again = call.checkpoint()
        assert isinstance(again, DelayedSubmission) and again.function.job.call == call.job.call

    # evaluation: each adapter's after its own training job; the base at once
    base = sbatch_flags(fake_slurm / "sbatch-4243.sh")
    assert "dependency" not in base and "requeue" not in base and base["gpus-per-node"] == "1"
    assert sbatch_flags(fake_slurm / "sbatch-4244.sh")["dependency"] == "afterok:4242_0"
    assert sbatch_flags(fake_slurm / "sbatch-4245.sh")["dependency"] == "afterok:4242_1"
    # the report last, after every evaluation, on no GPU
    report = sbatch_flags(fake_slurm / "sbatch-4246.sh")
    assert report["dependency"] == "afterok:4243:4244:4245" and "gpus-per-node" not in report
    assert max(p.name for p in fake_slurm.glob("sbatch-*.sh")) == "sbatch-4246.sh"
    out = capsys.readouterr().out
    assert "submitted SLURM array 4242: 2 job(s)" in out
    assert "submitted SLURM job 4246 after 4243, 4244, 4245 (afterok)" in out

    # every submission is recorded; squeue says which are still queued, and a second
    # submission leaves those alone (issue 28, defect 9)
    recorded = json.loads((logs / executors.SUBMISSIONS).read_text())
    assert {name: entry["job_id"] for name, entry in recorded.items()} == ids
    (fake_slurm / "queue").write_text("4242_0|RUNNING\n4242_1|PENDING\n4243|PENDING\n"
                                      "4244|PENDING\n4245|PENDING\n4246|PENDING\n")
    queued = executors.submitted(logs)
    assert queued["train/s3"] == {"job_id": "4242_0", "state": "RUNNING"} and len(queued) == 6
    again = executors.SlurmExecutor(logs, {"time": 120}).run(study_jobs(tmp_path))
    assert [o.state for o in again] == [State.SUBMITTED] * 6
    assert all("already queued as SLURM job" in o.detail for o in again)
    assert not (fake_slurm / "sbatch-4247.sh").exists()
    assert "-r" in (fake_slurm / "squeue.args").read_text().split()

    # once the first evaluation failed and left the queue, only what is not queued goes again,
    # waiting for the queued jobs it depends on
    (fake_slurm / "queue").write_text("4242_0|RUNNING\n4242_1|PENDING\n4245|PENDING\n"
                                      "4246|PENDING\n")
    third = executors.SlurmExecutor(logs, {"time": 120}).run(study_jobs(tmp_path)[:5])
    assert [o.job for o in third if "already queued" not in o.detail] == ["eval/Base", "eval/s3"]
    assert sbatch_flags(fake_slurm / "sbatch-4248.sh")["dependency"] == "afterok:4242_0"

    # a job over several nodes would run whole on each node: refused, before any submission
    wide = [Job("train/big", "train", functools.partial(print), gpus=8, nodes=2)]
    with pytest.raises(FeynTuneError, match="train/big: jobs over several nodes"):
        executors.SlurmExecutor(logs, {"time": 120}).run(wide)
    assert not (fake_slurm / "sbatch-4249.sh").exists()


def test_reproduce_does_not_submit_models_still_queued(fake_slurm, tmp_path, capsys):
    """`reproduce --executor slurm` twice while the first array is pending: the second submits
    nothing (issue 28, defect 9)."""
    from harness import cli

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    adapters = tmp_path / "adapters"
    for name in ("s3", "s3_qkv"):
        (adapters / name).mkdir(parents=True)
        (adapters / name / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base)}))
    runs = tmp_path / "runs"
    argv = ["reproduce", "--base", str(base), "--adapters", str(adapters), "--models",
            "s3,s3_qkv", "--limit", "3", "--runs", str(runs), "--executor", "slurm"]
    assert cli.main(argv) == 0
    assert "submitted SLURM array 4242: 3 job(s)" in capsys.readouterr().out
    (fake_slurm / "queue").write_text("4242_0|PENDING\n4242_1|PENDING\n4242_2|PENDING\n")
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "jobs: nothing to submit" in capsys.readouterr().out
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "s3: already queued as SLURM job 4242_1 (PENDING), not submitted again" in out
    assert "jobs: nothing to submit" in out and "submitted SLURM" not in out
    (fake_slurm / "queue").write_text("4242_0|RUNNING\n")  # two ended without results
    assert cli.main(argv) == 0
    assert "submitted SLURM array 4243: 2 job(s)" in capsys.readouterr().out


# ---- the local executor -------------------------------------------------------------------------

def stamp(folder: str, name: str, fail: bool = False, seconds: float = 0.0) -> State:
    time.sleep(seconds)
    Path(folder, name).write_text(str(time.time()))
    if fail:
        raise FeynTuneError(f"{name} went wrong")
    return State.DONE


def test_local_jobs_wait_for_their_dependencies_and_say_what_became_of_each(tmp_path, capsys):
    def job(name, after=(), fail=False, seconds=0.0):
        return Job(name, "eval", functools.partial(stamp, str(tmp_path), name, fail, seconds),
                   after=after)

    jobs = [job("a", seconds=1.0), job("b", after=("a",), fail=True), job("c", after=("b",)),
            job("d", after=("a",)), job("e")]
    outcomes = executors.LocalExecutor(tmp_path / "logs", at_once=2).run(jobs)
    states = {o.job: o.state for o in outcomes}
    assert states == {"a": State.DONE, "b": State.FAILED, "c": State.BLOCKED, "d": State.DONE,
                      "e": State.DONE}
    failed = outcomes[1]
    assert failed.detail == "b went wrong" and failed.log.is_file()
    assert outcomes[2].detail == "waits for b" and not (tmp_path / "c").exists()
    started = {name: float((tmp_path / name).read_text()) for name in "abde"}
    assert started["b"] > started["a"] and started["d"] > started["a"]
    out, err = capsys.readouterr()
    assert "b (job " in err and "failed: b went wrong" in err and "c: blocked" in out


HOLD_AND_CTRL_C = """
import functools, subprocess, sys, time
from pathlib import Path
from harness.ground.errors import FeynTuneError
from harness.study import claims, executors
from harness.study.jobs import Job, State

def hold(folder):
    with claims.claim(Path(folder)):
        subprocess.Popen(["sleep", "300"])  # e.g. an lm-eval process the job started
        Path(folder, "started").write_text("")
        time.sleep(300)
    return State.DONE

jobs = [Job(f"eval/{n}", "eval", functools.partial(hold, sys.argv[1] + "/" + n))
        for n in ("m1", "m2")]
try:
    executors.LocalExecutor(Path(sys.argv[1]) / "logs", at_once=2).run(jobs)
except FeynTuneError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_ctrl_c_stops_local_jobs_in_one_line(tmp_path):
    """Ctrl-C in the terminal (SIGINT to the whole process group) while two local jobs run:
    one line, no traceback, the jobs' processes (and the processes they started) ended and
    their claims released, so that the next run takes the models (issue 28, defect 2)."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_CTRL_C, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while not all((tmp_path / n / "started").exists() for n in ("m1", "m2")):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 6  # per job: a controller, the job's process and what it started
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 2
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == ("error: interrupted: eval/m1, eval/m2 stopped; the same command "
                         "again resumes (finished work is kept)"), err
    assert len(lines) == 2 and lines[0].startswith("interrupted: stopping eval/m1, eval/m2")
    gone = psutil.wait_procs(family, timeout=10)[1]
    assert not gone, gone
    for name in ("m1", "m2"):
        assert claims.holder(tmp_path / name) is None
        assert not (tmp_path / name / claims.CLAIM_FILE).exists()


# ---- training as a job --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(smollm2_path, sample_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = write_short_set(sample_path, root / "s1", n_train=8, n_validation=4, words=16)
    base = build_tiny_llama(smollm2_path, root / "llama")
    # 2 steps per epoch, 12 steps: the interruption falls mid-run, across epochs
    return ["--base", str(base), "--data", str(data), "--lora", "all", "--quantize", "none",
            "--max-steps", "12", "--batch-size", "4", "--no-gradient-checkpointing"]


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


@pytest.mark.slow
def test_interrupted_training_resumes_exactly(tiny_run, tmp_path):
    """A training job on submitit's local executor gets the signal SLURM sends before a time
    limit (USR2, to every process of the job, as SLURM does); it stops at a checkpoint and is
    requeued, the requeued job resumes from that checkpoint, and the adapter equals that of a
    run never interrupted."""
    import psutil
    import submitit

    straight = tmp_path / "straight"
    assert train_job.TrainJob(tiny_run, straight)() is State.DONE
    assert train_job.finished(straight) and train_job.progress(straight) is None
    assert train_job.TrainJob(tiny_run, straight)() is State.SKIPPED  # finished: nothing to do

    out = tmp_path / "interrupted"
    job = train_job.train_job("train/s1", tiny_run, out, gpus=0)
    executor = submitit.LocalExecutor(folder=tmp_path / "logs", max_num_timeout=3)
    executor.update_parameters(timeout_min=60, stderr_to_stdout=True)
    handle = executor.submit(executors.JobCall(job))
    log = Path(handle.paths.stdout)
    deadline = time.time() + 180
    while not re.search(r"\b([1-9]|1[01])/12 \[", log.read_text() if log.exists() else ""):
        assert time.time() < deadline and not handle.done(), log.read_text()
        time.sleep(0.05)
    controller = psutil.Process(int(handle.job_id))
    for process in controller.children(recursive=True):  # the job and its training child
        process.send_signal(signal.SIGUSR2)
    outcome = handle.result()
    text = log.read_text()
    assert outcome == Outcome("train/s1", State.DONE), text
    assert "Calling checkpoint method" in text and "Requeued job" in text
    assert "stopping after this step and saving a checkpoint" in text
    assert "resuming from its newest checkpoint" in text
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] is True and run["final"]["global_step"] == 12
    stopped = re.search(r"stopped at step (\d+) of 12; checkpoint saved", text)
    assert stopped and 0 < int(stopped.group(1)) < 12, text
    assert not (out / claims.CLAIM_FILE).exists()

    a, b = _weights(straight), _weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key


def test_training_jobs_hold_claims_and_skip_finished_adapters(tmp_path, monkeypatch):
    out = tmp_path / "s3"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / claims.CLAIM_FILE).write_text(json.dumps({
            "host": claims.socket.gethostname(), "pid": holder.pid, "job": None,
            "since": "earlier", "token": "theirs"}))
        job = train_job.train_job("train/s3", ["--base", "b"], out)
        outcome = executors.run_call(job)
        assert outcome.state is State.ELSEWHERE
        assert outcome.detail.startswith("s3 is being trained by another run")
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(FeynTuneError, match="--resume is set by the job"):
        train_job.TrainJob(["--resume"], out)
    (out / "adapter_config.json").write_text("{}")
    (out / "run.json").write_text("{}")
    assert executors.run_call(job).state is State.SKIPPED


# ---- --report-to --------------------------------------------------------------------------------

def test_report_to_goes_to_the_trainer_and_a_missing_tracker_is_one_line(tmp_path, capsys,
                                                                        monkeypatch):
    import importlib.util

    from finetune import config as C
    from harness import cli

    cfg = C.resolve("paper", None, {"base": "b", "data": "d", "out": str(tmp_path / "s1"),
                                    "report_to": "tensorboard"})
    args = C.trainer_arguments(cfg, "out/checkpoints", bf16=False, use_cpu=True)
    assert args["report_to"] == "tensorboard" and args["run_name"] == "s1"
    assert C.trainer_arguments(C.resolve("paper"), "o", bf16=False, use_cpu=True)["report_to"] \
        == "none"

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    argv = ["train", "--base", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data"),
            "--lora", "all", "--out", str(tmp_path / "s1"), "--report-to", "wandb"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == "feyntune train: error: --report-to wandb: wandb is not installed; " \
                          "pip install wandb"
    assert not (tmp_path / "s1").exists()  # before any work
