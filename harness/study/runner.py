"""A study's work as jobs, what each model's state is, and how long the work takes.

One study folder holds everything a study makes (`--out`, default results/studies/<name>/):

    data/               `feyntune data build` output: the sets the study builds (curation)
    adapters/<model>/   `feyntune train` run folders (adapter, run.json, curves, checkpoints)
    configs/<model>.yaml  the training overrides a model's study entry gives (written each run)
    runs/<model>/       lm-eval run folders, one per model, as `feyntune reproduce` writes them
    logs/               job logs (local and slurm executors), and their submission record
    jobs.json           the last outcome of every job (what `status` says of failures)
    leaderboard.md, leaderboard.csv, index.html, figures/   the report

The jobs (harness.study.jobs): `data` builds the sets that are missing; `train/<model>` trains
one adapter that is not finished (harness.study.train_job: resumed from its newest checkpoint,
under a claim); `eval/<model>` evaluates a model whose run folder lacks a subtask, as
`feyntune reproduce` does (reproduce.evaluate_model; after its training job); `report`
regenerates the leaderboard after every evaluation. Only missing work becomes a job, so a second
run of a finished study has none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from harness.evaluate import backends
from harness.ground.errors import FeynTuneError
from harness.ground.home import feyntune_home
from harness.ground.subtasks import RESULTS_DIR
from harness.runs.identity import lora_variant
from harness.study import reproduce, spec, train_job
from harness.study.jobs import STAGES, Job, Outcome, State
from harness.study.registry import Registry

RECORD = "jobs.json"
LEADERBOARD = "leaderboard.md"


def default_out(study: spec.Study) -> Path:
    return Path(RESULTS_DIR) / "studies" / study.name


@dataclass(frozen=True)
class Folders:
    """The study folder's parts (see the module docstring)."""
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def adapter(self, name: str) -> Path:
        return self.root / "adapters" / name

    def config(self, name: str) -> Path:
        return self.root / "configs" / f"{name}.yaml"


@dataclass(frozen=True)
class EvalOptions:
    """How this machine evaluates (command-line options, not the study's settings)."""
    backend: str = "hf"
    batch_size: str = "auto"
    device: str | None = None
    seed: int = 1234
    work: Path = field(default_factory=lambda: feyntune_home() / "reproduce")  # merged models
    keep_merged: bool = False
    semscore_model: str | None = None
    memory_share: float | None = None


# ---- what the study file means here --------------------------------------------------------------

def set_folder(study: spec.Study, folders: Folders, value: str) -> Path:
    """A set a model names: a folder next to the study file, else the one this study builds."""
    given = study.resolve(value)
    return given if given.is_dir() else folders.data / value


def documents(study: spec.Study, folders: Folders) -> tuple[str | None, str | None]:
    """(hepth_data, hepth_hub) for the task: a file source, or a hub dataset (None: the task's
    default, the reference study's split)."""
    docs = study.documents
    if docs.set:
        return str(set_folder(study, folders, docs.set)), None
    if docs.data:
        return str(study.resolve(docs.data)), None
    from harness.ground.reference import published_documents

    if (docs.hub, docs.split) == published_documents():
        return None, None
    return None, f"{docs.hub}:{docs.split}"


def plan_models(study: spec.Study, folders: Folders, options: EvalOptions,
                names: list[str] | None = None) -> list[reproduce.Planned]:
    """Each model's evaluation, with the subtasks its run folder still lacks (reproduce.plan:
    the same markers, so a run with other settings is not taken for this one)."""
    registry = Registry(study)
    evaluation = study.evaluation
    data, hub = documents(study, folders)
    # the study's name too: a model `s3` of another study is not the reference study's s3
    run_settings = {"study_name": study.name, "dtype": study.base.dtype, "limit": evaluation.limit,
                    "max_new_tokens": evaluation.max_new_tokens, "data": data,
                    "backend": options.backend}
    if hub:
        run_settings["hub"] = hub
    trained = {m.name: str(folders.adapter(m.name)) for m in study.models if m.trained_here}
    models = [m for m in registry.models if names is None or m.study in names]
    return reproduce.plan(models, registry.base.hub, None, trained, folders.runs,
                          reproduce.TASK_CHOICES[evaluation.tasks], run_settings)


