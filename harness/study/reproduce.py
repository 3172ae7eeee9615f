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
    """The base model plus the chosen adapters ("all", or a comma list of study names)."""
    if not names or names.strip().lower() == "all":
        return registry.models
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    chosen = [registry.model(name) for name in wanted]  # FeynTuneError for an unknown name
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
        # runs recorded before there was a choice of backend were made with hf
        if recorded and all(recorded.get(key, "hf" if key == "backend" else None) == value
                            for key, value in marker.items()):
            done.update(run.samples)
    return done


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise FeynTuneError(f"--adapter {pair!r}: expected NAME=PATH (e.g. s3=/models/s3)")
        overrides[name.strip()] = path.strip()
    return overrides


def plan(models: list, base: str, adapters_dir: Path | None, overrides: dict,
         runs_dir: Path, tasks: tuple[str, ...], run_settings: dict) -> list[Planned]:
    """Each model's run; `run_settings` (dtype, limit, max_new_tokens, data) go into its marker,
    so that a finished run with other settings is not taken for this one."""
    planned = []
    for model in models:
        weights = base if model.is_base else adapter_source(model, adapters_dir, overrides)
        if "," in weights:
            raise FeynTuneError(f"{weights}: a path with a comma cannot be passed to lm-eval")
        out = runs_dir / model.study
        label = "base model" if model.is_base else f"{model.lora} {model.mix}"
        marker = {"study": model.study, "base": base, "adapter": None if model.is_base else weights,
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
    if device and engine.backend == "hf":  # vLLM picks its device itself (lm-eval drops it)
        argv += ["--device", device]
    return argv


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


def merged_model(item: Planned, base: str, work: Path, dtype: str) -> Path:
    """The adapter merged into the base (reused when an earlier run of this command made it).
    One folder per run folder: its owner is whoever holds the run folder's claim, so two runs
    of one model for different --runs never write one merge at once."""
    from finetune.merge import merge_adapter

    digest = hashlib.sha256(str(item.out.resolve()).encode("utf-8")).hexdigest()[:8]
    folder = work / f"{item.study}-{digest}"
    marker = folder / MERGED_MARKER
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
                and state.get("adapter") == item.weights:
            return folder
        shutil.rmtree(folder)  # an interrupted or different merge of ours
    folder.mkdir(parents=True)
    record = {"base": base, "adapter": item.weights, "dtype": dtype, "complete": False}
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
    from harness.evaluate.command import run_lm_eval
    from harness.runs.marker import STUDY_METADATA

    weights = opts.base
    folder = adapter = None
    merge = not item.is_base and settings.get("merge", True)
    if merge:
        print(f"    merging {item.weights} into {opts.base} ({settings['dtype']})", flush=True)
        folder = merged_model(item, opts.base, opts.work, settings["dtype"])
        weights = str(folder)
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
                        opts.batch_size, opts.limit, opts.device, opts.seed, opts.engine, adapter)
    started = time.time() - 1.0  # file times have coarse resolution on some filesystems
    vllm = opts.engine is not None and opts.engine.backend == "vllm"
    code = run_in_own_process(argv) if vllm else run_lm_eval(argv)
    if code != 0:
        raise FeynTuneError(f"lm-eval exited with {code}")
    missing = set(item.todo) - finished_tasks(item.out, item.marker, since=started)
    if missing:
        raise FeynTuneError(f"lm-eval wrote no complete samples for {', '.join(sorted(missing))}")
    if folder is not None and not opts.keep_merged:
        remove_merged(folder)


