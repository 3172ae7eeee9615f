"""`feyntune reproduce`: the reference study's evaluation, in one command.

Evaluates the study's base model and its published adapters (studies/reference.yaml; default all 20)
on the published test split with the published settings: each adapter merged into the 16-bit base
(`feyntune merge`), float16 weights, sampling at temperature 0.8 with at most 1024 new tokens,
through lm-eval's `hepth_completion` task like `feyntune eval`. One run folder per model under
--runs; a model whose run folder already holds the requested subtasks is skipped, so a crashed
run resumes where it stopped; a model another live run is evaluating (its claim, harness.study.claims)
is left to it. `feyntune leaderboard` then shows each measured figure beside the published one.

    feyntune reproduce                                   # everything, from the hub
    feyntune reproduce --models s3,s3_qkv --tasks perplexity --limit 500
    feyntune reproduce --base /models/Llama-3.1-8B --adapters /models/adapters   # offline/mirror
    feyntune reproduce --backend vllm                    # through vLLM (harness/evaluate/backends.py)
    feyntune reproduce --executor local                  # one model per GPU on this machine
    feyntune reproduce --executor slurm --partition gpu  # one SLURM job array (harness.study.fanout)

Before any model is merged or loaded, the base and every adapter are checked (their
configurations load), and so are the backend and, for vLLM, the memory share it may reserve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness.evaluate import backends
from harness.evaluate.documents import user_path
from harness.ground.errors import FeynTuneError, first_line
from harness.ground.names import short_name
from harness.ground.subtasks import GEN_TASK, PPL_TASK, RUNS_DIR
from harness.study import claims, fanout

TASK_CHOICES = {"both": (PPL_TASK, GEN_TASK), "perplexity": (PPL_TASK,),
                "generation": (GEN_TASK,)}
DEFAULT_RUNS = f"{RUNS_DIR}/reproduce"
# Written into each merged folder: it was made by this command and may be removed by it.
MERGED_MARKER = ".feyntune-reproduce.json"
# What a marker written before a key existed stands for.
OLD_MARKER_DEFAULTS = {"backend": "hf"}


@dataclass
class Planned:
    study: str
    label: str                 # what the model is, for the progress lines
    weights: str               # base: hub id or folder; adapter: hub id or folder of the adapter
    is_base: bool
    out: Path                  # this model's run folder
    todo: tuple[str, ...]      # subtasks still to run
    marker: dict               # what the run stands for (harness.runs.marker)


# ---- planning ----------------------------------------------------------------------------------

def select_models(registry, names: str | None) -> list:
    """The base model plus the chosen adapters ("all", or a comma list of study names in any
    case, as the registry matches them everywhere else)."""
    if not names or names.strip().lower() == "all":
        return registry.models
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    # FeynTuneError for an unknown name
    chosen = [registry.model(registry.name_of(name) or name) for name in wanted]
    base = registry.base
    return [base] + [m for m in registry.adapters if m in chosen]


def adapter_source(model, adapters_dir: Path | None, overrides: dict[str, str]) -> str:
    """Where an adapter comes from: --adapter NAME=PATH, else a folder in --adapters named by the
    study name or the hub name's last part, else the hub id."""
    if model.study in overrides:
        return overrides[model.study]
    if adapters_dir is None:
        return model.hub
    names = (model.study, short_name(model.hub))
    for name in names:
        if (adapters_dir / name / "adapter_config.json").is_file():
            return str(adapters_dir / name)
    raise FeynTuneError(f"no adapter for {model.study} in {adapters_dir} (looked for a folder "
                        f"{' or '.join(names)} with adapter_config.json)")


def finished_tasks(out: Path, marker: dict, since: float | None = None) -> set[str]:
    """Subtasks with a complete results + samples pair in a model's run folder, from a run of
    the same model with the same settings (`marker`): one with another --limit, --dtype,
    --data or token cap is not this run's result. `since`: only the runs written after it."""
    from harness.runs import lmeval_outputs

    done = set()
    for run in lmeval_outputs.scan(out, since=since).runs:
        recorded = run.study
        # runs recorded before there was a choice of backend were made with hf; a key that an
        # older marker lacks (seed, SemScore model, adapter digest) is unknown there, so such a
        # run counts only where this run's value is unset too
        if recorded and all(recorded.get(key, OLD_MARKER_DEFAULTS.get(key)) == value
                            for key, value in marker.items()):
            done.update(run.samples)
    return done


