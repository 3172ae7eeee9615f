"""A study's work as jobs, and the executors that run them.

A job is one unit of a study's work (build the missing sets, train one adapter, evaluate one
model, regenerate the leaderboard) with the jobs it waits for. An executor runs a list of jobs
in dependency order and says what became of each as a typed `Outcome`; nothing is parsed back
from text. `sequential` runs them here, one after another; `local` and `slurm` (submitit) run
them as processes on this machine or as SLURM jobs. Adding an executor is one subclass of
`Executor`.

A job's `call` is picklable (a module-level function, a functools.partial of one, or a dataclass
with `__call__`), since submitit ships it to another process. It returns `State.DONE` when it did
its work or `State.SKIPPED` when there was nothing left to do, and raises `claims.Claimed` when
another live run holds its folder, or `FeynTuneError` when it failed.
"""

from __future__ import annotations

import abc
import enum
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.ground.errors import FeynTuneError
from harness.study import claims

STAGES = ("data", "train", "eval", "report")


class State(str, enum.Enum):
    DONE = "done"              # the job did its work
    SKIPPED = "skipped"        # nothing was left to do (found on disk)
    ELSEWHERE = "elsewhere"    # another live run holds the job's folder (its claim)
    FAILED = "failed"
    BLOCKED = "blocked"        # a job it waits for did not succeed, so it never ran
    SUBMITTED = "submitted"    # handed to a scheduler that runs it later (slurm without --wait)


SUCCEEDED = (State.DONE, State.SKIPPED)


@dataclass(frozen=True)
class Job:
    name: str                          # unique in one submission: "data", "train/s3", "eval/s3"
    stage: str                         # one of STAGES
    call: Callable[[], State]
    gpus: int = 0                      # GPUs the job needs (training: data-parallel over them)
    nodes: int = 1
    after: tuple[str, ...] = ()        # jobs that must succeed first (SLURM: afterok)
    checkpointable: bool = False       # may be stopped and requeued (training resumes exactly)


@dataclass(frozen=True)
class Outcome:
    job: str
    state: State
    detail: str = ""                   # why it failed, who holds it, the SLURM job id, ...
    log: Path | None = None


def check_order(jobs: Sequence[Job]) -> None:
    """Names are unique and every job waits only for jobs listed before it."""
    seen: set[str] = set()
    for job in jobs:
        if job.stage not in STAGES:
            raise FeynTuneError(f"job {job.name}: unknown stage {job.stage!r}")
        if job.name in seen:
            raise FeynTuneError(f"job {job.name} appears twice")
        missing = [name for name in job.after if name not in seen]
        if missing:
            raise FeynTuneError(f"job {job.name} waits for {', '.join(missing)}, "
                                "which is not listed before it")
        seen.add(job.name)


def run_call(job: Job) -> Outcome:
    """A job's call in this process, its exceptions turned into outcomes."""
    try:
        state = job.call()
    except claims.Claimed as err:
        return Outcome(job.name, State.ELSEWHERE, str(err))
    except FeynTuneError as err:
        return Outcome(job.name, State.FAILED, str(err))
    return Outcome(job.name, State(state) if state is not None else State.DONE)


class Executor(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run (or submit) the jobs in dependency order; one outcome per job, in their order."""


class SequentialExecutor(Executor):
    """One job after another in this process; a job whose dependency did not succeed is
    BLOCKED, the others still run."""

    name = "sequential"

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        check_order(jobs)
        outcomes: dict[str, Outcome] = {}
        for number, job in enumerate(jobs, start=1):
            waiting = [name for name in job.after if outcomes[name].state not in SUCCEEDED]
            if waiting:
                outcome = Outcome(job.name, State.BLOCKED, f"waits for {', '.join(waiting)}")
            else:
                print(f"[{number}/{len(jobs)}] {job.name}", flush=True)
                outcome = run_call(job)
            if outcome.state is State.FAILED:
                print(f"[{number}/{len(jobs)}] {job.name}: FAILED: {outcome.detail}",
                      file=sys.stderr, flush=True)
            outcomes[job.name] = outcome
        return [outcomes[job.name] for job in jobs]
