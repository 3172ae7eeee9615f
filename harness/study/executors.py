"""The `local` and `slurm` executors: a study's jobs (harness.study.jobs) run through submitit
(https://github.com/facebookincubator/submitit), each job's outcome coming back as the typed
`Outcome` its call produced in the job's own process.

- local: the jobs as processes on this machine (submitit's LocalExecutor), a job with N GPUs on
  N GPUs of its own (CUDA_VISIBLE_DEVICES), as many at once as there are GPUs or `at_once`; a
  job starts when the jobs it waits for have succeeded. On a machine without GPUs the jobs are
  still processes, `at_once` of them.
- slurm: one sbatch per job, jobs that differ only in what they run gathered into one job array
  (e.g. all training jobs, or reproduce's evaluations); a job that waits for others is submitted
  with `--dependency=afterok:ID[:ID...]`, so one submission runs a whole study and nothing waits
  on the login node. Checkpointable jobs (training) are requeued by submitit on SLURM's signal
  before the time limit or on preemption (`--requeue`, at most `max_requeues` time-outs).
  Every submission is recorded in the logs folder (job name -> SLURM job id), so that `status`
  and the next submission ask squeue which are still queued and do not submit them again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.ground.errors import FeynTuneError, first_line
from harness.study.jobs import SUCCEEDED, Executor, Job, Outcome, State, check_order, run_call

INSTALL_HINT = "pip install 'feyntune[cluster]' (or: pip install 'submitit>=1.5.4')"
SUBMISSIONS = "submissions.json"       # in the logs folder: job name -> SLURM job id
LOCAL_DEFAULT_MINUTES = 30 * 24 * 60   # submitit's local jobs are killed at their time limit
# squeue states of a job that is still to run or running (squeue lists nothing else for long)
QUEUED_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                 "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


def submitit_module():
    try:
        import submitit
    except ImportError:
        raise FeynTuneError(f"--executor needs submitit, which is not installed: {INSTALL_HINT}") \
            from None
    return submitit


class JobCall:
    """What submitit runs for a Job: its call, with the outcome as a value (submitit would turn
    an exception into a traceback string). Requeue: a checkpointable call's `checkpoint()` makes
    the requeued call; any other job starts over, which the study's jobs may (each skips what
    is already on disk)."""

    def __init__(self, job: Job, stop_on_sigterm: bool = False):
        self.job = job
        self.stop_on_sigterm = stop_on_sigterm

    def __call__(self) -> Outcome:
        if self.stop_on_sigterm:  # the local executor stops its jobs with SIGTERM (Ctrl-C)
            signal.signal(signal.SIGTERM, _raise_interrupt)
        return run_call(self.job)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        hook = getattr(self.job.call, "checkpoint", None)
        if hook is None:
            return DelayedSubmission(JobCall(self.job, self.stop_on_sigterm))
        again = hook(*args, **kwargs)
        if again is None:
            return None
        return DelayedSubmission(JobCall(replace(self.job, call=again.function),
                                         self.stop_on_sigterm))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def job_failure(err: Exception) -> str:
    """One line for a failed job: the job's own error (the last line of the traceback that
    submitit's FailedJobError quotes between two rules), or the state SLURM ended it in."""
    text = str(err)
    rule = "-" * 22
    if text.count(rule) >= 2:
        trace = [line.strip() for line in text.split(rule)[1].splitlines() if line.strip()]
        if trace:
            return re.sub(r"^[\w.]+: ", "", trace[-1])
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if state:
        return f"ended without a result (state {state.group(1)})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def collect(job: Job, handle) -> Outcome:
    """The outcome of an ended submitit job."""
    log = Path(handle.paths.stdout)
    try:
        outcome = handle.result()
    except Exception as err:  # noqa: BLE001 -- submitit raises the job's error or SLURM's
        return Outcome(job.name, State.FAILED, job_failure(err), log)
    if not isinstance(outcome, Outcome):
        return Outcome(job.name, State.FAILED, f"unexpected result {outcome!r}", log)
    return replace(outcome, log=log)


