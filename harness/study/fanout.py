"""`feyntune reproduce --executor slurm|local`: one job per model that still has work, through
submitit (https://github.com/facebookincubator/submitit).

- slurm: one SLURM job array (SlurmExecutor.map_array), one array task per model, with the
  partition, GPUs, CPUs, memory, time limit, array parallelism and any other sbatch parameter
  submitit knows. Returns once submitted (job ids and how to follow them), or follows the jobs
  with --wait.
- local: the same jobs as processes on this machine (LocalExecutor), one model per GPU (each job
  sees only its own GPUs through CUDA_VISIBLE_DEVICES), as many at once as there are GPUs, or
  --jobs N.

Each job runs `run_job` with the evaluation function the run in one process uses
(reproduce.evaluate_model): the same run folder per model, the same lm-eval arguments, the claim
that keeps two runs off one model (harness.study.claims), the merged weights removed when the model
succeeds. A job gets everything it needs as arguments (pickled by submitit; the function by its
module and name): the function, the model's Planned entry, the run's Options and the study
settings.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.ground.errors import FeynTuneError, first_line
from harness.study import claims

EXECUTORS = ("slurm", "local")
JOB_NAME = "feyntune-reproduce"
SLURM_DEFAULT_MINUTES = 24 * 60
LOCAL_DEFAULT_MINUTES = 30 * 24 * 60   # submitit's local jobs are killed at their time limit
LEFT = "left to another run"
LOGS_NAME = ".logs"                    # inside --runs; a dot folder, which the runs reader skips
INSTALL_HINT = "pip install 'feyntune[cluster]' (or: pip install 'submitit>=1.5.4')"
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
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="slurm: one SLURM job array; local: processes on this machine, one "
                       "model per GPU (default: one model after another in this process)")
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
    """The job options, checked; None for the run in one process (where job options are an
    error, not silently ignored)."""
    slurm_only = {"--partition": args.partition, "--cpus-per-job": args.cpus_per_job,
                  "--mem-gb": args.mem_gb, "--array-parallelism": args.array_parallelism,
                  "--slurm": args.slurm or None, "--wait": args.wait or None}
    given = {"--jobs": args.jobs, "--gpus-per-job": args.gpus_per_job, "--time": args.time,
             "--logs": args.logs, **slurm_only}
    if args.executor is None:
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
    logs = Path(args.logs).expanduser() if args.logs else runs / LOGS_NAME
    return Cluster(args.executor, logs, args.wait, args.gpus_per_job or 1, args.jobs,
                   args.partition, args.cpus_per_job, args.mem_gb,
                   parse_minutes(args.time) if args.time else None, args.array_parallelism, extra)


def submitit_module():
    try:
        import submitit
    except ImportError:
        raise FeynTuneError(f"--executor needs submitit, which is not installed: {INSTALL_HINT}") \
            from None
    return submitit


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

def run_job(evaluate_model, item, opts, settings: dict) -> str:
    """One model, in the job's process, evaluated as in the run in one process. Returns what
    happened; raises (the job fails) when the model fails."""
    print(f"{item.study} ({item.label}): {', '.join(item.todo)} -> {item.out}", flush=True)
    try:
        ran = evaluate_model(item, opts, settings)
    except claims.Claimed as err:
        return f"{LEFT}: {err}"
    return f"evaluated {', '.join(ran)}" if ran else "already finished by another run"


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


# ---- dispatch ----------------------------------------------------------------------------------

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


def dispatch(cluster: Cluster, evaluate_model, planned: list, opts, settings: dict,
             dry_run: bool) -> int:
    """Submit (or, for a dry run, show) one job per model that still has work, each calling
    `evaluate_model(item, opts, settings)` (a module-level function: jobs import it by name)."""
    submitit = submitit_module()
    todo = [item for item in planned if item.todo]
    taken = {item.study: claims.holder(item.out) for item in todo}
    for item in todo:
        if taken[item.study]:
            print(f"  {item.study}: being evaluated by another run "
                  f"({claims.describe_owner(taken[item.study])}), not submitted", flush=True)
    todo = [item for item in todo if not taken[item.study]]
    if cluster.executor == "slurm":
        check_slurm(cluster.partition, dry_run)
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
    if cluster.executor == "slurm":
        return submit_slurm(submitit, cluster, params, evaluate_model, todo, opts, settings)
    return run_local(submitit, cluster, slots, evaluate_model, todo, opts, settings)


def submit_slurm(submitit, cluster: Cluster, params: dict, evaluate_model, todo: list, opts,
                 settings: dict) -> int:
    try:
        executor = submitit.SlurmExecutor(folder=cluster.logs)
        executor.update_parameters(**params)
        n = len(todo)
        jobs = executor.map_array(run_job, [evaluate_model] * n, todo, [opts] * n, [settings] * n)
    except RuntimeError as err:  # no srun here, sbatch refused (FailedJobError), bad value
        first = job_failure(err)
        raise FeynTuneError(f"SLURM submission failed: {first}") from None
    except ValueError as err:
        raise FeynTuneError(f"SLURM parameters refused by submitit: "
                            f"{first_line(err)}") from None
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted SLURM array {array}: {len(jobs)} job(s)", flush=True)
    for job, item in zip(jobs, todo):
        print(f"  {job.job_id:<12} {item.study:<8} log {job.paths.stdout}", flush=True)
    print(f"follow: squeue -j {array}; sacct -j {array} --format=JobID,State,Elapsed; "
          f"tail -f {jobs[0].paths.stdout}", flush=True)
    if not cluster.wait:
        print(f"when they end: feyntune leaderboard --runs {opts.runs}; the same command again "
              "retries failed models (finished ones are not submitted again)", flush=True)
        return 0
    return follow(list(zip(todo, jobs)), opts, poll=10.0)


def run_local(submitit, cluster: Cluster, slots: list[list[int]], evaluate_model, todo: list,
              opts, settings: dict) -> int:
    """At most len(slots) jobs at once, each on its slot's GPUs; the next starts when one ends."""
    executor = submitit.LocalExecutor(folder=cluster.logs)
    queue, running, ended = list(todo), [], []
    free = list(slots)
    try:
        while queue or running:
            while queue and free:
                slot, item = free.pop(0), queue.pop(0)
                executor.update_parameters(
                    timeout_min=cluster.minutes or LOCAL_DEFAULT_MINUTES, stderr_to_stdout=True,
                    gpus_per_node=len(slot), visible_gpus=tuple(slot))
                job = executor.submit(run_job, evaluate_model, item, opts, settings)
                on = f" on GPU {','.join(map(str, slot))}" if slot else ""
                print(f"  started {item.study}{on} (job {job.job_id}, log {job.paths.stdout})",
                      flush=True)
                running.append((item, job, slot))
            for entry in list(running):
                item, job, slot = entry
                if job.done():
                    running.remove(entry)
                    free.append(slot)
                    ended.append(report(item, job, len(ended) + 1, len(todo)))
            time.sleep(0.5)
    except KeyboardInterrupt:
        for _, job, _ in running:
            job.cancel()
        raise
    return summary(ended, opts)