def parse_overrides(pairs: list[str], registry=None, models: list | None = None) -> dict[str, str]:
    """--adapter NAME=PATH pairs by study name. With the registry and the selected models, a
    name that is no study adapter, or one not selected, is an error: it would be ignored."""
    overrides = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise FeynTuneError(f"--adapter {pair!r}: expected NAME=PATH (e.g. s3=/models/s3)")
        name = name.strip()
        if registry is not None:
            model = registry.model(registry.name_of(name) or name)
            if model.is_base:
                raise FeynTuneError(f"--adapter {pair}: {model.study} is the base model; "
                                    "give its folder with --base")
            if models is not None and model not in models:
                raise FeynTuneError(f"--adapter {pair}: {model.study} is not among the models "
                                    "of this run (add it to --models)")
            name = model.study
        overrides[name] = path.strip()
    return overrides


def plan(models: list, base: str, adapters_dir: Path | None, overrides: dict,
         runs_dir: Path, tasks: tuple[str, ...], run_settings: dict) -> list[Planned]:
    """Each model's run; `run_settings` (dtype, limit, max_new_tokens, data, backend, seed,
    SemScore model) go into its marker, with the adapter's content (a local adapter's sha256:
    one retrained in the same folder is another adapter), so that a finished run with other
    settings or weights is not taken for this one."""
    from harness.runs.marker import adapter_digest

    planned = []
    for model in models:
        weights = base if model.is_base else adapter_source(model, adapters_dir, overrides)
        if "," in weights:
            raise FeynTuneError(f"{weights}: a path with a comma cannot be passed to lm-eval")
        out = runs_dir / model.study
        label = "base model" if model.is_base else f"{model.lora} {model.mix}"
        marker = {"study": model.study, "base": base, "adapter": None if model.is_base else weights,
                  "adapter_sha256": None if model.is_base else adapter_digest(weights),
                  "mix": model.mix, "lora": model.lora, **run_settings}
        done = finished_tasks(out, marker)
        planned.append(Planned(model.study, label, weights, model.is_base, out,
                               tuple(t for t in tasks if t not in done), marker))
    return planned


def document_count(registry, data: str | None, limit: int | None) -> int:
    if data:
        from harness.evaluate.documents import load_documents

        count = len(load_documents(data).docs)
    else:
        count = int(registry.documents["count"])
    return min(count, limit) if limit else count


def estimate_seconds(registry, documents: int, task: str, max_new_tokens: int,
                     generation_tokens_per_second: float | None = None) -> float:
    """Seconds one model needs for one subtask at the registry's assumed throughput (generation:
    the chosen backend's figure when given)."""
    speed = registry.throughput
    if task == PPL_TASK:
        tokens_per_second = speed["perplexity_tokens"] / speed["perplexity_seconds"]
        return documents * speed["tokens_per_abstract"] / tokens_per_second
    # as if every completion ran to the limit: an upper bound
    return documents * max_new_tokens / (generation_tokens_per_second
                                         or speed["generation_tokens_per_second"])