def say(outcome: Outcome, number: int, total: int, job_id: str) -> None:
    detail = f": {outcome.detail}" if outcome.detail else ""
    line = f"[{number}/{total}] {outcome.job} (job {job_id}): {outcome.state.value}{detail}"
    if outcome.state is State.FAILED and outcome.log:
        line += f" (log {outcome.log})"
    print(line, file=sys.stderr if outcome.state is State.FAILED else sys.stdout, flush=True)


def blocked(job: Job, outcomes: dict[str, Outcome]) -> Outcome | None:
    """BLOCKED when a job it waits for ended without success."""
    failed = [name for name in job.after
              if name in outcomes and outcomes[name].state not in SUCCEEDED]
    return Outcome(job.name, State.BLOCKED, f"waits for {', '.join(failed)}") if failed else None


# ---- local -------------------------------------------------------------------------------------

class LocalExecutor(Executor):
    """Jobs as processes on this machine; see the module docstring."""

    name = "local"

    def __init__(self, logs: Path, gpus: Sequence[int] = (), at_once: int = 1,
                 minutes: int | None = None, max_requeues: int = 3):
        self.logs = Path(logs)
        self.gpus = list(gpus)
        self.at_once = at_once
        self.minutes = minutes or LOCAL_DEFAULT_MINUTES
        self.max_requeues = max_requeues

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        check_order(jobs)
        if self.gpus:
            big = [job.name for job in jobs if job.gpus > len(self.gpus)]
            if big:
                raise FeynTuneError(f"{', '.join(big)} need(s) more GPUs than this machine's "
                                    f"{len(self.gpus)}")
        submitit = submitit_module()
        executor = submitit.LocalExecutor(folder=self.logs, max_num_timeout=self.max_requeues)
        waiting, running = list(jobs), []
        outcomes: dict[str, Outcome] = {}
        free = list(self.gpus)
        try:
            while waiting or running:
                for job in list(waiting):
                    if any(name not in outcomes for name in job.after):
                        continue
                    stop = blocked(job, outcomes)
                    if stop is not None:
                        waiting.remove(job)
                        outcomes[job.name] = stop
                        print(f"[{len(outcomes)}/{len(jobs)}] {job.name}: blocked, "
                              f"{stop.detail}", flush=True)
                        continue
                    need = min(job.gpus, len(self.gpus))
                    if len(running) >= self.at_once or need > len(free):
                        continue
                    waiting.remove(job)
                    taken, free = free[:need], free[need:]
                    handle = self._start(executor, job, taken)
                    running.append((job, handle, taken))
                for entry in list(running):
                    job, handle, taken = entry
                    if handle.done():
                        running.remove(entry)
                        free.extend(taken)
                        outcomes[job.name] = collect(job, handle)
                        say(outcomes[job.name], len(outcomes), len(jobs), handle.job_id)
                time.sleep(0.2)
        except KeyboardInterrupt:
            stop_local(running)
        return [outcomes[job.name] for job in jobs]

    def _start(self, executor, job: Job, gpus: list[int]):
        # no GPU for a job of none (a job with GPUs on a machine without sees none either)
        executor.update_parameters(timeout_min=self.minutes, stderr_to_stdout=True,
                                   gpus_per_node=len(gpus), visible_gpus=tuple(gpus))
        with ignoring_sigint():  # the job's processes: Ctrl-C here is this process's to handle
            handle = executor.submit(JobCall(job, stop_on_sigterm=True))
        on = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
        print(f"  started {job.name}{on} (job {handle.job_id}, log {handle.paths.stdout})",
              flush=True)
        return handle