def train_argv(study: spec.Study, folders: Folders, model: spec.Model) -> list[str]:
    """`feyntune train` arguments of a model (the job adds --out and --resume)."""
    argv = ["--base", Registry(study).base.hub, "--data",
            str(set_folder(study, folders, model.set)), "--lora", model.lora,
            "--preset", model.preset]
    if model.overrides:
        argv += ["--config", str(folders.config(model.name))]
    return argv


def write_overrides(folders: Folders, model: spec.Model) -> None:
    import yaml

    path = folders.config(model.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `feyntune study run` from the study file's overrides\n"
                    + yaml.safe_dump(model.overrides, sort_keys=False), encoding="utf-8")


def missing_sets(study: spec.Study, folders: Folders) -> list[str]:
    """Sets this study builds whose folder is not complete yet."""
    return [name for name in study.built_sets
            if not all((folders.data / name / f"{split}.jsonl").is_file()
                       for split in ("train", "validation", "test"))]


# ---- the calls the jobs make (picklable: submitit ships them to other processes) -----------------

@dataclass
class BuildSets:
    """`feyntune data build` of the sets that are missing, into the study's data folder."""
    snapshot: str
    out: Path
    sets: list[str]
    config: str | None = None
    seed: int | None = None

    def __call__(self) -> State:
        from finetune import curate

        print(f"building {', '.join(self.sets)} from {self.snapshot} into {self.out}", flush=True)
        curate.build(self.snapshot, self.out, sets=self.sets, seed=self.seed,
                     config=curate.load_config(self.config) if self.config else None)
        empty = [name for name in self.sets if not _has_records(self.out / name / "train.jsonl")]
        if empty:
            raise FeynTuneError(f"set(s) {', '.join(empty)} built without a training record "
                                f"from {self.snapshot}: nothing to train on")
        return State.DONE


@dataclass
class Evaluate:
    """One model's missing subtasks, planned again when the job runs (its adapter exists by
    then), evaluated by reproduce.evaluate_model under the run folder's claim."""
    study_file: Path
    out: Path
    model: str
    options: EvalOptions

    def __call__(self) -> State:
        study = spec.load(self.study_file)
        folders = Folders(self.out)
        (item,) = plan_models(study, folders, self.options, [self.model])
        if not item.todo:
            return State.SKIPPED
        registry = Registry(study)
        ran = reproduce.evaluate_model(item, eval_options(study, folders, self.options),
                                       registry.settings)
        return State.DONE if ran else State.SKIPPED


@dataclass
class Report:
    """The leaderboard of the study's runs, with its published figures as reported rows."""
    study_file: Path
    out: Path

    def __call__(self) -> State:
        from harness.leaderboard.command import build

        folders = Folders(self.out)
        built = build(folders.runs, folders.root, reported_file=Path(self.study_file))
        print(f"leaderboard: {built.measured_rows} measured run(s), {built.reported_rows} "
              f"reported row(s) -> {folders.root / LEADERBOARD}", flush=True)
        return State.DONE


def eval_options(study: spec.Study, folders: Folders, options: EvalOptions,
                 check_memory: bool = True) -> reproduce.Options:
    """reproduce's Options for this study's evaluations (the engine's memory share is checked
    where the models run)."""
    evaluation = study.evaluation
    data, hub = documents(study, folders)
    args = SimpleNamespace(backend=options.backend, memory_share=options.memory_share,
                           seed=options.seed, data=data, limit=evaluation.limit,
                           tensor_parallel=1, data_parallel=1)
    engine = reproduce.engine_for(args, study.base.dtype, Registry(study).base.hub,
                                  evaluation.max_new_tokens, check_memory=check_memory)
    return reproduce.Options(Registry(study).base.hub, folders.runs, options.work, data,
                             options.semscore_model, evaluation.limit, options.batch_size,
                             options.device, options.seed, evaluation.max_new_tokens,
                             options.keep_merged, engine, hub)


# ---- the job list --------------------------------------------------------------------------------