def shown_path(path: Path) -> str:
    """A file of this repository by its path in it (studies/reference.yaml), others as given."""
    repo = Path(__file__).resolve().parents[2]
    path = Path(path)
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def describe(registry, planned: list[Planned], documents: int, max_new_tokens: int,
             settings: dict, backend: str = "hf") -> list[str]:
    """The plan and the time estimate, as printed before anything runs."""
    speed = registry.throughput
    gen_speed, gen_source = backends.generation_throughput(registry, backend)
    lines = [(f"reproducing the reference study: {len(planned)} model(s), {documents} "
              f"document(s) each; merged into the base in {settings['dtype']}, generation at "
              f"temperature {settings['temperature']} with at most {max_new_tokens} new tokens")]
    total = {PPL_TASK: 0.0, GEN_TASK: 0.0}
    for item in planned:
        if item.todo:
            for task in item.todo:
                total[task] += estimate_seconds(registry, documents, task, max_new_tokens,
                                                gen_speed)
            state = "to run: " + ", ".join(t.rsplit("_", 1)[-1] for t in item.todo)
        else:
            state = "already done, skipped"
        lines.append(f"  {item.study:<8} {item.label:<16} {item.weights}  [{state}]")
    lines.append(
        f"estimated GPU time: {duration(sum(total.values()))} (perplexity "
        f"{duration(total[PPL_TASK])}, generation at most {duration(total[GEN_TASK])}; merging "
        f"not counted). ASSUMED, not measured here: {speed['gpu']} figures for an 8B model at "
        f"batch 64 ({speed['perplexity_tokens']:,} tokens scored in {speed['perplexity_seconds']} "
        f"s with hf{'' if backend == 'hf' else ', taken for ' + backend + ' too'}; {gen_source}), "
        f"{speed['tokens_per_abstract']} tokens per abstract, every completion at the limit "
        f"({shown_path(registry.path)}, throughput)")
    return lines


# ---- running -----------------------------------------------------------------------------------

def lm_eval_argv(weights: str, tasks: tuple[str, ...], out: Path, settings: dict,
                 max_new_tokens: int, metadata: dict, batch_size: str, limit: int | None,
                 device: str | None, seed: int, engine: backends.Engine | None = None,
                 adapter: str | None = None) -> list[str]:
    """`adapter`: an unmerged adapter on the base `weights` (hf's peft=)."""
    engine = engine or backends.Engine("hf", settings["dtype"], seed)
    model_args = engine.model_args(weights) + (f",peft={adapter}" if adapter else "")
    argv = ["run", "--model", engine.backend, "--model_args", model_args,
            "--tasks", ",".join(tasks), "--batch_size", str(batch_size), "--log_samples",
            "--output_path", str(out), "--seed", str(seed), "--metadata", json.dumps(metadata)]
    if GEN_TASK in tasks:
        argv += ["--gen_kwargs", engine.gen_kwargs(settings["temperature"], max_new_tokens)]
    if limit:
        argv += ["--limit", str(limit)]
    return argv + engine.kind.device_argv(device)


