"""The batch route (`batch=true`): the same requests as providers.runner, sent through the
provider's batch API at its discount, resumable and never paid twice.

- Cached answers are used first; the rest go out in as few batches as the API's limits allow.
- Each batch's id and requests are written under $FEYNTUNE_HOME/providers/batches/open/ the
  moment the API returns it. The same command run again (after Ctrl-C, a crash, a closed laptop)
  finds those files and polls the same batches instead of submitting them again.
- Every answer goes into the answer cache as it is collected, so a later run (batch or direct)
  sends nothing for it; a collected batch's file moves to batches/done/.
- Requests that failed inside a batch (errored, expired, cancelled, or not reported) are counted
  and sent again in a new batch (`batch_resubmits` rounds), or directly (`batch_resend=direct`).
  Requests the provider refuses for their content are document errors, as on the direct route.
- With a budget (`max_cost`), the worst case is checked before anything is sent, and a batch is
  submitted only while the answers received plus the worst case of every open batch, itself
  included, stay within the cap.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.ground.errors import FeynTuneError
from providers import pricing
from providers.base import (
    Completion,
    DocumentError,
    GenerationSettings,
    Provider,
    TransientError,
)
from providers.batch_api import BatchAPI, BatchState
from providers.budget import Budget, input_token_bound
from providers.cache import CompletionCache, cache_key
from providers.instruction import CURRENT, Instruction
from providers.runner import (
    Outcome,
    Request,
    RunLimits,
    RunReport,
    _notice,
    check_budget,
    completion_cost,
    run_requests,
)

RESEND = ("batch", "direct")


@dataclass(frozen=True)
class BatchOptions:
    """The batch route's options (model_args of the provider model, options of --judge)."""

    batch: bool = False
    poll_initial: float = 10.0  # first wait between polls, seconds
    poll_max: float = 300.0  # the wait grows by half each poll up to this
    resubmits: int = 2  # rounds of sending failed requests again
    resend: str = "batch"  # how failed requests are sent again: batch | direct

    def __post_init__(self) -> None:
        if not 0 < self.poll_initial <= self.poll_max:
            raise FeynTuneError(f"batch_poll={self.poll_initial:g} must be positive and at most "
                                f"batch_poll_max={self.poll_max:g}")
        if self.resubmits < 0:
            raise FeynTuneError(f"batch_resubmits must be >= 0, got {self.resubmits}")
        if self.resend not in RESEND:
            raise FeynTuneError(f"batch_resend={self.resend!r}: one of {', '.join(RESEND)}")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> BatchOptions:
        values: dict[str, Any] = {}
        for key, (name, kind) in BATCH_ARGS.items():
            value = args.get(key)
            if value is None or value == "":
                continue
            try:
                values[name] = kind(value)
            except ValueError:
                raise FeynTuneError(f"{key}={value!r}: expected {kind.__name__}") from None
        return cls(**values)


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(text)


_flag.__name__ = "true or false"
# model_args -> (BatchOptions field, type).
BATCH_ARGS = {
    "batch": ("batch", _flag),
    "batch_poll": ("poll_initial", float),
    "batch_poll_max": ("poll_max", float),
    "batch_resubmits": ("resubmits", int),
    "batch_resend": ("resend", str),
}


# -- the batch files on disk ------------------------------------------------------------------
def batches_dir(cache: CompletionCache) -> Path:
    """Beside the answer cache: the two belong together."""
    return cache.path.parent / "batches"


