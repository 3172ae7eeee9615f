"""Training one adapter as a job: `feyntune train` in a child process, under the run folder's
claim, resumed from its newest checkpoint, and requeued by submitit on a time limit or a
preemption.

Why a child process: submitit's signal handler (SLURM's `--signal=USR2@90` before the time
limit, or a preemption) calls the job's `checkpoint()` and then requeues the job and exits at
once. An exact checkpoint cannot be taken from inside a signal handler in the middle of an
optimizer step, so the training runs in a child, and `checkpoint()` sends it SIGTERM: the child
finishes its step, saves a checkpoint (finetune/train_callbacks.py, GracefulStop) and exits;
only then is the job requeued, and the requeued job continues with `--resume`, which is exact.

The child runs in a session of its own with the preemption signal ignored, so that only this
job decides when it stops (a terminal's Ctrl-C or SLURM's signal to the job's processes reaches
the job, which passes on one SIGTERM), and a second stop signal never aborts it by accident.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.study import claims
from harness.study.jobs import Job, State

INTERRUPTED = 130                  # finetune.train's exit status after a clean stop
# set by the job, not by its arguments (--num-processes: the job's GPUs)
OWN_FLAGS = ("--out", "--resume", "--num-processes")


def finished(out: Path) -> bool:
    """A complete adapter is in `out`: run.json is written after the adapter, by the run that
    finished (an interrupted run leaves checkpoints only)."""
    out = Path(out)
    return (out / "adapter_config.json").is_file() and (out / "run.json").is_file()


def progress(out: Path) -> tuple[int, int] | None:
    """(step, total steps) of the newest checkpoint of a run in progress; None when the run
    finished or has no checkpoint yet."""
    from finetune.train import latest_checkpoint

    out = Path(out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None or finished(out):
        return None
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return int(state["global_step"]), int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def preemption_signal() -> int:
    """The signal submitit handles as a time limit or a preemption (SUBMITIT_PREEMPT_SIGNAL,
    default USR2)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"),
                   signal.SIGUSR2)


@dataclass
class TrainJob:
    """One adapter: `argv` are `feyntune train` arguments without --out / --resume; `processes`
    the data-parallel processes (the job's GPUs; 1: a single process)."""

    argv: list[str]
    out: Path
    processes: int = 1
    _child: subprocess.Popen | None = field(default=None, init=False, repr=False, compare=False)
    _stopping: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        given = [flag for flag in OWN_FLAGS if flag in map(str, self.argv)]
        if given:
            raise FeynTuneError(f"training job {self.out}: {', '.join(given)} is set by the job")

    def __getstate__(self):  # the running child stays with this process
        return {"argv": self.argv, "out": self.out, "processes": self.processes}

    def __setstate__(self, state):
        self.__init__(**state)

    def command(self, resume: bool) -> list[str]:
        """`feyntune train` (finetune.train), data-parallel under torch.distributed.run when the
        job has several GPUs: the launcher is the child, so that SIGTERM reaches it, and it
        passes it on once to every worker, each of which stops at the same step."""
        cmd = [sys.executable, "-m", "finetune.train", *map(str, self.argv),
               "--out", str(self.out)] + (["--resume"] if resume else [])
        if self.processes > 1:
            cmd[1:3] = ["-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={self.processes}", "-m", "finetune.train"]
        return cmd

    def __call__(self) -> State:
        from finetune.train import latest_checkpoint

        out = Path(self.out)
        if finished(out):
            return State.SKIPPED
        with claims.claim(out, doing="trained"):
            if finished(out):  # finished by another run just before we claimed it
                return State.SKIPPED
            resume = latest_checkpoint(out) is not None
            print(f"training {out}" + (" (resuming from its newest checkpoint)" if resume
                                       else ""), flush=True)
            code = self._run(self.command(resume))
        if code == 0 and finished(out):
            return State.DONE
        if code == INTERRUPTED:
            raise FeynTuneError(f"training of {out.name} stopped at a checkpoint; the same "
                                "command again resumes it")
        raise FeynTuneError(f"training of {out.name} failed (feyntune train exited with {code})")

    def _run(self, cmd: list[str]) -> int:
        self._child = start_shielded(cmd)
        try:
            return self._child.wait()
        except BaseException:  # Ctrl-C, a job cancelled or ended: stop at a checkpoint first
            self.stop_child()
            raise

    def stop_child(self) -> None:
        """One SIGTERM to the training child, then wait for it to save its checkpoint and exit;
        an interruption of that wait passes on a second signal (which aborts the child)."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        if not self._stopping:
            self._stopping = True
            child.send_signal(signal.SIGTERM)
        try:
            child.wait()
        except BaseException:
            child.send_signal(signal.SIGTERM)
            child.wait()
            raise

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue hook: the child saves an exact checkpoint and ends; the requeued
        job (a fresh TrainJob) resumes from it."""
        from submitit.helpers import DelayedSubmission

        self.stop_child()
        return DelayedSubmission(TrainJob(list(self.argv), Path(self.out), self.processes))


def start_shielded(cmd: list[str]) -> subprocess.Popen:
    """Start `cmd` in a session of its own with the preemption signal ignored (a disposition
    the child inherits), so that it stops only when the job tells it to."""
    sig = preemption_signal()
    try:
        previous = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are the main thread's business
        previous = None
    try:
        return subprocess.Popen(cmd, start_new_session=True)
    finally:
        if previous is not None:
            signal.signal(sig, previous)


def train_job(name: str, argv: list[str], out: Path, gpus: int = 1,
              after: tuple[str, ...] = ()) -> Job:
    """The Job that trains one adapter data-parallel over `gpus` GPUs (one process without)."""
    return Job(name=name, stage="train", call=TrainJob(list(argv), Path(out), max(1, gpus)),
               gpus=gpus, after=tuple(after), checkpointable=True)