def local_adapter(source: str) -> Path:
    """A local folder for an adapter given as a folder or a hub id (downloaded to the hub cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source))
    except Exception as err:  # noqa: BLE001 -- hub errors have many types; the message says it
        first = first_line(err)
        raise FeynTuneError(f"cannot get adapter {source}: {first}") from None


def merged_folder(item: Planned, work: Path) -> Path:
    """Where a model's merge goes. One folder per run folder: its owner is whoever holds the
    run folder's claim, so two runs of one model for different --runs never write one merge at
    once."""
    digest = hashlib.sha256(str(item.out.resolve()).encode("utf-8")).hexdigest()[:8]
    return work / f"{item.study}-{digest}"


def merged_model(item: Planned, base: str, work: Path, dtype: str) -> Path:
    """The adapter merged into the base (reused when an earlier run of this command made it
    from the same adapter content)."""
    from finetune.merge import merge_adapter

    folder = merged_folder(item, work)
    marker = folder / MERGED_MARKER
    content = item.marker.get("adapter_sha256")
    if folder.exists():
        if not marker.is_file():
            raise FeynTuneError(f"{folder} exists and was not written by `feyntune reproduce`; "
                                "move it away or choose another --work")
        try:
            state = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FeynTuneError(f"{marker} is damaged ({err}); remove {folder} and run again") \
                from None
        if state.get("complete") and state.get("dtype") == dtype and state.get("base") == base \
                and state.get("adapter") == item.weights \
                and state.get("adapter_sha256") == content:
            return folder
        shutil.rmtree(folder)  # an interrupted or different merge of ours
    folder.mkdir(parents=True)
    record = {"base": base, "adapter": item.weights, "adapter_sha256": content, "dtype": dtype,
              "complete": False}
    marker.write_text(json.dumps(record), encoding="utf-8")
    merge_adapter(base, local_adapter(item.weights), folder, dtype=dtype)
    marker.write_text(json.dumps({**record, "complete": True}), encoding="utf-8")
    return folder


def remove_merged(folder: Path) -> None:
    if (folder / MERGED_MARKER).is_file():
        shutil.rmtree(folder)


@dataclass
class Options:
    base: str
    runs: Path
    work: Path
    data: str | None
    semscore_model: str | None
    limit: int | None
    batch_size: str
    device: str | None
    seed: int
    max_new_tokens: int
    keep_merged: bool
    engine: backends.Engine | None = None
    hub: str | None = None     # documents from a hub dataset ("NAME" or "NAME:SPLIT")


def evaluate_model(item: Planned, opts: Options, settings: dict) -> tuple[str, ...]:
    """One model's missing subtasks, under its run folder's claim (harness.study.claims); the
    subtasks it ran: none when another run finished them meanwhile. claims.Claimed when another
    live run is evaluating the model."""
    with claims.claim(item.out):
        todo = tuple(t for t in item.todo if t not in finished_tasks(item.out, item.marker))
        if todo:
            _evaluate(replace(item, todo=todo), opts, settings)
        return todo


def _evaluate(item: Planned, opts: Options, settings: dict) -> None:
    merges = not item.is_base and settings.get("merge", True)
    folder = merged_folder(item, opts.work) if merges else None
    try:
        _merge_and_run(item, opts, settings)
    except Exception:
        # a failed model leaves no merged copy behind (16 GB at 8B) unless asked to; an
        # interrupted one keeps a complete merge for the next run to reuse
        if folder is not None and not opts.keep_merged:
            remove_merged(folder)
        raise
    if folder is not None and not opts.keep_merged:
        remove_merged(folder)


def _merge_and_run(item: Planned, opts: Options, settings: dict) -> None:
    from harness.evaluate.command import run_lm_eval
    from harness.runs.marker import STUDY_METADATA

    weights = opts.base
    adapter = None
    merge = not item.is_base and settings.get("merge", True)
    if merge:  # merged now, just before its evaluation: never ahead of it
        print(f"    merging {item.weights} into {opts.base} ({settings['dtype']})", flush=True)
        weights = str(merged_model(item, opts.base, opts.work, settings["dtype"]))
    elif not item.is_base:  # the study evaluates its adapters unmerged
        adapter = str(local_adapter(item.weights))
    metadata = {STUDY_METADATA: {**item.marker, "merged": merge}}
    if opts.data:
        metadata["hepth_data"] = str(user_path(opts.data))
    elif opts.hub:
        metadata["hepth_hub"] = opts.hub
    if opts.semscore_model:
        metadata["semscore_model"] = opts.semscore_model
    argv = lm_eval_argv(weights, item.todo, item.out, settings, opts.max_new_tokens, metadata,
                        run_batch_size(opts), opts.limit, opts.device, opts.seed, opts.engine,
                        adapter)
    started = time.time() - 1.0  # file times have coarse resolution on some filesystems
    own = opts.engine is not None and opts.engine.kind.own_process
    code = run_in_own_process(argv) if own else run_lm_eval(argv)
    if code != 0:
        raise FeynTuneError(f"lm-eval exited with {code}")
    missing = set(item.todo) - finished_tasks(item.out, item.marker, since=started)
    if missing:
        raise FeynTuneError(f"lm-eval wrote no complete samples for {', '.join(sorted(missing))}")


def run_in_own_process(argv: list[str]) -> int:
    """lm-eval in a child process, for vLLM: lm-eval never shuts its vLLM engine down, and the
    engine keeps what it reserved (by default 90% of the GPU's memory) until the process that
    made it ends, so the next model's engine in the same process would find no memory free.

    The child is a fresh interpreter in a session of its own: Ctrl-C reaches this process only,
    which then ends the child and every process under it (engine, workers, and the resource
    tracker the child starts for itself, instead of sharing this process's) all at once and
    removes the shared-memory segments they had mapped (a killed engine leaves its
    /dev/shm/psm_* behind), before the interrupt goes on. Before, the child polled its dead
    engine forever and the run hung."""
    import subprocess

    code = ("import json, sys; from harness.study.reproduce import _lm_eval_and_exit; "
            "_lm_eval_and_exit(json.loads(sys.argv[1]))")
    process = subprocess.Popen([sys.executable, "-c", code, json.dumps(argv)],
                               start_new_session=True)
    try:
        return process.wait()
    except BaseException:
        import psutil

        try:
            tree = [psutil.Process(process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        # all at once and without a word: ended one by one, an engine reports its workers'
        # deaths as tracebacks; lm-eval's unfinished work is lost either way
        end_processes(tree, grace_seconds=10.0, at_once=True)
        process.wait()
        raise


def _lm_eval_and_exit(argv: list[str]) -> None:
    from harness.evaluate.command import run_lm_eval

    try:
        code = run_lm_eval(argv)
    finally:
        end_child_processes()
    sys.exit(code)


def end_child_processes(grace_seconds: float = 30.0) -> None:
    """End the engine processes lm-eval left running (vLLM's engine core and its workers): a
    spawned process waits at its exit for its children, and these never end by themselves.

    multiprocessing's resource tracker is left alone: it ignores SIGTERM by design (so it would
    cost the whole grace period and then be killed), ends by itself once this process exits,
    and then removes whatever shared memory the engine registered and left behind."""
    import psutil

    children = [process for process in psutil.Process().children(recursive=True)
                if not is_resource_tracker(process)]
    end_processes(children, grace_seconds)


def is_resource_tracker(process) -> bool:
    """multiprocessing's resource tracker (`python -c 'from multiprocessing.resource_tracker
    import main; main(FD)'`)."""
    import psutil

    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


# Python's SharedMemory segments (vLLM's message queues) and named semaphores (multiprocessing).
SHARED_MEMORY_PREFIXES = ("/dev/shm/psm_", "/dev/shm/sem.")


def shared_memory_of(processes: list) -> set[Path]:
    """The POSIX shared-memory segments and named semaphores in /dev/shm that these processes
    have mapped."""
    import psutil

    segments = set()
    for process in processes:
        try:
            maps = process.memory_maps(grouped=True)
        except (psutil.Error, OSError):
            continue
        segments.update(Path(m.path) for m in maps if m.path.startswith(SHARED_MEMORY_PREFIXES))
    return segments


def end_processes(processes: list, grace_seconds: float, at_once: bool = False) -> None:
    """Terminate these processes, kill what outlives `grace_seconds`, then remove the
    shared-memory segments they had mapped and left behind (theirs alone: read from their own
    memory maps, never by name; not one this process maps too). `at_once`: stop them all, then
    kill them all, so that none sees another die (nothing of theirs is left to save)."""
    import signal

    import psutil

    segments = shared_memory_of(processes) - shared_memory_of([psutil.Process()])
    if at_once:
        for wanted in (signal.SIGSTOP, signal.SIGKILL):
            for process in processes:
                try:
                    process.send_signal(wanted)
                except psutil.NoSuchProcess:
                    pass
    else:
        for process in processes:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(processes, timeout=grace_seconds)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)
    for segment in segments:
        segment.unlink(missing_ok=True)


def check_before_work(base: str, todo: list[Planned]) -> None:
    """The base and the adapters still to evaluate load (their configurations), before anything
    is merged or evaluated. Executors that run reproduce's models elsewhere call it too."""
    from harness.evaluate.preflight import check_models

    if todo:
        check_models(base, {item.study: item.weights for item in todo if not item.is_base})


def engine_for(args, dtype: str, base: str, max_new_tokens: int,
               check_memory: bool = True) -> backends.Engine:
    """The chosen backend's settings, from the study's and the documents' (the backend class
    decides what it needs: harness/evaluate/backends.py); `check_memory`: the models run on this
    machine, so its memory and devices can be checked now."""
    backend = backends.get(args.backend)
    abstracts = None
    if args.data and backend.name != "hf":  # hf needs no context length
        from harness.evaluate.documents import load_documents

        docs = load_documents(args.data).docs
        abstracts = [doc["abstract"] for doc in (docs[:args.limit] if args.limit else docs)]
    return backend.engine(args, dtype, base, max_new_tokens, abstracts, check_memory)


def check_arguments(args) -> str:
    """Values the run would otherwise substitute, ignore or fail on after work began, each
    one line before anything runs; returns the batch size lm-eval gets."""
    backend = backends.get(args.backend)
    if args.limit is not None and args.limit < 1:
        raise FeynTuneError("--limit must be at least 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise FeynTuneError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    backend.check_options(args)
    backend.device_argv(args.device)
    # checked here; what `auto` becomes is decided where the model runs (run_batch_size), which
    # is a GPU node when SLURM runs it
    return backends.parse_batch_size(args.batch_size)


def run_batch_size(opts: Options) -> str:
    """The batch size lm-eval gets on this machine (`auto` has no end on a CPU), said when it is
    not the one asked for."""
    backend = backends.get(opts.engine.backend if opts.engine else "hf")
    batch_size, note = backend.batch_size(opts.batch_size, opts.device)
    if note:
        print(f"    {note}", flush=True)
    return batch_size


def reproduce(args) -> int:
    from harness.study import registry as study

    registry = study.load()
    settings = dict(registry.settings)
    if args.dtype:
        settings["dtype"] = args.dtype
    batch_size = check_arguments(args)
    max_new_tokens = int(settings["max_new_tokens"]) if args.max_new_tokens is None \
        else args.max_new_tokens
    tasks = TASK_CHOICES[args.tasks]
    base = args.base or registry.base.hub
    adapters_dir = Path(args.adapters).expanduser() if args.adapters else None
    if adapters_dir is not None and not adapters_dir.is_dir():
        raise FeynTuneError(f"--adapters {adapters_dir} is not a folder")
    models = select_models(registry, args.models)
    overrides = parse_overrides(args.adapter, registry, models)
    runs_dir = Path(args.runs)
    cluster = fanout.cluster_options(args, runs_dir)
    data = str(user_path(args.data)) if args.data else None
    backends.require(args.backend)
    run_settings = {"dtype": settings["dtype"], "limit": args.limit,
                    "max_new_tokens": max_new_tokens, "data": data, "backend": args.backend,
                    "seed": args.seed, "semscore_model": args.semscore_model}
    planned = plan(models, base, adapters_dir, overrides, runs_dir, tasks, run_settings)
    documents = document_count(registry, args.data, args.limit)
    for line in describe(registry, planned, documents, max_new_tokens, settings, args.backend):
        print(line, flush=True)
    todo = [item for item in planned if item.todo]
    # the memory share and the devices are checked where the models will run: here, unless
    # SLURM runs them
    here = cluster is None or cluster.executor == "local"
    work = Path(args.work).expanduser()
    if not args.dry_run:
        check_before_work(base, todo)
    engine = engine_for(args, settings["dtype"], base, max_new_tokens, check_memory=here) \
        if todo and not args.dry_run else None
    if not args.dry_run and here and any(not item.is_base for item in todo):
        fanout.writable_folder(work, "--work")  # now, not after the base model's evaluation
    opts = Options(base, runs_dir, work, args.data, args.semscore_model,
                   args.limit, batch_size, args.device, args.seed, max_new_tokens,
                   args.keep_merged, engine)
    if cluster is not None:
        return fanout.dispatch(cluster, evaluate_model, planned, opts, settings, args.dry_run)
    if args.dry_run:
        return 0

    fanout.writable_folder(runs_dir, "--runs")
    failed: list[str] = []
    elsewhere: list[str] = []
    started = time.monotonic()
    for number, item in enumerate(todo, start=1):
        print(f"[{number}/{len(todo)}] {item.study} ({item.label}): "
              f"{', '.join(item.todo)} -> {item.out}", flush=True)
        t0 = time.monotonic()
        try:
            ran = evaluate_model(item, opts, settings)
        except claims.Claimed as err:
            elsewhere.append(item.study)
            print(f"[{number}/{len(todo)}] {item.study}: skipped, {err}", flush=True)
            continue
        except FeynTuneError as err:
            failed.append(f"{item.study} ({err})")
            print(f"[{number}/{len(todo)}] {item.study}: FAILED: {err}", file=sys.stderr, flush=True)
            continue
        elapsed = time.monotonic() - started
        left = elapsed / number * (len(todo) - number)
        if not ran:
            elsewhere.append(item.study)
            print(f"[{number}/{len(todo)}] {item.study}: finished by another run meanwhile",
                  flush=True)
            continue
        print(f"[{number}/{len(todo)}] {item.study}: done in {duration(time.monotonic() - t0)}"
              f"; about {duration(left)} left at this pace", flush=True)
    skipped = len(planned) - len(todo)
    shared = f", {len(elsewhere)} left to another run" if elsewhere else ""
    print(f"reproduce: {len(todo) - len(failed) - len(elsewhere)} model(s) evaluated, {skipped} "
          f"already done{shared}, {len(failed)} failed. Compare with the published figures: "
          f"feyntune leaderboard --runs {runs_dir}")
    if failed:
        raise FeynTuneError(f"{len(failed)} model(s) failed: {'; '.join(failed)}; re-run to retry "
                            "them (finished models are kept)")
    return 0


def register(sub) -> None:
    from harness.ground.home import feyntune_home

    p = sub.add_parser("reproduce", help="evaluate the reference study's published models",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="all",
                   help="comma list of study adapters (s1..s10, s1_qkv..s10_qkv) or all "
                   "(default); the base model is always evaluated")
    p.add_argument("--tasks", choices=sorted(TASK_CHOICES), default="both",
                   help="perplexity, generation or both (default)")
    p.add_argument("--limit", type=int, default=None, help="first N documents only")
    p.add_argument("--base", default=None,
                   help="base model: hub id or local folder (default: the study's)")
    p.add_argument("--adapters", default=None,
                   help="folder with one adapter folder per model, named s3 / s3_qkv or like "
                   "the hub name (s3-L-3.1-8B-base_v3); default: the hub")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="one adapter's folder (repeatable); wins over --adapters")
    p.add_argument("--data", default=None,
                   help="test documents: a `feyntune data build` folder or JSON-lines file "
                   "(default: the published split on the hub)")
    p.add_argument("--runs", default=DEFAULT_RUNS, help=f"run folders (default: {DEFAULT_RUNS})")
    p.add_argument("--work", default=str(feyntune_home() / "reproduce"),
                   help="merged models, removed after their evaluation (default: %(default)s)")
    p.add_argument("--keep-merged", action="store_true", help="keep the merged models")
    p.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"),
                   help="weights for merging and evaluation (default: the study's float16)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation limit (default: the study's 1024)")
    p.add_argument("--batch-size", default="auto",
                   help="lm-eval batch size: N, auto or auto:N (default: auto; hf on a CPU "
                   f"uses {backends.HF_CPU_BATCH_SIZE} for auto, since lm-eval's search does "
                   "not end there)")
    p.add_argument("--backend", choices=list(backends.BACKENDS), default="hf",
                   help="lm-eval model that scores and generates: hf (transformers, default) "
                   "or vllm (continuous batching; adapters merged all the same)")
    for backend in backends.BACKENDS.values():  # each backend's own options
        for option in backend.options:
            p.add_argument(option.flag, dest=option.dest, type=option.type, default=None,
                           help=option.help)
    p.add_argument("--device", default=None, help="lm-eval device (default: lm-eval's choice)")
    p.add_argument("--semscore-model", default=None, help="SemScore embedder (name or folder)")
    p.add_argument("--seed", type=int, default=1234, help="lm-eval seed (default: 1234)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and estimate (and the jobs) only")
    fanout.register_options(p)
    p.set_defaults(func=reproduce)