@dataclass
class Work:
    """A study's jobs, and the lines that say what is left out and why."""
    jobs: list[Job]
    planned: list[reproduce.Planned]
    notes: list[str]


def build_jobs(study: spec.Study, folders: Folders, options: EvalOptions,
               stage: str | None = None, gpus: int = 1) -> Work:
    """The jobs for everything the study still lacks (one stage only with `stage`)."""
    notes = []
    jobs: list[Job] = []
    building = missing_sets(study, folders)
    if building:
        curation = study.curation
        jobs.append(Job("data", "data", BuildSets(
            str(study.resolve(curation.snapshot)), folders.data, building,
            str(study.resolve(curation.config)) if curation.config else None, curation.seed)))
    training = {}
    for model in study.models:
        if not model.trained_here or train_job.finished(folders.adapter(model.name)):
            continue
        after = ("data",) if model.set in building else ()
        training[model.name] = train_job.train_job(
            f"train/{model.name}", train_argv(study, folders, model),
            folders.adapter(model.name), gpus, after)
        jobs.append(training[model.name])
    planned = plan_models(study, folders, options)
    evaluations = []
    docs_after = ("data",) if study.documents.set in building else ()
    for item in planned:
        if not item.todo:
            continue
        after = (f"train/{item.study}",) if item.study in training else ()
        evaluations.append(Job(f"eval/{item.study}", "eval",
                               Evaluate(study.path, folders.root, item.study, options),
                               gpus=1, after=docs_after + after))
    jobs += evaluations
    report_missing = not (folders.root / LEADERBOARD).is_file()
    if evaluations or report_missing or stage == "report":
        jobs.append(Job("report", "report", Report(study.path, folders.root),
                        after=tuple(job.name for job in evaluations)))
    if stage is not None:
        jobs = only_stage(jobs, stage)
        if stage == "eval":
            untrained = [m.name for m in study.models if m.trained_here
                         and not train_job.finished(folders.adapter(m.name))]
            if untrained:
                notes.append(f"not evaluated, not trained yet: {', '.join(untrained)}")
                jobs = [job for job in jobs
                        if job.name.removeprefix("eval/") not in untrained]
    return Work(jobs, planned, notes)


def only_stage(jobs: list[Job], stage: str) -> list[Job]:
    """The jobs of one stage, waiting for nothing outside it."""
    if stage not in STAGES:
        raise FeynTuneError(f"--stage {stage!r}: use one of {', '.join(STAGES)}")
    kept = [job for job in jobs if job.stage == stage]
    names = {job.name for job in kept}
    return [replace(job, after=tuple(a for a in job.after if a in names)) for job in kept]


# ---- checks before any job -----------------------------------------------------------------------

def check_before_jobs(study: spec.Study, folders: Folders, work: Work,
                      options: EvalOptions) -> None:
    """Everything that can be wrong before a job starts: the backend, the base and every
    adapter that exists already (their configurations load), each training set that is not
    built by this run (present, with records), the documents."""
    backends.require(options.backend)
    if not study.evaluation.merge and options.backend == "vllm":
        raise FeynTuneError(f"{study.path}: evaluation.merge false needs --backend hf "
                            "(vLLM evaluates merged models only)")
    building = {name for job in work.jobs if isinstance(job.call, BuildSets)
                for name in job.call.sets}
    for job in work.jobs:
        if isinstance(job.call, BuildSets) and not Path(job.call.snapshot).exists():
            raise FeynTuneError(f"{study.path}: curation.snapshot: {job.call.snapshot} does not "
                                f"exist (needed to build {', '.join(job.call.sets)})")
    for job in work.jobs:
        if job.stage != "train":
            continue
        model = study.model(job.name.removeprefix("train/"))
        if model.set in building:
            continue
        folder = set_folder(study, folders, model.set)
        for split in ("train", "validation"):
            path = folder / f"{split}.jsonl"
            if not _has_records(path):
                what = "is missing" if not path.is_file() else "is empty"
                raise FeynTuneError(f"training set of {model.name}: {path} {what}")
    if not work.jobs:
        return
    pending = {job.name.removeprefix("eval/") for job in work.jobs if job.stage == "eval"}
    if pending or any(job.stage == "train" for job in work.jobs):
        from harness.evaluate.preflight import check_models

        # adapters still to be trained are checked by their training job
        check_models(Registry(study).base.hub, {
            item.study: item.weights for item in work.planned
            if item.study in pending and not item.is_base
            and not _to_be_trained(study, folders, item.study)})
    data, _ = documents(study, folders)
    if pending and data and not study.documents.set:
        from harness.evaluate.documents import load_documents

        load_documents(data)


