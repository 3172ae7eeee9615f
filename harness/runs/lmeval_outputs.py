"""The one reader of lm-eval 0.4.13 outputs: results_<date>.json with its samples_<task>_<date>.jsonl.

Used by `feyntune eval` (its bootstrap summary and the contamination check), the leaderboard,
the review page and the demo.

lm-eval writes, per run, `<output_path>/<model>/results_<date_id>.json` (aggregates, `config`
with model and model_args, `configs` per task with its generation_kwargs, `n-samples`, `date`
= start time as a Unix timestamp) and, with --log_samples, one `samples_<task>_<date_id>.jsonl`
per task with the same date_id, one JSON object per document holding `doc_id`, `doc`,
`filtered_resps` and the per-document metric values. A run is the results file plus the sample
files beside it with its date_id. Anything else -- unreadable JSON, a truncated samples file, a
run of another task, a stray file, a field of the wrong type -- is reported as a skip and left
out, never fatal. A sample whose metric value is NaN is left out of every figure of its run and
named as a skip of its own; the rest of the file is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.ground.subtasks import GEN_TASK, GEN_TASKS, TASKS, per_document_metrics
from harness.runs.identity import ModelIdentity, identify, parse_model_args
from harness.runs.marker import study_marker

RESULTS_PREFIX = "results_"
SAMPLES_PREFIX = "samples_"


# What one file or sample can hold that makes it unusable; anything else is a bug, not bad input.
_BAD_CONTENT = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError,
                UnicodeDecodeError)


@dataclass(frozen=True)
class Skip:
    path: str    # relative to the runs folder
    reason: str
    line: int | None = None  # a single sample of the file, not the whole file

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Document:
    """What the leaderboard keeps of one logged sample."""

    doc_id: int
    arxiv_id: str | None
    prompt: str | None
    truth: str | None
    completion: str | None          # generation subtask only
    metrics: dict[str, float]
    fresh_after: str | None = None  # fresh subtasks: the cut date their documents are newer than


@dataclass
class Run:
    run_id: str                     # results file path relative to the runs folder, no suffix
    identity: ModelIdentity
    started: datetime | None        # UTC
    settings: dict                  # temperature, max_gen_toks, limit, model class
    aggregates: dict[str, dict[str, float]]  # task -> metric -> lm-eval's aggregate
    samples: dict[str, list[Document]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    study: dict | None = None       # the block of `feyntune reproduce` (harness.runs.marker)
    provider_cost: dict | None = None  # API runs: tokens and cost of the answers (provider_cost)

    @property
    def date_label(self) -> str:
        return self.started.strftime("%Y-%m-%d %H:%M:%S UTC") if self.started else "unknown date"


@dataclass
class RunsScan:
    runs: list[Run]
    skips: list[Skip]


def iter_samples(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, sample) of every non-blank line of a samples_*.jsonl file; ValueError
    saying which line when one is not a JSON object."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except ValueError as err:
                raise ValueError(f"line {number} is not JSON ({getattr(err, 'msg', err)}); "
                                 "truncated file?") from None
            except RecursionError:
                raise ValueError(f"line {number} is nested too deeply to read") from None
            if not isinstance(sample, dict):
                raise ValueError(f"line {number} is not an lm-eval sample (not an object)")  # noqa: TRY004
            yield number, sample


def metric_values(path: str | Path, metrics: tuple[str, ...]) -> dict[str, list[float]]:
    """Per-document values of `metrics`, in file order, of the samples that hold them (metrics no
    sample holds are left out): what `feyntune eval` bootstraps right after a run."""
    values: dict[str, list[float]] = {m: [] for m in metrics}
    for _, sample in iter_samples(path):
        for m in metrics:
            if m in sample:
                values[m].append(float(sample[m]))
    return {m: v for m, v in values.items() if v}


def _date_id(name: str, prefix: str, suffix: str) -> str:
    """The date_id of results_<date_id>.json; for samples_<task>_<date_id>.jsonl see below."""
    return name[len(prefix): -len(suffix)]


def _samples_parts(name: str) -> tuple[str, str]:
    """(task, date_id) of samples_<task>_<date_id>.jsonl, as lm_eval.utils splits it."""
    stem = name[len(SAMPLES_PREFIX): -len(".jsonl")]
    task, _, date_id = stem.rpartition("_")
    return task, date_id


def _float(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):  # "abc"; an integer too large for a float
        return None
    return None


def _started(results: dict, date_id: str) -> datetime | None:
    stamp = _float(results.get("date"))
    if stamp is not None and math.isfinite(stamp):
        try:
            return datetime.fromtimestamp(stamp, tz=timezone.utc).replace(microsecond=0)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"'date' {results.get('date')!r} is not a time (corrupt file?)") from None
    try:  # the file name's date_id is local time without a zone; better than nothing
        return datetime.strptime(date_id[:19], "%Y-%m-%dT%H-%M-%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _settings(results: dict) -> dict:
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    configs = results.get("configs") if isinstance(results.get("configs"), dict) else {}
    gen_config = configs.get(GEN_TASK) if isinstance(configs.get(GEN_TASK), dict) else {}
    gen_kwargs = gen_config.get("generation_kwargs")
    gen_kwargs = gen_kwargs if isinstance(gen_kwargs, dict) else {}
    settings = {
        "model_class": config.get("model"),
        "dtype": parse_model_args(config.get("model_args")).get("dtype"),
        "temperature": _float(gen_kwargs.get("temperature")) if gen_kwargs.get(
            "do_sample", True) else 0.0,
        "max_gen_toks": _float(gen_kwargs.get("max_gen_toks")),
        "limit": config.get("limit"),
    }
    # Provider runs record what was actually sent (providers/lm_eval_model.py); prefer it.
    sent = _provider_run(config).get("settings")
    if isinstance(sent, list) and len(sent) == 1 and isinstance(sent[0], dict):
        for key, field_name in (("temperature", "temperature"), ("max_gen_toks", "max_tokens")):
            value = _float(sent[0].get(field_name))
            if value is not None:
                settings[key] = value
    return settings


def _provider_run(config: dict) -> dict:
    block = config.get("provider_run")
    return block if isinstance(block, dict) else {}


def provider_cost(config: dict) -> dict | None:
    """What the answers behind a provider run cost: tokens and US dollars summed over its
    lm-eval calls (cached answers included: they were paid once), and the route they took.
    None for a run of a local model, or one whose record predates these figures."""
    runs = _provider_run(config).get("runs")
    if not isinstance(runs, list) or not runs:
        return None
    tokens = {"input_tokens": 0, "output_tokens": 0, "requests": 0, "batch_requests": 0}
    usd: float | None = 0.0
    for run in runs:
        usage = run.get("usage_all_answers") if isinstance(run, dict) else None
        cost = run.get("cost_all_answers") if isinstance(run, dict) else None
        if not isinstance(usage, dict) or not isinstance(cost, dict):
            return None
        for key in tokens:
            tokens[key] += int(usage.get(key) or 0)
        usd = None if usd is None or cost.get("usd") is None else usd + float(cost["usd"])
    batch, total = tokens["batch_requests"], tokens["requests"]
    route = "batch" if batch and batch == total else "direct" if not batch else "batch+direct"
    return {**tokens, "usd": usd, "route": route}


def _aggregates(results: dict) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task in TASKS:
        block = results["results"].get(task)
        if not isinstance(block, dict):
            continue
        values = {}
        for key, value in block.items():
            metric, sep, filter_name = key.partition(",")
            number = _float(value)
            if sep and filter_name == "none" and number is not None:
                values[metric] = number
        out[task] = values
    return out


def _expected_count(results: dict, task: str) -> int | None:
    counts = results.get("n-samples", {}).get(task) if isinstance(results.get("n-samples"),
                                                                  dict) else None
    if isinstance(counts, dict) and isinstance(counts.get("effective"), int):
        return counts["effective"]
    return None


def _completion(sample: dict) -> str | None:
    filtered = sample.get("filtered_resps")
    if isinstance(filtered, list) and filtered:
        first = filtered[0]
        if isinstance(first, list) and first:
            first = first[0]
        if isinstance(first, str):
            return first
    return None


def _text(doc: dict, key: str, number: int) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"line {number}: doc.{key} is not text ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class SamplesFile:
    documents: list[Document]          # by doc_id
    nan_lines: list[tuple[int, str]]   # (line, reason) of samples left out for a NaN value


def read_samples(path: Path, task: str, expected: int | None) -> SamplesFile:
    """One samples file; raises ValueError with the reason when it cannot be used whole.

    A sample with a NaN metric value is the one exception: it is left out and listed, so one
    bad document does not turn its run's figures into NaN.
    """
    documents: list[Document] = []
    nan_lines: list[tuple[int, str]] = []
    seen: set[int] = set()
    wanted = per_document_metrics(task)
    for number, sample in iter_samples(path):
        if not isinstance(sample.get("doc"), dict) or "doc_id" not in sample:
            raise ValueError(f"line {number} is not an lm-eval sample (no doc/doc_id)")
        doc_id = sample["doc_id"]
        # lm-eval numbers documents 0, 1, ...; anything else (null, a list, text) is corruption
        if not isinstance(doc_id, int) or isinstance(doc_id, bool):
            raise ValueError(  # noqa: TRY004 -- bad content, reported as a skip like the rest
                f"line {number}: doc_id {json.dumps(doc_id)} is not a document number")
        missing = [m for m in wanted if m not in sample]
        if missing:
            raise ValueError(f"line {number} lacks the per-document metric(s) "
                             f"{', '.join(missing)}")
        metrics = {}
        for metric in wanted:
            value = _float(sample[metric])
            if value is None:
                raise ValueError(f"line {number}: {metric} is not a number")
            metrics[metric] = value
        if doc_id in seen:
            raise ValueError(f"line {number}: document {doc_id} appears twice")
        seen.add(doc_id)
        nan = [m for m, v in metrics.items() if math.isnan(v)]
        if nan:
            reason = (f"line {number} (doc_id {doc_id}): {', '.join(nan)} is NaN; sample left "
                      "out of its run's figures")
            nan_lines.append((number, reason))
            continue
        doc = sample["doc"]
        documents.append(Document(
            doc_id=doc_id,
            arxiv_id=str(doc["id"]) if doc.get("id") is not None else None,
            prompt=_text(doc, "prompt", number),
            truth=_text(doc, "y_true", number),
            completion=_completion(sample) if task in GEN_TASKS else None,
            metrics=metrics,
            fresh_after=str(doc["fresh_after"]) if doc.get("fresh_after") else None,
        ))
    if not documents:
        raise ValueError("no samples in the file" if not nan_lines else
                         f"every sample ({len(nan_lines)}) has a NaN metric value")
    count = len(documents) + len(nan_lines)
    if expected is not None and count != expected:
        raise ValueError(f"{count} samples but the results file reports {expected}; "
                         "partial file?")
    documents.sort(key=lambda d: d.doc_id)
    return SamplesFile(documents, nan_lines)


def _load_results(path: Path) -> dict:
    """The results JSON, or ValueError saying why it is not one of ours."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except ValueError as err:
        raise ValueError(f"not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict) \
            or not isinstance(results.get("config"), dict):
        raise ValueError("not an lm-eval results file (no 'results'/'config')")  # noqa: TRY004
    if not any(task in results["results"] for task in TASKS):
        tasks = ", ".join(sorted(results["results"])) or "none"
        raise ValueError(f"holds no hepth_completion subtask (tasks: {tasks})")
    return results


def scan(runs_dir: Path, since: float | None = None) -> RunsScan:
    """Every usable run under `runs_dir` (any depth) and every file left out, with why; with
    `since` (a time.time()), only the files written at or after it: what one lm-eval call just
    wrote, without reading the earlier runs beside it again."""
    runs_dir = Path(runs_dir)
    runs: list[Run] = []
    skips: list[Skip] = []
    if not runs_dir.is_dir():
        return RunsScan(runs, skips)

    from tqdm import tqdm

    # Dot folders hold what is not a run (e.g. `feyntune reproduce --executor`'s job logs).
    files = sorted(p for p in runs_dir.rglob("*")
                   if p.is_file() and (since is None or p.stat().st_mtime >= since)
                   and not any(part.startswith(".") for part in p.relative_to(runs_dir).parts[:-1]))
    results_files = [p for p in files
                     if p.name.startswith(RESULTS_PREFIX) and p.name.endswith(".json")]
    claimed: set[Path] = set()
    unreadable: set[Path] = set()   # results files skipped: their samples say so
    # A full test split is 15,808 samples per subtask and run: show progress on a terminal.
    for path in tqdm(results_files, desc="reading runs", unit="run", disable=None, leave=False):
        name = path.name
        rel = path.relative_to(runs_dir).as_posix()
        claimed.add(path)
        date_id = _date_id(name, RESULTS_PREFIX, ".json")
        try:
            results = _load_results(path)
            run = Run(
                run_id=rel[: -len(".json")],
                identity=identify(results["config"], results),
                started=_started(results, date_id),
                settings=_settings(results),
                aggregates=_aggregates(results),
                study=study_marker(results),
            )
        except _BAD_CONTENT as err:
            skips.append(Skip(rel, _reason(err)))
            unreadable.add(path)
            continue
        run.provider_cost = provider_cost(results["config"])
        failed = _provider_run(results["config"]).get("document_errors")
        if isinstance(failed, list) and failed:
            run.notes.append(f"{len(failed)} request(s) failed at the provider and were scored "
                             "as empty completions")
        for task in TASKS:
            if task not in results["results"]:
                continue
            samples_path = path.with_name(f"{SAMPLES_PREFIX}{task}_{date_id}.jsonl")
            if not samples_path.is_file():
                run.notes.append(f"{task}: no samples file (run without --log_samples?); "
                                 "lm-eval's aggregates shown, no bootstrap")
                continue
            claimed.add(samples_path)
            samples_rel = samples_path.relative_to(runs_dir).as_posix()
            try:
                read = read_samples(samples_path, task, _expected_count(results, task))
            except (*_BAD_CONTENT, OSError) as err:
                skips.append(Skip(samples_rel, _reason(err)))
                run.notes.append(f"{task}: samples file skipped; lm-eval's aggregates shown")
                continue
            run.samples[task] = read.documents
            if read.nan_lines:
                skips += [Skip(samples_rel, reason, line) for line, reason in read.nan_lines]
                run.notes.append(f"{task}: {len(read.nan_lines)} sample(s) with a NaN value "
                                 f"skipped; figures over the other {len(read.documents)}")
        runs.append(run)

    for path in files:
        if path in claimed or path.name.startswith("."):
            continue
        rel = path.relative_to(runs_dir).as_posix()
        if path.name.startswith(SAMPLES_PREFIX) and path.name.endswith(".jsonl"):
            task, date_id = _samples_parts(path.name)
            if task not in TASKS:
                reason = f"samples of another task ({task})"
            elif path.with_name(f"{RESULTS_PREFIX}{date_id}.json") in unreadable:
                reason = f"its {RESULTS_PREFIX}{date_id}.json was skipped"
            elif path.with_name(f"{RESULTS_PREFIX}{date_id}.json") in claimed:
                reason = f"its {RESULTS_PREFIX}{date_id}.json does not list {task}"
            else:
                reason = f"no {RESULTS_PREFIX}{date_id}.json beside it"
        else:
            reason = "not an lm-eval output file"
        skips.append(Skip(rel, reason))
    return RunsScan(runs, skips)


def _reason(err: Exception) -> str:
    if isinstance(err, (ValueError, OSError)) and not isinstance(err, UnicodeDecodeError):
        return str(err)
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    return f"unreadable ({type(err).__name__}: {err})"