class ignoring_sigint:
    """SIGINT ignored while a job's controller starts: it and the job's processes inherit
    that, so a Ctrl-C in the terminal reaches this process only (not four controllers that
    each print a traceback); this process then stops its jobs itself, once each."""

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            self.previous = None

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def stop_local(running: list) -> None:
    """After Ctrl-C: one SIGTERM to each running job's processes (a training job passes it to
    its child, which saves a checkpoint; an evaluation ends and releases its claim), wait for
    them to end, and end in one line. A second Ctrl-C stops waiting."""
    import psutil

    for _, handle, _ in running:
        try:
            for task in psutil.Process(int(handle.job_id)).children():
                task.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    names = ", ".join(job.name for job, _, _ in running)
    if running:
        print(f"\ninterrupted: stopping {names} (training saves a checkpoint first)",
              file=sys.stderr, flush=True)
    try:
        while any(not handle.done() for _, handle, _ in running):
            time.sleep(0.2)
    except KeyboardInterrupt:
        raise FeynTuneError(f"interrupted again: {names} left to end by themselves; the same "
                            "command again resumes") from None
    raise FeynTuneError("interrupted" + (f": {names} stopped" if running else "")
                        + "; the same command again resumes (finished work is kept)")


# ---- slurm -------------------------------------------------------------------------------------