def _to_be_trained(study: spec.Study, folders: Folders, name: str) -> bool:
    model = next((m for m in study.models if m.name == name), None)
    return model is not None and model.trained_here and not train_job.finished(
        folders.adapter(name))


def _has_records(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.strip() for line in f)
    except OSError:
        return False


# ---- outcomes and states -------------------------------------------------------------------------

def record_outcomes(folders: Folders, outcomes: list[Outcome]) -> None:
    """Each job's last outcome in jobs.json (others' entries kept), for `status`."""
    path = folders.root / RECORD
    record = read_record(folders)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for outcome in outcomes:
        record[outcome.job] = {"state": outcome.state.value, "detail": outcome.detail,
                               "log": str(outcome.log) if outcome.log else None, "at": now}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    temporary.replace(path)


def read_record(folders: Folders) -> dict:
    path = folders.root / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise FeynTuneError(f"{path} is damaged ({err}); move it away") from None
    return record if isinstance(record, dict) else {}


def model_states(study: spec.Study, folders: Folders, options: EvalOptions,
                 queued: dict[str, dict]) -> list[tuple[str, str]]:
    """(model, state) for the base and every model: to do, queued, training (step n of N),
    trained, evaluating, evaluated, or failed with its log. `queued`: the scheduler's jobs
    still queued or running (harness.study.fanout.submitted)."""
    record = read_record(folders)
    states = []
    for item in plan_models(study, folders, options):
        name = item.study
        model = next((m for m in study.models if m.name == name), None)
        adapter = folders.adapter(name) if model is not None and model.trained_here else None
        step = train_job.progress(adapter) if adapter is not None else None
        failed = [record[job] for job in (f"train/{name}", f"eval/{name}")
                  if record.get(job, {}).get("state") == State.FAILED.value]
        if not item.todo:
            state = "evaluated"
        elif f"eval/{name}" in queued:
            job = queued[f"eval/{name}"]
            state = f"{_queue_word(job, 'evaluating')} (job {job['job_id']})"
        elif f"train/{name}" in queued:
            job = queued[f"train/{name}"]
            word = _queue_word(job, "training")
            if word == "training" and step:
                word = f"training (step {step[0]} of {step[1]})"
            state = f"{word} (job {job['job_id']})"
        elif failed:
            last = failed[-1]
            log = f"; log {last['log']}" if last.get("log") else ""
            state = f"failed: {last.get('detail') or 'no detail'}{log}"
        elif step:
            state = f"training (step {step[0]} of {step[1]})"
        elif adapter is not None and train_job.finished(adapter):
            state = "trained"
        else:
            state = "to do"
        states.append((name, state))
    return states


def _queue_word(job: dict, running: str) -> str:
    return running if str(job.get("state", "")).upper() in ("RUNNING", "COMPLETING") else "queued"


# ---- estimates -----------------------------------------------------------------------------------

def training_abstracts(study: spec.Study, folders: Folders, model: spec.Model) -> int | None:
    """Abstract passes of a model's training: its set's training records x epochs (or
    max_steps x batch); None while the set is not built."""
    from finetune import config as C

    path = set_folder(study, folders, model.set) / "train.jsonl"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        records = sum(1 for line in f if line.strip())
    cfg = C.resolve(model.preset, None, {**model.overrides, "lora": {
        **model.overrides.get("lora", {}), "variant": model.lora}})
    if cfg.max_steps > 0:
        return cfg.max_steps * cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    return round(records * cfg.epochs)


