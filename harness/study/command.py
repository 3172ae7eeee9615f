"""`feyntune study run|plan|status FILE`: one study file, trained and evaluated end to end.

    feyntune study plan studies/mine.yaml     # every job with its estimated GPU time
    feyntune study run studies/mine.yaml      # build missing sets, train missing adapters,
                                              # evaluate models lacking results, the leaderboard
    feyntune study run studies/mine.yaml --stage train          # one stage only
    feyntune study run studies/mine.yaml --executor local       # one job per GPU here
    feyntune study run studies/mine.yaml --executor slurm --partition gpu --time 24:00:00
    feyntune study status studies/mine.yaml   # each model: to do, queued, training (step n of
                                              # N), trained, evaluated, or failed with its log

Everything goes into one study folder (--out, default results/studies/<name>/): data/,
adapters/, configs/, runs/, logs/, jobs.json and the leaderboard (harness/study/runner.py).
Re-running does only what is missing. The file's keys: harness/study/spec.py; the reference
study's file: studies/reference.yaml.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from harness.evaluate import backends
from harness.ground.errors import FeynTuneError
from harness.ground.home import feyntune_home
from harness.study import fanout
from harness.study.jobs import STAGES, SUCCEEDED, State


def _setup(args):
    from harness.study import runner, spec

    study = spec.load(args.file)
    out = Path(args.out).expanduser() if args.out else runner.default_out(study)
    folders = runner.Folders(out.resolve())
    options = runner.EvalOptions(
        backend=args.backend, batch_size=getattr(args, "batch_size", "auto"),
        device=getattr(args, "device", None), seed=getattr(args, "seed", 1234),
        work=Path(getattr(args, "work", None) or feyntune_home() / "reproduce").expanduser(),
        keep_merged=getattr(args, "keep_merged", False),
        semscore_model=getattr(args, "semscore_model", None),
        memory_share=getattr(args, "memory_share", None))
    return study, folders, options


def plan(args) -> int:
    from harness.study import runner

    study, folders, options = _setup(args)
    work = runner.build_jobs(study, folders, options, args.stage)
    for line in runner.describe_plan(study, folders, work, options):
        print(line, flush=True)
    return 0


def status(args) -> int:
    from harness.study import runner

    study, folders, options = _setup(args)
    queued = fanout.submitted(folders.logs)
    states = runner.model_states(study, folders, options, queued)
    width = max(len(name) for name, _ in states)
    print(f"study {study.name}: {folders.root}")
    for name, state in states:
        print(f"  {name:<{width}}  {state}")
    missing = runner.missing_sets(study, folders)
    built = [name for name in study.built_sets if name not in missing]
    if study.built_sets:
        print(f"  sets: {', '.join(built) or 'none'} built"
              + (f"; to build: {', '.join(missing)}" if missing else ""))
    board = folders.root / runner.LEADERBOARD
    print(f"  leaderboard: {board if board.is_file() else 'not written yet'}")
    return 0


def run(args) -> int:
    from harness.study import runner

    study, folders, options = _setup(args)
    work = runner.build_jobs(study, folders, options, args.stage, gpus=args.gpus_per_job or 1)
    for line in runner.describe_plan(study, folders, work, options):
        print(line, flush=True)
    if not work.jobs:
        return 0
    executor = fanout.executor_from_args(args, folders.logs)  # its options checked first
    runner.check_before_jobs(study, folders, work, options)
    jobs = _not_queued(work.jobs, fanout.submitted(folders.logs))
    if not jobs:
        return 0
    fanout.writable_folder(folders.root, "--out")
    for job in jobs:
        if job.stage == "train":
            runner.write_overrides(folders, study.model(job.name.removeprefix("train/")))
    outcomes = executor.run(jobs)
    runner.record_outcomes(folders, outcomes)
    counts = Counter(outcome.state for outcome in outcomes)
    print(f"study {study.name}: " + ", ".join(f"{n} {state.value}" for state, n in
                                              sorted(counts.items(), key=lambda i: i[0].value))
          + f" -> feyntune study status {args.file}" + (f" --out {args.out}" if args.out else ""))
    failed = [o for o in outcomes if o.state not in SUCCEEDED
              and o.state not in (State.SUBMITTED, State.ELSEWHERE)]
    if failed:
        raise FeynTuneError(f"{len(failed)} job(s) did not succeed: " + "; ".join(
            f"{o.job} {o.state.value}" + (f" ({o.detail})" if o.detail else "")
            + (f", log {o.log}" if o.log else "") for o in failed)
            + "; re-run to retry them (finished work is kept)")
    return 0


def _not_queued(jobs: list, queued: dict[str, dict]) -> list:
    """The jobs an earlier submission has not left queued or running, without those that wait
    for one that it has (they would run too early); each left out is said."""
    kept, left = [], set(queued)
    for job in jobs:
        if job.name in left or any(name in left for name in job.after):
            left.add(job.name)
            where = f"job {queued[job.name]['job_id']}" if job.name in queued else \
                "waits for a job submitted earlier"
            print(f"  {job.name}: not submitted again ({where})", flush=True)
            continue
        kept.append(job)
    return kept


def register(sub) -> None:
    p = sub.add_parser("study", help="run a study file: build sets, train adapters, evaluate, "
                       "report", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {"run": "do whatever the study still lacks", "plan": "every job with its "
             "estimated GPU time, nothing run", "status": "each model's state"}
    for name, func in (("run", run), ("plan", plan), ("status", status)):
        q = actions.add_parser(name, help=helps[name], description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        q.add_argument("file", help="the study file (YAML), e.g. studies/reference.yaml")
        q.add_argument("--out", default=None,
                       help="the study folder (default: results/studies/<the study's name>)")
        q.add_argument("--backend", choices=backends.BACKENDS, default="hf",
                       help="lm-eval model that evaluates: hf (default) or vllm")
        if name != "status":
            q.add_argument("--stage", choices=STAGES, default=None,
                           help="one stage only: data, train, eval or report")
        if name == "run":
            q.add_argument("--batch-size", default="auto", help="lm-eval batch size")
            q.add_argument("--device", default=None, help="lm-eval device")
            q.add_argument("--seed", type=int, default=1234, help="lm-eval seed (default 1234)")
            q.add_argument("--semscore-model", default=None,
                           help="SemScore embedder (name or folder)")
            q.add_argument("--memory-share", type=float, default=None,
                           help="vllm: share of GPU memory (on a CPU: of RAM)")
            q.add_argument("--work", default=None,
                           help="merged models, removed after their evaluation (default: "
                           f"{feyntune_home() / 'reproduce'})")
            q.add_argument("--keep-merged", action="store_true", help="keep the merged models")
            fanout.register_options(q)
        q.set_defaults(func=func)