def run_in_own_process(argv: list[str]) -> int:
    """lm-eval in a child process, for vLLM: lm-eval never shuts its vLLM engine down, and the
    engine keeps what it reserved (by default 90% of the GPU's memory) until the process that
    made it ends, so the next model's engine in the same process would find no memory free."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(target=_lm_eval_and_exit, args=(argv,))
    process.start()
    process.join()
    return process.exitcode


def _lm_eval_and_exit(argv: list[str]) -> None:
    from harness.evaluate.command import run_lm_eval

    try:
        code = run_lm_eval(argv)
    finally:
        end_child_processes()
    sys.exit(code)


def end_child_processes(grace_seconds: float = 30.0) -> None:
    """End the engine processes lm-eval left running (vLLM's engine core and its workers): a
    spawned process waits at its exit for its children, and these never end by themselves."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_seconds)
    for child in alive:
        child.kill()


def check_before_work(base: str, todo: list[Planned]) -> None:
    """The base and the adapters still to evaluate load (their configurations), before anything
    is merged or evaluated. Executors that run reproduce's models elsewhere call it too."""
    from harness.evaluate.preflight import check_models

    if todo:
        check_models(base, {item.study: item.weights for item in todo if not item.is_base})


def engine_for(args, dtype: str, base: str, max_new_tokens: int,
               check_memory: bool = True) -> backends.Engine:
    """The chosen backend's settings, from the study's and the documents'; for vLLM the memory
    share is checked against what is free on this machine (`check_memory`: the models run here).
    Otherwise a share not given is left to lm-eval's default on the machine that runs them."""
    if args.backend != "vllm":
        return backends.Engine("hf", dtype, args.seed)
    share = args.memory_share
    if check_memory:
        share = share or backends.default_memory_share()
        backends.check_memory_share(share)
    abstracts = None
    if args.data:
        from harness.evaluate.documents import load_documents

        docs = load_documents(args.data).docs
        abstracts = [doc["abstract"] for doc in (docs[:args.limit] if args.limit else docs)]
    return backends.Engine("vllm", dtype, args.seed,
                           backends.max_model_len(base, abstracts, max_new_tokens),
                           share, args.tensor_parallel, args.data_parallel)


def reproduce(args) -> int:
    from harness.study import registry as study

    registry = study.load()
    settings = dict(registry.settings)
    if args.dtype:
        settings["dtype"] = args.dtype
    max_new_tokens = args.max_new_tokens or int(settings["max_new_tokens"])
    tasks = TASK_CHOICES[args.tasks]
    base = args.base or registry.base.hub
    adapters_dir = Path(args.adapters).expanduser() if args.adapters else None
    if adapters_dir is not None and not adapters_dir.is_dir():
        raise FeynTuneError(f"--adapters {adapters_dir} is not a folder")
    if args.limit is not None and args.limit < 1:
        raise FeynTuneError("--limit must be at least 1")
    models = select_models(registry, args.models)
    runs_dir = Path(args.runs)
    cluster = fanout.cluster_options(args, runs_dir)
    data = str(user_path(args.data)) if args.data else None
    backends.require(args.backend)
    run_settings = {"dtype": settings["dtype"], "limit": args.limit,
                    "max_new_tokens": max_new_tokens, "data": data, "backend": args.backend}
    planned = plan(models, base, adapters_dir, parse_overrides(args.adapter), runs_dir, tasks,
                   run_settings)
    documents = document_count(registry, args.data, args.limit)
    for line in describe(registry, planned, documents, max_new_tokens, settings, args.backend):
        print(line, flush=True)
    todo = [item for item in planned if item.todo]
    if not args.dry_run:
        check_before_work(base, todo)
    # the memory share is checked where the models will run: here, unless SLURM runs them
    here = cluster is None or cluster.executor == "local"
    engine = engine_for(args, settings["dtype"], base, max_new_tokens, check_memory=here) \
        if todo and not args.dry_run else None
    opts = Options(base, runs_dir, Path(args.work).expanduser(), args.data, args.semscore_model,
                   args.limit, args.batch_size, args.device, args.seed, max_new_tokens,
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
    p.add_argument("--batch-size", default="auto", help="lm-eval batch size (default: auto)")
    p.add_argument("--backend", choices=backends.BACKENDS, default="hf",
                   help="lm-eval model that scores and generates: hf (transformers, default) "
                   "or vllm (continuous batching; adapters merged all the same)")
    p.add_argument("--memory-share", type=float, default=None,
                   help="vllm: share of GPU memory (on a CPU: of RAM) for its KV cache "
                   f"(default: {backends.CUDA_MEMORY_SHARE} on a GPU, half the free RAM on a CPU)")
    p.add_argument("--tensor-parallel", type=int, default=1,
                   help="vllm: GPUs one model is split over (default: 1)")
    p.add_argument("--data-parallel", type=int, default=1,
                   help="vllm: model copies the documents are shared among, through Ray "
                   "(default: 1)")
    p.add_argument("--device", default=None, help="lm-eval device (default: lm-eval's choice)")
    p.add_argument("--semscore-model", default=None, help="SemScore embedder (name or folder)")
    p.add_argument("--seed", type=int, default=1234, help="lm-eval seed (default: 1234)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and estimate (and the jobs) only")
    fanout.register_options(p)
    p.set_defaults(func=reproduce)