def follow(pairs: list, opts, poll: float) -> int:
    """Wait for submitted jobs, a line as each ends; non-zero when any failed."""
    pending, ended = list(pairs), []
    while pending:
        for entry in list(pending):
            item, job = entry
            if job.done():
                pending.remove(entry)
                ended.append(report(item, job, len(ended) + 1, len(pairs)))
        if pending:
            time.sleep(poll)
    return summary(ended, opts)


def report(item, job, number: int, total: int) -> tuple[str, str | None]:
    """Print the line for an ended job; (study, its failure or what it did)."""
    try:
        outcome = job.result()
    except Exception as err:  # noqa: BLE001 -- submitit raises the job's error or SLURM's
        failure = job_failure(err)
        print(f"[{number}/{total}] {item.study} (job {job.job_id}): FAILED: {failure} "
              f"(log {job.paths.stdout})", flush=True)
        return item.study, f"FAILED: {failure}"
    print(f"[{number}/{total}] {item.study} (job {job.job_id}): {outcome}", flush=True)
    return item.study, outcome


def summary(ended: list[tuple[str, str]], opts) -> int:
    failed = [f"{study} ({why[len('FAILED: '):]})" for study, why in ended
              if why.startswith("FAILED: ")]
    left = sum(why.startswith(LEFT) for _, why in ended)
    shared = f", {left} {LEFT}" if left else ""
    print(f"jobs: {len(ended) - len(failed) - left} ended well{shared}, {len(failed)} failed. "
          f"Compare with the published figures: feyntune leaderboard --runs {opts.runs}",
          flush=True)
    if failed:
        raise FeynTuneError(f"{len(failed)} job(s) failed: {'; '.join(failed)}; the same command "
                            "again retries them (finished models are kept)")
    return 0