def array_groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs gathered into SLURM job arrays: consecutive jobs with the same stage, resources,
    requeue setting and dependencies (an array has one dependency list for all its tasks)."""
    groups: list[list[Job]] = []
    for job in jobs:
        key = (job.stage, job.gpus, job.nodes, job.checkpointable, job.after)
        last = groups[-1][0] if groups else None
        if last is not None and (last.stage, last.gpus, last.nodes, last.checkpointable,
                                 last.after) == key:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


class SlurmExecutor(Executor):
    """Jobs as SLURM jobs; see the module docstring. `params`: submitit SlurmExecutor parameters
    shared by every job (partition, time, CPUs, memory, setup, ...); each job adds its GPUs,
    nodes, dependencies and requeue setting."""

    name = "slurm"

    def __init__(self, logs: Path, params: dict, wait: bool = False, max_requeues: int = 3,
                 poll_seconds: float = 10.0):
        self.logs = Path(logs)
        self.params = dict(params)
        self.wait = wait
        self.max_requeues = max_requeues
        self.poll_seconds = poll_seconds

    def job_parameters(self, job: Job, after_ids: list[str]) -> dict:
        params = {**self.params, "nodes": job.nodes}
        params.setdefault("job_name", f"feyntune-{job.stage}")
        if job.gpus:
            params["gpus_per_node"] = job.gpus
        else:
            params.pop("gpus_per_node", None)
        if after_ids:
            params["dependency"] = "afterok:" + ":".join(after_ids)
        if job.checkpointable:  # submitit requeues it with `scontrol requeue`
            extra = dict(params.get("additional_parameters") or {})
            params["additional_parameters"] = {**extra, "requeue": True}
        return params

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        check_order(jobs)
        submitit = submitit_module()
        queued = submitted(self.logs)
        ids: dict[str, str] = {}
        outcomes: dict[str, Outcome] = {}
        handles: dict[str, object] = {}
        for group in array_groups(jobs):
            for job in group:
                if job.name in queued:
                    ids[job.name] = queued[job.name]["job_id"]
                    outcomes[job.name] = Outcome(
                        job.name, State.SUBMITTED, f"already queued as SLURM job "
                        f"{ids[job.name]} ({queued[job.name]['state']}), not submitted again")
                    print(f"  {job.name}: {outcomes[job.name].detail}", flush=True)
            todo = [job for job in group if job.name not in queued]
            if not todo:
                continue
            after = [ids[name] for name in todo[0].after]
            params = self.job_parameters(todo[0], after)
            try:
                executor = submitit.SlurmExecutor(folder=self.logs,
                                                  max_num_timeout=self.max_requeues)
                executor.update_parameters(**params)
                calls = [JobCall(job) for job in todo]
                made = executor.submit_array(calls) if len(calls) > 1 \
                    else [executor.submit(calls[0])]
            except RuntimeError as err:  # no srun here, sbatch refused (FailedJobError)
                raise FeynTuneError(f"SLURM submission failed: {job_failure(err)}") from None
            except ValueError as err:
                raise FeynTuneError(f"SLURM parameters refused by submitit: "
                                    f"{first_line(err)}") from None
            for job, handle in zip(todo, made):
                ids[job.name], handles[job.name] = handle.job_id, handle
                outcomes[job.name] = Outcome(job.name, State.SUBMITTED,
                                             f"SLURM job {handle.job_id}",
                                             Path(handle.paths.stdout))
            record_submissions(self.logs, {job.name: ids[job.name] for job in todo})
            first = made[0].job_id.split("_")[0]
            what = f"array {first}: {len(made)} job(s)" if len(made) > 1 else f"job {first}"
            waits = f" after {', '.join(after)} (afterok)" if after else ""
            print(f"submitted SLURM {what}{waits}", flush=True)
            for job, handle in zip(todo, made):
                print(f"  {handle.job_id:<12} {job.name:<16} log {handle.paths.stdout}",
                      flush=True)
        if handles:
            mains = sorted({value.split("_")[0] for value in ids.values()})
            log = next(iter(handles.values())).paths.stdout
            print(f"follow: squeue -j {','.join(mains)}; sacct -j {','.join(mains)} "
                  f"--format=JobID,JobName,State,Elapsed; tail -f {log}", flush=True)
        if self.wait and handles:
            self.follow(jobs, handles, outcomes)
        return [outcomes[job.name] for job in jobs]

    def follow(self, jobs: Sequence[Job], handles: dict, outcomes: dict[str, Outcome]) -> None:
        """Wait for the submitted jobs, a line as each ends; a job whose dependency failed is
        cancelled (SLURM would keep it pending for ever) and BLOCKED."""
        pending = [job for job in jobs if job.name in handles]
        ended = 0
        while pending:
            for job in list(pending):
                handle = handles[job.name]
                stop = blocked(job, {name: outcome for name, outcome in outcomes.items()
                                     if outcome.state is not State.SUBMITTED})
                if stop is not None and not handle.done():
                    handle.cancel(check=False)
                    outcomes[job.name] = stop
                elif handle.done():
                    outcomes[job.name] = collect(job, handle)
                else:
                    continue
                pending.remove(job)
                ended += 1
                say(outcomes[job.name], ended, len(handles), handle.job_id)
            if pending:
                time.sleep(self.poll_seconds)


def record_submissions(logs: Path, ids: dict[str, str]) -> None:
    """Add job name -> SLURM job id to the logs folder's record (written whole, then moved)."""
    path = Path(logs) / SUBMISSIONS
    record = read_submissions(logs)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record.update({name: {"job_id": job_id, "submitted": stamp} for name, job_id in ids.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SUBMISSIONS}.{os.getpid()}")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


def read_submissions(logs: Path) -> dict[str, dict]:
    path = Path(logs) / SUBMISSIONS
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as err:
        raise FeynTuneError(f"{path} is damaged ({first_line(err)}); move it away") from None
    return record if isinstance(record, dict) else {}


def submitted(logs: Path) -> dict[str, dict]:
    """Job name -> {"job_id", "state"} of the jobs an earlier submission (recorded in `logs`)
    left queued or running, as squeue lists them now."""
    record = read_submissions(logs)
    if not record:
        return {}
    if shutil.which("squeue") is None:
        raise FeynTuneError(f"{Path(logs) / SUBMISSIONS} lists SLURM jobs, but squeue is not "
                            "on PATH to ask which are still queued (run on the login node)")
    mains = sorted({entry["job_id"].split("_")[0] for entry in record.values()})
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(mains)],
                                capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise FeynTuneError(f"squeue failed: {first_line(err)}") from None
    states = {}
    for line in listed.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            states[job_id] = state.strip()
    # squeue refuses ids it no longer knows ("Invalid job id"): then none is queued
    if listed.returncode != 0 and not states and "invalid job id" not in listed.stderr.lower():
        said = listed.stderr.strip().splitlines()
        raise FeynTuneError(f"squeue failed: {said[0] if said else listed.returncode}")
    return {name: {"job_id": entry["job_id"], "state": states[entry["job_id"]]}
            for name, entry in record.items()
            if states.get(entry["job_id"]) in QUEUED_STATES}