def document_count(study: spec.Study, folders: Folders) -> int | None:
    """Documents each model is evaluated on (None: not known before the set is built)."""
    data, _ = documents(study, folders)
    limit = study.evaluation.limit
    if data is None:
        count = study.documents.count
    elif not Path(data).exists():
        return None
    else:
        from harness.evaluate.documents import load_documents

        count = len(load_documents(data).docs)
    return min(count, limit) if count is not None and limit else count


def describe_plan(study: spec.Study, folders: Folders, work: Work,
                  options: EvalOptions) -> list[str]:
    """Every job with its estimated GPU time, and the assumptions behind the figures."""
    registry = Registry(study)
    speed = study.throughput
    gen_speed, gen_source = backends.generation_throughput(registry, options.backend)
    count = document_count(study, folders)
    evaluation = study.evaluation
    lines = [(f"study {study.name} ({reproduce.shown_path(study.path)}): base "
             f"{registry.base.hub} in {study.base.dtype} and {len(study.models)} model(s), "
             f"{'unknown number of' if count is None else count} document(s) each; "
             f"{'merged' if evaluation.merge else 'unmerged'} adapters, generation at "
             f"temperature {evaluation.temperature} with at most {evaluation.max_new_tokens} "
             f"new tokens; into {folders.root}")]
    totals = {"train": 0.0, "eval": 0.0}
    unknown = []
    items = {item.study: item for item in work.planned}
    for job in work.jobs:
        seconds = None
        if job.stage == "data":
            what = f"build {', '.join(job.call.sets)} from {job.call.snapshot} (CPU)"
        elif job.stage == "train":
            model = study.model(job.name.removeprefix("train/"))
            passes = training_abstracts(study, folders, model)
            rate = speed.training_abstracts_per_second.get(model.preset)
            variant = lora_variant(model.lora) or model.lora
            what = (f"{variant} on {model.set}, {model.preset} preset, "
                    + (f"{passes:,} abstract passes" if passes is not None
                       else "abstracts counted once the set is built"))
            if passes is not None and rate:
                seconds = passes / rate
                totals["train"] += seconds
            else:
                unknown.append(job.name)
        elif job.stage == "eval":
            item = items[job.name.removeprefix("eval/")]
            what = f"{item.label}: " + ", ".join(t.rsplit("_", 1)[-1] for t in item.todo)
            if count is not None:
                seconds = sum(reproduce.estimate_seconds(registry, count, task,
                                                         evaluation.max_new_tokens, gen_speed)
                              for task in item.todo)
                totals["eval"] += seconds
            else:
                unknown.append(job.name)
        else:
            what = f"leaderboard -> {folders.root / LEADERBOARD}"
        shown = reproduce.duration(seconds) if seconds is not None else (
            "?" if job.stage in ("train", "eval") else "-")
        waits = ", ".join(job.after) if len(job.after) <= 3 else \
            f"all {len(job.after)} {job.after[0].split('/')[0]} jobs"
        wait = f"  (after {waits})" if job.after else ""
        lines.append(f"  {job.name:<20} {shown:>14}  {what}{wait}")
    if not work.jobs:
        lines.append("  nothing to do: every set is built, every adapter trained, every model "
                     "evaluated, the leaderboard written")
    lines += [f"  ({note})" for note in work.notes]
    rates = ", ".join(f"{preset} {rate:g}" for preset, rate in
                      speed.training_abstracts_per_second.items())
    lines.append(
        f"estimated GPU time: {reproduce.duration(sum(totals.values()))} (training "
        f"{reproduce.duration(totals['train'])}, evaluation {reproduce.duration(totals['eval'])}"
        f"{'; not counted: ' + ', '.join(unknown) if unknown else ''}). ASSUMED, not measured "
        f"here: one {speed.gpu} per job with an 8B model; training {rates} abstracts/s by "
        f"preset; evaluation at {speed.perplexity_tokens:,} tokens scored in "
        f"{speed.perplexity_seconds} s and {gen_source}, {speed.tokens_per_abstract} tokens per "
        f"abstract, every completion at the limit ({reproduce.shown_path(study.throughput_file)}"
        ", throughput)")
    return lines