@dataclass
class BatchRecord:
    """One submitted batch: enough to poll it and to store its answers in the cache."""

    path: Path
    batch_id: str
    identity: dict[str, str]
    instruction_version: str
    items: dict[str, dict[str, Any]]  # custom id (= cache key) -> prompt, settings, sample_index
    created: float
    held: float = 0.0  # worst-case cost reserved in this run's budget

    def request(self, key: str) -> Request:
        item = self.items[key]
        settings = dict(item["settings"])
        settings["stop"] = tuple(settings.get("stop") or ())
        return Request(item["prompt"], GenerationSettings(**settings), item["sample_index"])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a crash mid-write leaves the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_record(folder: Path, provider: Provider, instruction: Instruction, batch_id: str,
                items: dict[str, dict[str, Any]]) -> BatchRecord:
    name = f"{_safe(provider.name)}-{int(time.time())}-{_safe(batch_id)[-48:]}.json"
    record = BatchRecord(folder / "open" / name, batch_id, provider.identity(),
                         instruction.version, items, time.time())
    _write_json(record.path, {"batch_id": batch_id, "identity": record.identity,
                              "instruction_version": instruction.version,
                              "created": record.created, "items": items})
    return record


def open_records(folder: Path, provider: Provider, instruction: Instruction) -> list[BatchRecord]:
    """The batches this provider model was given and not yet collected; an unreadable file is
    an error (it may stand for a paid batch), never skipped."""
    records = []
    for path in sorted((folder / "open").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = BatchRecord(path, str(data["batch_id"]), dict(data["identity"]),
                                 str(data["instruction_version"]), dict(data["items"]),
                                 float(data["created"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FeynTuneError(f"cannot read the open batch file {path}: {err}; it stands for "
                                "a submitted batch: repair it, or move it out of the folder "
                                "once that batch is no longer wanted") from None
        if record.identity == provider.identity() and \
                record.instruction_version == instruction.version:
            records.append(record)
    return records


def close_record(record: BatchRecord, state: BatchState, counts: dict[str, int]) -> None:
    """Collected: the file moves to done/ with what came of the batch (kept, never deleted)."""
    done = record.path.parent.parent / "done" / record.path.name
    data = json.loads(record.path.read_text(encoding="utf-8"))
    data.update(status=state.status, collected=time.time(), counts=counts)
    _write_json(done, data)
    record.path.unlink()


# -- the route ----------------------------------------------------------------------------------
class _Progress:
    """One line: submitted, answered, failed, the batches open and the time since the start."""

    def __init__(self, name: str, total: int, show: bool) -> None:
        self.start = time.monotonic()
        self.submitted = self.answered = self.failed = self.open = 0
        self.bar = tqdm(total=total, desc=f"{name} batch", unit="req",
                        disable=not show or not total)

    def update(self, answered: int = 0) -> None:
        self.answered += answered
        self.bar.update(answered)
        self.bar.set_postfix_str(
            f"submitted {self.submitted}, answered {self.answered}, failed {self.failed}, "
            f"{self.open} batch(es) open", refresh=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.start:.0f} s"


class _Route:
    def __init__(self, provider, api, instruction, limits, cache, budget, options, notify):
        self.provider = provider
        self.api: BatchAPI = api
        self.instruction = instruction
        self.limits = limits
        self.cache = cache
        self.budget = budget if budget is not None and budget.capped else None
        self.price = pricing.find_price(provider.name, provider.model)
        self.options = options
        self.notify = notify
        self.folder = batches_dir(cache)
        self.rng = random.Random()
        self.name = f"{provider.name}:{provider.model}"
        self.batch_ids: list[str] = []
        self.failed_in_batch = 0

    def say(self, message: str) -> None:
        self.notify(f"{self.name}: {message}")

    def call(self, what: str, fn: Callable, *args):
        """An API call of the route (submit, state, results) with the runner's bounded
        retries of transient errors; any other error ends the run in one line."""
        attempt = 0
        while True:
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001 - every SDK error is classified
                err = self.provider.error(exc)
            attempt += 1
            if not isinstance(err, TransientError) or attempt > self.limits.max_retries:
                raise FeynTuneError(f"{self.name}: batch {what} failed: {err}") from None
            delay = min(self.limits.max_wait, err.retry_after or
                        self.limits.backoff(attempt - 1, self.rng))
            self.say(f"batch {what}: {err}; retry {attempt} in {delay:.1f} s")
            time.sleep(delay)

    def worst(self, record_items: dict[str, dict[str, Any]]) -> float:
        if self.price is None:
            return 0.0
        return sum(self.price.cost(input_token_bound(self.instruction.text, i["prompt"]),
                                   i["settings"]["max_tokens"], batch=True)
                   for i in record_items.values())

    def chunks(self, items: dict[str, dict[str, Any]]) -> list[tuple[list[dict], dict]]:
        """The requests as API entries, cut where a batch would pass its count or size limit."""
        out: list[tuple[list[dict], dict]] = []
        entries: list[dict] = []
        part: dict[str, dict[str, Any]] = {}
        size = 0
        for key, item in items.items():
            request = Request(item["prompt"], GenerationSettings(
                **{**item["settings"], "stop": tuple(item["settings"]["stop"])}))
            entry = self.api.entry(key, self.instruction.text, request.prompt, request.settings)
            grow = self.api.size(entry)
            if grow > self.api.max_bytes:
                raise FeynTuneError(f"{self.name}: one request is {grow} bytes, more than a "
                                    f"batch may hold ({self.api.max_bytes})")
            if entries and (len(entries) >= self.api.max_requests
                            or size + grow > self.api.max_bytes):
                out.append((entries, part))
                entries, part, size = [], {}, 0
            entries.append(entry)
            part[key] = item
            size += grow
        if entries:
            out.append((entries, part))
        return out

    def submit(self, items: dict[str, dict[str, Any]], progress: _Progress,
               records: list[BatchRecord]) -> list[str]:
        """Submit every chunk the budget allows; the keys left unsent (budget reached)."""
        chunks = self.chunks(items)
        for n, (entries, part) in enumerate(chunks):
            held = self.worst(part)
            if self.budget is not None and not self.budget.reserve(held):
                self.say(f"{self.budget.stop_line('batch')}; {sum(len(p) for _, p in chunks[n:])}"
                         " request(s) not submitted")
                return [key for _, p in chunks[n:] for key in p]
            try:
                batch_id = self.call("creation", self.api.submit, entries)
            except BaseException:
                if self.budget is not None:
                    self.budget.settle(held, 0.0)
                raise
            record = save_record(self.folder, self.provider, self.instruction, batch_id, part)
            record.held = held
            records.append(record)
            progress.submitted += len(part)
            progress.open += 1
            self.say(f"batch {batch_id} created with {len(part)} request(s); its id is kept in "
                     f"{record.path}")
            progress.update()
        return []

    def collect(self, record: BatchRecord, state: BatchState, outcomes: dict[str, Outcome],
                progress: _Progress) -> list[str]:
        """Store an ended batch's answers; the keys to send again."""
        reported: set[str] = set()
        again: list[str] = []
        paid = 0.0
        counts = {"answered": 0, "document_errors": 0, "failed": 0}
        for key, result in self.call("results", lambda: list(self.api.results(record.batch_id))):
            if key not in record.items or key in reported:
                continue  # not ours, or told twice: the first word counts
            reported.add(key)
            if isinstance(result, Completion):
                request = record.request(key)
                self.cache.put(key, record.identity, record.instruction_version,
                               request.settings, request.prompt, request.sample_index, result)
                outcomes[key] = Outcome(completion=result, attempts=1)
                paid += completion_cost(self.price, result)
                counts["answered"] += 1
            elif isinstance(result, DocumentError):
                outcomes[key] = Outcome(error=self.provider.scrub(str(result)),
                                        kind="document_error", attempts=1)
                counts["document_errors"] += 1
            else:
                outcomes[key] = Outcome(error=self.provider.scrub(str(result)), kind="failed",
                                        attempts=1)
                again.append(key)
        for key in record.items:
            if key not in reported:
                outcomes[key] = Outcome(error=f"no result in batch {record.batch_id} "
                                        f"({state.status})", kind="failed", attempts=1)
                again.append(key)
        counts["failed"] = len(again)
        self.failed_in_batch += len(again)
        self.batch_ids.append(record.batch_id)
        if self.budget is not None:
            self.budget.settle(record.held, paid)
        close_record(record, state, counts)
        progress.open -= 1
        progress.failed += len(again)
        progress.update(counts["answered"] + counts["document_errors"])
        reasons = Counter(outcomes[k].error for k in again)
        failed_note = (f", {len(again)} failed (" + "; ".join(
            f"{n} x {why}" for why, n in reasons.most_common(2))
            + ("; ..." if len(reasons) > 2 else "") + ")") if again else ""
        self.say(f"batch {record.batch_id} {state.status} after {progress.elapsed()}: "
                 f"{counts['answered']} answered, {counts['document_errors']} document "
                 f"error(s){failed_note}")
        return again

    def wait(self, records: list[BatchRecord], outcomes: dict[str, Outcome],
             progress: _Progress) -> list[str]:
        """Poll every open batch, with a growing wait, until each has ended and is collected;
        the keys that failed."""
        again: list[str] = []
        delay = self.options.poll_initial
        while records:
            running = 0
            for record in list(records):
                state = self.call("status", self.api.state, record.batch_id)
                if state.ended:
                    again += self.collect(record, state, outcomes, progress)
                    records.remove(record)
                else:
                    running += state.completed
            progress.bar.set_postfix_str(
                f"submitted {progress.submitted}, answered {progress.answered}"
                f"{f' (+{running} done at the provider)' if running else ''}, failed "
                f"{progress.failed}, {progress.open} batch(es) open", refresh=True)
            if records:
                time.sleep(delay)
                delay = min(self.options.poll_max, delay * 1.5)
        return again


_LIMITS = RunLimits()
_BATCH = BatchOptions(batch=True)


def run_batch(
    provider: Provider,
    requests: list[Request],
    *,
    instruction: Instruction = CURRENT,
    limits: RunLimits = _LIMITS,
    cache: CompletionCache | None = None,
    progress: bool = True,
    options: BatchOptions = _BATCH,
    budget: Budget | None = None,
    notify: Callable[[str], None] = _notice,
) -> RunReport:
    """Answer every request through the provider's batch API (from the cache where possible),
    in order; the same RunReport as providers.runner.run_requests. Ctrl-C leaves the batches
    open at the provider and their files in place: the same command collects them."""
    api = provider.batch_api()  # one clear line for a provider without one
    cache = cache or CompletionCache()
    start = time.perf_counter()
    identity = provider.identity()
    keys = [cache_key(identity, instruction.version, r.settings, r.prompt, r.sample_index)
            for r in requests]
    stored = cache.get_many(keys)
    outcomes: dict[str, Outcome] = {k: Outcome(completion=c, kind="cached")
                                    for k, c in stored.items()}
    todo: dict[str, Request] = {}
    for key, request in zip(keys, requests):
        if key not in stored:
            todo.setdefault(key, request)
    route = _Route(provider, api, instruction, limits, cache, budget, options, notify)
    records = [r for r in open_records(route.folder, provider, instruction)
               if any(k in todo for k in r.items)]
    resumed = {k for r in records for k in r.items}
    fresh = {k: {"prompt": r.prompt, "settings": r.settings.as_dict(),
                 "sample_index": r.sample_index} for k, r in todo.items() if k not in resumed}
    check_budget(provider, instruction, [todo[k] for k in fresh], budget, True, notify)
    if route.budget is not None and route.price is None:
        raise FeynTuneError(f"{route.name}: max_cost cannot be held without a price in "
                            f"{pricing.PRICES}")
    report = RunReport(provider=provider.describe(), instruction=instruction.as_dict(),
                       outcomes=[], cache_path=str(cache.path))
    bar = _Progress(route.name, len(todo), progress)
    for record in records:
        record.held = route.worst(record.items)
        if route.budget is not None:
            route.budget.hold(record.held)  # submitted before: in flight, whatever the cap
        bar.submitted += len(record.items)
        bar.open += 1
        route.say(f"resuming batch {record.batch_id} ({len(record.items)} request(s), "
                  f"submitted {time.strftime('%Y-%m-%d %H:%M', time.gmtime(record.created))} "
                  "UTC); nothing is submitted again")
    unsent: list[str] = []
    resent_direct: list[str] = []
    resubmitted = 0
    rounds = 0
    try:
        pending = fresh
        while True:
            unsent += route.submit(pending, bar, records)
            failed = route.wait(records, outcomes, bar)
            failed = [k for k in failed if k in todo]
            if not failed or unsent:
                break
            if options.resend == "direct":
                route.say(f"{len(failed)} request(s) failed in the batch; sending them directly "
                          "(batch_resend=direct)")
                resent_direct = failed
                break
            if rounds >= options.resubmits:
                break
            rounds += 1
            resubmitted += len(failed)
            route.say(f"{len(failed)} request(s) failed in the batch; sending them again in a "
                      f"new batch (round {rounds} of batch_resubmits={options.resubmits})")
            pending = {k: fresh.get(k) or _item(todo[k]) for k in failed}
    except KeyboardInterrupt:
        route.say(f"stopped by Ctrl-C after {bar.elapsed()}; {len(records)} batch(es) stay open "
                  f"at the provider, their ids in {route.folder / 'open'}: the same command "
                  "collects them without submitting them again. Answers collected so far are "
                  f"in {cache.path}")
        raise
    finally:
        bar.bar.close()
    direct = None
    if resent_direct:
        direct = run_requests(provider, [todo[k] for k in resent_direct], instruction=instruction,
                              limits=limits, cache=cache, progress=progress, notify=notify,
                              budget=budget)
        for key, outcome in zip(resent_direct, direct.outcomes):
            outcomes[key] = outcome
    for key in unsent:
        outcomes[key] = Outcome(kind="stopped", error="max_cost reached")

    report.wall_s = time.perf_counter() - start
    report.batch = {"batches": route.batch_ids, "failed_in_batch": route.failed_in_batch,
                    "resubmitted": resubmitted, "resent_direct": len(resent_direct),
                    "not_submitted": len(unsent)}
    report.outcomes = [outcomes.get(k) or Outcome(kind="stopped") for k in keys]
    seen: set[str] = set()
    for key in keys:  # what this run paid for: each answer once
        outcome = outcomes.get(key)
        if key not in seen and outcome and outcome.kind == "ok" and outcome.completion.batch:
            report.sent += 1
            report.usage_run.add(outcome.completion)
        seen.add(key)
    if direct is not None:
        report.sent += direct.sent
        report.retries += direct.retries
        report.usage_run.include(direct.usage_run)
    for outcome in report.outcomes:
        if outcome.completion is not None:
            report.usage_all.add(outcome.completion)
    answered = sum(o.completion is not None for o in report.outcomes)
    where = (f"{answered} of {len(requests)} answers are stored in {cache.path}; running again "
             "sends only the missing requests")
    if unsent:
        raise FeynTuneError(f"{route.name}: stopped at max_cost=${budget.max_cost:g} with "
                            f"{len(unsent)} request(s) not submitted. {where}")
    failed = [(requests[i].label or f"request {i}", o.error)
              for i, o in enumerate(report.outcomes) if o.kind in ("failed", "stopped")]
    if failed:
        label, error = failed[0]
        raise FeynTuneError(
            f"{len(failed)} {provider.name} request(s) failed in the batch and "
            f"{options.resubmits} resubmission(s) (first: {label}: {error}). {where}")
    return report


def _item(request: Request) -> dict[str, Any]:
    return {"prompt": request.prompt, "settings": request.settings.as_dict(),
            "sample_index": request.sample_index}


def send(provider: Provider, requests: list[Request], *, batch: BatchOptions | None = None,
         **kwargs) -> RunReport:
    """The route the options ask for: a batch API, or direct requests (providers.runner)."""
    if batch is not None and batch.batch:
        return run_batch(provider, requests, options=batch, **kwargs)
    return run_requests(provider, requests, **kwargs)
