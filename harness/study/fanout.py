"""The job options (`--executor sequential|local|slurm` and the options of the jobs) and the
executor they choose (harness.study.executors, on the interface of harness.study.jobs), and
`feyntune reproduce --executor local|slurm`: one evaluation job per model that still has work.

- slurm: one SLURM job array, one array task per model, with the partition, GPUs, CPUs, memory,
  time limit, array parallelism and any other sbatch parameter submitit knows. Returns once
  submitted (job ids and how to follow them), or follows the jobs with --wait. Models whose job
  an earlier submission left queued or running (squeue) are not submitted again.
- local: the same jobs as processes on this machine, one model per GPU (each job sees only its
  own GPUs through CUDA_VISIBLE_DEVICES), as many at once as there are GPUs, or --jobs N.

Each job runs `evaluate_job` with the evaluation function the run in one process uses
(reproduce.evaluate_model): the same run folder per model, the same lm-eval arguments, the claim
that keeps two runs off one model (harness.study.claims), the merged weights removed when the model
succeeds. A job gets everything it needs as arguments (pickled by submitit; the function by its
module and name): the function, the model's Planned entry, the run's Options and the study
settings.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.study import claims
from harness.study.executors import (
    LocalExecutor,
    SlurmExecutor,
    submitit_module,
    submitted,
)
from harness.study.jobs import Executor, Job, Outcome, SequentialExecutor, State

EXECUTORS = ("sequential", "local", "slurm")
JOB_NAME = "feyntune-reproduce"
SLURM_DEFAULT_MINUTES = 24 * 60
LEFT = "left to another run"
LOGS_NAME = ".logs"                    # inside --runs; a dot folder, which the runs reader skips
# sbatch parameters that have their own option here
OWN_OPTIONS = {"partition": "--partition", "time": "--time", "gpus_per_node": "--gpus-per-job",
               "cpus_per_task": "--cpus-per-job", "mem": "--mem-gb",
               "array_parallelism": "--array-parallelism", "job_name": None,
               "stderr_to_stdout": None}


@dataclass
class Cluster:
    executor: str
    logs: Path
    wait: bool
    gpus_per_job: int = 1
    jobs: int | None = None
    partition: str | None = None
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    minutes: int | None = None
    array_parallelism: int | None = None
    extra: dict = field(default_factory=dict)


# ---- options -----------------------------------------------------------------------------------

def register_options(p) -> None:
    group = p.add_argument_group("jobs (submitit)", "one job per model that still has work")
    group.add_argument("--executor", choices=EXECUTORS, default="sequential",
                       help="sequential: one job after another in this process (default); "
                       "local: processes on this machine, one job per GPU; slurm: SLURM jobs "
                       "(job arrays, afterok dependencies)")
    group.add_argument("--jobs", type=int, default=None,
                       help="local: jobs at once (default: the number of GPUs, or 1 without)")
    group.add_argument("--gpus-per-job", type=int, default=None, help="GPUs per job (default: 1)")
    group.add_argument("--partition", default=None, help="slurm: partition")
    group.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job")
    group.add_argument("--mem-gb", type=float, default=None, help="slurm: memory per job, GB")
    group.add_argument("--time", default=None,
                       help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS (default: "
                       "24:00:00 on slurm, none locally)")
    group.add_argument("--array-parallelism", type=int, default=None,
                       help="slurm: array tasks running at once (default: all)")
    group.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch parameter submitit knows (repeatable): "
                       "account=..., qos=..., constraint=..., exclude=..., setup='module load "
                       "cuda' ...")
    group.add_argument("--logs", default=None,
                       help="job logs, one per job (default: RUNS/.logs)")
    group.add_argument("--wait", action="store_true",
                       help="slurm: follow the jobs until they end (local jobs are always followed)")


def parse_minutes(text: str) -> int:
    """A SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, in whole minutes
    (rounded up)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise FeynTuneError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is None and second is None:
        seconds = first * 60
    elif days is None and third is None:
        seconds = first * 60 + second
    else:
        seconds = first * 3600 + (second or 0) * 60 + (third or 0) + (days or 0) * 86400
    if seconds <= 0:
        raise FeynTuneError(f"--time {text!r} must be positive")
    return -(-seconds // 60)


def parse_extra(pairs: list[str]) -> dict:
    """--slurm KEY=VALUE pairs as submitit SlurmExecutor parameters; `setup` may repeat (lines run
    before the job)."""
    extra: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise FeynTuneError(f"--slurm {pair!r}: expected KEY=VALUE (e.g. account=myproject)")
        if key in OWN_OPTIONS:
            own = OWN_OPTIONS[key]
            raise FeynTuneError(f"--slurm {key}: " + (f"use {own}" if own else "set by feyntune"))
        if key == "setup":
            extra.setdefault("setup", []).append(value)
        else:
            extra[key] = int(value) if value.isdigit() else value
    return extra


def cluster_options(args, runs: Path) -> Cluster | None:
    """The job options, checked, with the job logs in RUNS/.logs unless --logs; None for the
    run in one process (where job options are an error, not silently ignored)."""
    return cluster_from_args(args, Path(args.logs).expanduser() if args.logs
                             else runs / LOGS_NAME)


def cluster_from_args(args, logs: Path) -> Cluster | None:
    slurm_only = {"--partition": args.partition, "--cpus-per-job": args.cpus_per_job,
                  "--mem-gb": args.mem_gb, "--array-parallelism": args.array_parallelism,
                  "--slurm": args.slurm or None, "--wait": args.wait or None}
    given = {"--jobs": args.jobs, "--gpus-per-job": args.gpus_per_job, "--time": args.time,
             "--logs": args.logs, **slurm_only}
    if args.executor in (None, "sequential"):
        for name, value in given.items():
            if value is not None:
                which = "slurm" if name in slurm_only else "local" if name == "--jobs" \
                    else "slurm or local"
                raise FeynTuneError(f"{name} needs --executor {which}")
        return None
    if args.executor == "local":
        named = [name for name, value in slurm_only.items() if value is not None]
        if named:
            raise FeynTuneError(f"{', '.join(named)}: SLURM option(s), not for --executor local")
    elif args.jobs is not None:
        raise FeynTuneError("--jobs is for --executor local (on SLURM: --array-parallelism)")
    for name, value in {"--jobs": args.jobs, "--gpus-per-job": args.gpus_per_job,
                        "--cpus-per-job": args.cpus_per_job,
                        "--array-parallelism": args.array_parallelism}.items():
        if value is not None and value < 1:
            raise FeynTuneError(f"{name} must be at least 1")
    if args.mem_gb is not None and args.mem_gb <= 0:
        raise FeynTuneError("--mem-gb must be positive")
    extra = parse_extra(args.slurm)
    if extra:
        unknown = sorted(set(extra) - set(submitit_module().SlurmExecutor._valid_parameters()))
        if unknown:
            raise FeynTuneError(f"--slurm {', '.join(unknown)}: not an sbatch parameter submitit "
                                "knows (e.g. account, qos, constraint, exclude, gres, setup)")
    return Cluster(args.executor, logs, args.wait, args.gpus_per_job or 1, args.jobs,
                   args.partition, args.cpus_per_job, args.mem_gb,
                   parse_minutes(args.time) if args.time else None, args.array_parallelism, extra)


def writable_folder(folder: Path, option: str) -> None:
    """One clear line now rather than a failure in every job: `folder` can be created and
    written (a probe file of ours, removed at once)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".feyntune-write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise FeynTuneError(f"{option} {folder} cannot be written: {err.strerror or err}") \
            from None


def check_slurm(partition: str | None, dry_run: bool) -> None:
    """SLURM's commands are here (a dry run may be planned anywhere), and an unknown partition
    is refused when sinfo can list them (sbatch would refuse it too, after the plan)."""
    import shutil
    import subprocess

    missing = [name for name in ("sbatch", "srun") if shutil.which(name) is None]
    if missing and not dry_run:
        raise FeynTuneError(f"--executor slurm: {' and '.join(missing)} not found on PATH; "
                            "run on a SLURM login node (or --executor local)")
    if not partition or shutil.which("sinfo") is None:
        return
    try:
        listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                                timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return  # sinfo unusable: sbatch will say
    if listed and partition not in listed:
        raise FeynTuneError(f"--partition {partition}: no such SLURM partition (sinfo lists "
                            f"{', '.join(sorted(set(listed)))})")


# ---- the job -----------------------------------------------------------------------------------

def evaluate_job(evaluate_model, item, opts, settings: dict) -> State:
    """One model, in the job's process, evaluated as in the run in one process: DONE, or
    SKIPPED when another run finished it meanwhile; claims.Claimed when another live run is
    evaluating it (the executor's outcome ELSEWHERE)."""
    print(f"{item.study} ({item.label}): {', '.join(item.todo)} -> {item.out}", flush=True)
    ran = evaluate_model(item, opts, settings)
    return State.DONE if ran else State.SKIPPED


# ---- executors ---------------------------------------------------------------------------------

def sbatch_parameters(cluster: Cluster, count: int) -> dict:
    """The SlurmExecutor parameters of the array (sbatch's names, with underscores)."""
    params = {"job_name": JOB_NAME, "time": cluster.minutes or SLURM_DEFAULT_MINUTES,
              "gpus_per_node": cluster.gpus_per_job, "stderr_to_stdout": True,
              "array_parallelism": min(cluster.array_parallelism or count, count)}
    if cluster.partition:
        params["partition"] = cluster.partition
    if cluster.cpus_per_job:
        params["cpus_per_task"] = cluster.cpus_per_job
    if cluster.mem_gb:
        gb = cluster.mem_gb
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    params.update(cluster.extra)
    return params


def sbatch_line(params: dict, count: int) -> str:
    shown = {key: value for key, value in params.items()
             if key not in ("array_parallelism", "stderr_to_stdout", "setup")}
    shown["array"] = f"0-{count - 1}%{params['array_parallelism']}"
    flags = [f"--{key.replace('_', '-')}={shlex.quote(str(value))}"
             for key, value in sorted(shown.items())]
    flags += [f"(setup: {line})" for line in params.get("setup", [])]
    return " ".join(flags)


def local_gpus() -> list[int]:
    """The GPUs this process may use, as the indices LocalExecutor puts in CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        if all(part.isdigit() for part in ids):
            return [int(part) for part in ids]
    try:
        import torch
    except ImportError:
        return []
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def local_slots(cluster: Cluster) -> list[list[int]]:
    """One entry per job that may run at once: the GPUs it gets (none on a machine without)."""
    gpus = local_gpus()
    if not gpus:
        return [[] for _ in range(cluster.jobs or 1)]
    per = cluster.gpus_per_job
    slots = [gpus[i * per:(i + 1) * per] for i in range(len(gpus) // per)]
    if not slots:
        raise FeynTuneError(f"--gpus-per-job {per}: this machine has {len(gpus)} GPU(s)")
    if cluster.jobs and cluster.jobs > len(slots):
        raise FeynTuneError(f"--jobs {cluster.jobs}: {len(gpus)} GPU(s) at {per} per job allow "
                            f"{len(slots)} at once")
    return slots[:cluster.jobs] if cluster.jobs else slots


def executor_for(cluster: Cluster | None, job_name: str | None = None) -> Executor:
    """The executor the options chose (sequential without --executor local|slurm)."""
    if cluster is None:
        return SequentialExecutor()
    if cluster.executor == "local":
        slots = local_slots(cluster)
        return LocalExecutor(cluster.logs, gpus=[gpu for slot in slots for gpu in slot],
                             at_once=len(slots), minutes=cluster.minutes)
    params = {key: value for key, value in sbatch_parameters(cluster, 0).items()
              if key not in ("array_parallelism", "gpus_per_node")}
    if cluster.array_parallelism:
        params["array_parallelism"] = cluster.array_parallelism
    if job_name:
        params["job_name"] = job_name
    else:
        params.pop("job_name")
    return SlurmExecutor(cluster.logs, params, wait=cluster.wait)


def executor_from_args(args, logs: Path) -> Executor:
    """The executor of `register_options`' options, checked (job logs in `logs` unless --logs)."""
    return executor_for(cluster_from_args(args, Path(args.logs).expanduser() if args.logs
                                          else Path(logs)))


# ---- reproduce's evaluations as jobs -----------------------------------------------------------

def dispatch(cluster: Cluster, evaluate_model, planned: list, opts, settings: dict,
             dry_run: bool) -> int:
    """Run (or, for a dry run, show) one job per model that still has work, each calling
    `evaluate_model(item, opts, settings)` (a module-level function: jobs import it by name)."""
    submitit_module()
    todo = [item for item in planned if item.todo]
    taken = {item.study: claims.holder(item.out) for item in todo}
    for item in todo:
        if taken[item.study]:
            print(f"  {item.study}: being evaluated by another run "
                  f"({claims.describe_owner(taken[item.study])}), not submitted", flush=True)
    todo = [item for item in todo if not taken[item.study]]
    if cluster.executor == "slurm":
        check_slurm(cluster.partition, dry_run)
        queued = submitted(cluster.logs) if not dry_run else {}
        for item in [item for item in todo if job_name(item) in queued]:
            entry = queued[job_name(item)]
            print(f"  {item.study}: already queued as SLURM job {entry['job_id']} "
                  f"({entry['state']}), not submitted again", flush=True)
        todo = [item for item in todo if job_name(item) not in queued]
    if not todo:
        print("jobs: nothing to submit")
        return 0
    if cluster.executor == "slurm":
        params = sbatch_parameters(cluster, len(todo))
        print(f"slurm: {len(todo)} job(s) as one array, logs in {cluster.logs}: "
              f"sbatch {sbatch_line(params, len(todo))}", flush=True)
    else:
        slots = local_slots(cluster)
        gpus = ", ".join(",".join(map(str, slot)) for slot in slots if slot)
        print(f"local: {len(todo)} job(s), {len(slots)} at once"
              + (f" (GPUs {gpus})" if gpus else " (no GPU)") + f", logs in {cluster.logs}",
              flush=True)
    for number, item in enumerate(todo):
        print(f"  job {number}: {item.study:<8} {', '.join(item.todo)} -> {item.out}", flush=True)
    if dry_run:
        return 0
    writable_folder(opts.runs, "--runs")
    writable_folder(cluster.logs, "--logs")
    jobs = [Job(job_name(item), "eval",
                functools.partial(evaluate_job, evaluate_model, item, opts, settings),
                gpus=cluster.gpus_per_job) for item in todo]
    outcomes = executor_for(cluster, JOB_NAME).run(jobs)
    if cluster.executor == "slurm" and not cluster.wait:
        print(f"when they end: feyntune leaderboard --runs {opts.runs}; the same command again "
              "retries failed models (finished and queued ones are not submitted again)",
              flush=True)
        return 0
    return summary(outcomes, opts)


def job_name(item) -> str:
    return f"eval/{item.study}"


def summary(outcomes: list[Outcome], opts) -> int:
    failed = [f"{outcome.job.split('/', 1)[-1]} ({outcome.detail})" for outcome in outcomes
              if outcome.state in (State.FAILED, State.BLOCKED)]
    left = sum(outcome.state is State.ELSEWHERE for outcome in outcomes)
    shared = f", {left} {LEFT}" if left else ""
    print(f"jobs: {len(outcomes) - len(failed) - left} ended well{shared}, {len(failed)} failed. "
          f"Compare with the published figures: feyntune leaderboard --runs {opts.runs}",
          flush=True)
    if failed:
        raise FeynTuneError(f"{len(failed)} job(s) failed: {'; '.join(failed)}; the same command "
                            "again retries them (finished models are kept)")
    return 0
