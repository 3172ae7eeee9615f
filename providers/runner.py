"""Send many requests through one provider: cache first, then a pool of worker threads with rate
limits, bounded retries with jittered exponential back-off honouring Retry-After, and a clear stop
on errors that retrying cannot fix. Every provider gets all of this without writing any of it.

No wait is silent or unbounded: a wait over ANNOUNCE_WAIT_S seconds is announced with its reason,
none exceeds `max_wait`, and a wait that would run past a request's retry budget is not taken.
Ctrl-C stops sending and waits for the requests in flight (their answers are stored); a second
Ctrl-C abandons them."""

from __future__ import annotations

import logging
import queue
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
    Usage,
)
from providers.budget import Budget, input_token_bound, worst_case
from providers.cache import CompletionCache, cache_key
from providers.instruction import CURRENT, Instruction
from providers.limits import RateLimiter

log = logging.getLogger("feyntune.providers")

ANNOUNCE_WAIT_S = 5.0  # a wait at least this long is shown on screen, with its reason
_REPEAT_NOTICE_S = 30.0  # the same kind of wait (a rate limit) is announced again after this
_PAUSE = RateLimiter.PAUSE_REASON


@dataclass(frozen=True)
class Request:
    prompt: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    sample_index: int = 0  # the k-th request with this very prompt and settings
    label: str = ""  # where it came from, for error reports (e.g. "hepth_completion_gen doc 7")


@dataclass(frozen=True)
class RunLimits:
    """Concurrency, rate limits and retry bounds (model_args of the lm-eval model)."""

    num_concurrent: int = 8
    rpm: float | None = None  # requests per minute, None = no client-side limit
    tpm: float | None = None  # tokens per minute (input estimate + max_tokens, then settled)
    max_retries: int = 6  # retries of one request after its first attempt
    max_retry_seconds: float = 600.0  # no retry starts later than this after the first attempt
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_wait: float = 120.0  # no single wait is longer; a server asking for more is a failure
    max_consecutive_failures: int = 10  # that many requests in a row failing = service down

    def __post_init__(self) -> None:
        if self.num_concurrent < 1:
            raise FeynTuneError(f"num_concurrent must be >= 1, got {self.num_concurrent}")
        if self.max_retries < 0:
            raise FeynTuneError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FeynTuneError(f"{name} must be positive, got {value}")
        if not self.max_wait > 0:
            raise FeynTuneError(f"max_wait must be positive, got {self.max_wait}")
        if self.rpm is not None and 60.0 / self.rpm > self.max_wait:
            raise FeynTuneError(
                f"rpm={self.rpm:g} spaces requests {60.0 / self.rpm:g} s apart, more than "
                f"max_wait={self.max_wait:g} s: raise rpm or max_wait"
            )

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> RunLimits:
        """The limits a provider run's model_args ask for (LIMIT_ARGS); absent or empty values
        keep the defaults. ValueError for a value that is not a number."""
        values = {}
        for key, (field_name, kind) in LIMIT_ARGS.items():
            value = args.get(key)
            if value is not None and value != "":
                values[field_name] = kind(value)
        return cls(**values)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Equal jitter: between half and all of the exponential step (never zero)."""
        step = min(self.backoff_max, self.backoff_initial * 2.0 ** attempt)
        return rng.uniform(step / 2.0, step)


# The model_args of a provider run (`--model_args` of `--model provider`, the options of
# `feyntune judge --judge`) that set its limits -> (RunLimits field, type).
LIMIT_ARGS = {
    "num_concurrent": ("num_concurrent", int),
    "rpm": ("rpm", float),
    "tpm": ("tpm", float),
    "max_retries": ("max_retries", int),
    "max_retry_time": ("max_retry_seconds", float),
    "backoff_initial": ("backoff_initial", float),
    "backoff_max": ("backoff_max", float),
    "max_wait": ("max_wait", float),
}


@dataclass
class Outcome:
    completion: Completion | None = None
    error: str | None = None
    kind: str = "ok"  # ok | cached | document_error | failed | stopped
    attempts: int = 0


@dataclass
class RunReport:
    provider: dict[str, Any]
    instruction: dict[str, str]
    outcomes: list[Outcome]
    cache_path: str
    sent: int = 0  # requests that got an answer in this run
    retries: int = 0
    wall_s: float = 0.0
    usage_run: Usage = field(default_factory=Usage)  # what this run paid for
    usage_all: Usage = field(default_factory=Usage)  # behind all answers, cached ones too
    batch: dict[str, Any] | None = None  # the batch route's counts (providers.batch)

    @property
    def cached(self) -> int:
        return sum(o.kind == "cached" for o in self.outcomes)

    def document_errors(self, labels: list[str]) -> list[dict[str, str]]:
        return [
            {"request": labels[i], "error": o.error or ""}
            for i, o in enumerate(self.outcomes)
            if o.kind == "document_error"
        ]

    def summary(self) -> dict[str, Any]:
        refused = sum(bool(o.completion and o.completion.refused) for o in self.outcomes)
        return {**summary_figures(
            self.provider["provider"], self.provider["model"], requests=len(self.outcomes),
            sent=self.sent, from_cache=self.cached, retries=self.retries,
            document_errors=sum(o.kind == "document_error" for o in self.outcomes),
            refused=refused, wall_s=self.wall_s, usage_run=self.usage_run,
            usage_all=self.usage_all), "cache": self.cache_path,
            **({"batch": self.batch} if self.batch is not None else {})}


def summary_figures(provider: str, model: str, *, requests: int, sent: int, from_cache: int,
                    retries: int, document_errors: int, refused: int, wall_s: float,
                    usage_run: Usage, usage_all: Usage) -> dict[str, Any]:
    """What a run of requests did and cost, in the shape format_summary prints (the runner's
    RunReport and the judge's several passes both report with it)."""
    return {
        "requests": requests, "sent": sent, "from_cache": from_cache, "retries": retries,
        "document_errors": document_errors, "refused": refused, "wall_s": round(wall_s, 3),
        "usage_this_run": usage_run.as_dict(),
        "usage_all_answers": usage_all.as_dict(),
        "cost_this_run": usage_run.cost(provider, model),
        "cost_all_answers": usage_all.cost(provider, model),
    }


def estimate_tokens(instruction: str, prompt: str, settings: GenerationSettings) -> float:
    """Before the answer: about 4 characters a token for the input, plus the output allowance."""
    return (len(instruction) + len(prompt)) / 4.0 + settings.max_tokens


def _notice(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above the progress bar, not through it


def completion_cost(price: pricing.Price | None, completion: Completion) -> float:
    """What one answer cost (0 without a price: a capped run needs one and checks first)."""
    if price is None:
        return 0.0
    return price.cost(completion.input_tokens, completion.output_tokens, batch=completion.batch)


def check_budget(provider: Provider, instruction: Instruction, requests: list[Request],
                 budget: Budget | None, batch: bool, notify: Callable[[str], None]) -> None:
    """Before sending: say the worst case of what is to be sent; refuse it over the budget.
    Without a budget object (library use, tests) it says nothing."""
    if not requests or budget is None:
        return
    worst = worst_case(provider.name, provider.model, instruction.text,
                       [(r.prompt, r.settings) for r in requests], batch)
    notify(worst.line(f"{provider.name}:{provider.model}")
           + (f"; max_cost=${budget.max_cost:g}" if budget.capped else ""))
    budget.check(worst, f"{provider.name}:{provider.model}")


class _Run:
    def __init__(self, provider, instruction, limits, cache, seed, notify, budget=None):
        self.provider = provider
        self.budget = budget if budget is not None and budget.capped else None
        self.price = pricing.find_price(provider.name, provider.model) if self.budget else None
        self.over_budget = False
        self.instruction = instruction
        self.limits = limits
        self.cache = cache
        self.limiter = RateLimiter(limits.rpm, limits.tpm)
        self.stop = threading.Event()
        self.fatal: str | None = None
        self.retries = 0
        self.failures_in_a_row = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._notify = notify
        self._noticed: dict[str, float] = {}

    def _jitter(self, attempt: int) -> float:
        with self._lock:
            return self.limits.backoff(attempt, self._rng)

    def say(self, message: str, topic: str | None = None) -> None:
        """Tell the user; a `topic` (a recurring kind of wait) is said once per _REPEAT_NOTICE_S."""
        if topic is not None:
            now = time.monotonic()
            with self._lock:
                if now - self._noticed.get(topic, -_REPEAT_NOTICE_S) < _REPEAT_NOTICE_S:
                    return
                self._noticed[topic] = now
        self._notify(f"{self.provider.name}: {message}")

    def _limiter_wait(self, seconds: float, reason: str) -> None:
        if seconds >= ANNOUNCE_WAIT_S and not self.stop.is_set():
            self.say(f"waiting {seconds:.0f} s for {reason}", topic=reason)

    def send(self, request: Request, key: str) -> Outcome:
        outcome = self._send(request, key)
        with self._lock:  # counted here, not by the caller, so the next request sees the stop
            if outcome.kind == "failed":
                self.failures_in_a_row += 1
                if self.failures_in_a_row >= self.limits.max_consecutive_failures:
                    self.fatal = self.fatal or (
                        f"{self.failures_in_a_row} requests in a row failed after retries; "
                        f"last: {outcome.error}"
                    )
                    self.stop.set()
            elif outcome.kind in ("ok", "document_error"):
                self.failures_in_a_row = 0
        return outcome

    def _send(self, request: Request, key: str) -> Outcome:
        if self.budget is None:
            return self._send_uncapped(request, key)
        held = self.price.cost(input_token_bound(self.instruction.text, request.prompt),
                               request.settings.max_tokens)
        if not self.budget.reserve(held):
            with self._lock:
                self.over_budget = True
            self.stop.set()  # the cap is reached: nothing more is sent
            return Outcome(kind="stopped", error="max_cost reached")
        paid = 0.0
        try:
            outcome = self._send_uncapped(request, key)
            if outcome.completion is not None:
                paid = completion_cost(self.price, outcome.completion)
            return outcome
        finally:
            self.budget.settle(held, paid)

    def _send_uncapped(self, request: Request, key: str) -> Outcome:
        """One request until it is answered, refused for good, or out of retries."""
        provider = self.provider
        first = time.monotonic()
        attempt = 0
        reserved = estimate_tokens(self.instruction.text, request.prompt, request.settings)
        while True:
            if not self.limiter.acquire(reserved, self.stop, self._limiter_wait):
                return Outcome(kind="stopped", attempts=attempt)
            try:
                completion = provider.complete(
                    self.instruction.text, request.prompt, request.settings
                )
            except Exception as exc:  # noqa: BLE001 - every SDK error is classified
                err = provider.error(exc)
            else:
                self.limiter.settle(reserved, completion.input_tokens + completion.output_tokens)
                self.cache.put(
                    key, provider.identity(), self.instruction.version, request.settings,
                    request.prompt, request.sample_index, completion,
                )
                return Outcome(completion=completion, attempts=attempt + 1)
            self.limiter.settle(reserved, 0.0)
            attempt += 1
            if isinstance(err, DocumentError):
                return Outcome(error=str(err), kind="document_error", attempts=attempt)
            if not isinstance(err, TransientError):
                with self._lock:
                    self.fatal = self.fatal or str(err)
                self.stop.set()
                return Outcome(error=str(err), kind="stopped", attempts=attempt)
            delay, asked = self._retry_delay(attempt, err)
            elapsed = time.monotonic() - first
            why_not = self._why_not_wait(attempt, delay, asked, elapsed)
            if why_not:
                return Outcome(
                    error=f"gave up after {attempt} attempts in {elapsed:.1f} s{why_not}: {err}",
                    kind="failed", attempts=attempt,
                )
            with self._lock:
                self.retries += 1
            what = request.label or "a request"
            if err.status == 429 and err.retry_after is not None:
                # The whole account is limited, not just this request: every worker waits what
                # the server asked (<= max_wait here), even when our own back-off is longer.
                self.limiter.pause(err.retry_after)
            if asked and err.status == 429:
                if delay >= ANNOUNCE_WAIT_S:
                    self.say(f"rate limited (HTTP 429, Retry-After {err.retry_after:g} s): every "
                             f"request waits {delay:.0f} s; then retry {attempt} of {what}",
                             topic=_PAUSE)
            elif delay >= ANNOUNCE_WAIT_S:
                source = f"Retry-After {err.retry_after:g} s" if asked else "back-off"
                self.say(f"waiting {delay:.0f} s ({source}) before retry {attempt} of {what} "
                         f"after: {err}")
            log.info("%s: retry %d of %s in %.2f s after: %s", provider.name, attempt, what,
                     delay, err)
            if self.stop.wait(delay):
                return Outcome(kind="stopped", attempts=attempt)

    def _retry_delay(self, attempt: int, err: TransientError) -> tuple[float, bool]:
        """The wait before the next attempt, and whether the server asked for it. Our own
        back-off never exceeds max_wait; what the server asks is taken whole or not at all."""
        delay = min(self._jitter(attempt - 1), self.limits.max_wait)
        if err.retry_after is not None and err.retry_after > delay:
            return err.retry_after, True
        return delay, False

    def _why_not_wait(self, attempt: int, delay: float, asked: bool, elapsed: float) -> str:
        """'' when the retry may wait `delay`; else why the request gives up now."""
        limits = self.limits
        if attempt > limits.max_retries:
            return f" (max_retries={limits.max_retries})"
        if asked and delay > limits.max_wait:
            return (f"; the server asks to wait {delay:.0f} s, more than "
                    f"max_wait={limits.max_wait:g} s")
        if elapsed + delay > limits.max_retry_seconds:
            return (f"; waiting {delay:.0f} s more would pass "
                    f"max_retry_time={limits.max_retry_seconds:g} s")
        return ""


_EXITED = object()  # a worker's last word on the results queue


class _Workers:
    """Daemon threads taking requests from one queue. Not a ThreadPoolExecutor: its threads are
    joined at interpreter exit, so a request stuck in the network would hold the process (and a
    second Ctrl-C there prints a traceback) after the user asked to abandon it."""

    def __init__(self, run: _Run, jobs: list[tuple[str, Request]], threads: int) -> None:
        self.run = run
        self.jobs = deque(jobs)
        self.results: queue.Queue = queue.Queue()
        self.in_flight = 0
        self.exited = 0  # read and written by the main thread only
        self.threads = min(threads, len(jobs))
        self._lock = threading.Lock()
        for n in range(self.threads):
            threading.Thread(target=self._work, name=f"provider-{n}", daemon=True).start()

    def _work(self) -> None:
        try:
            while not self.run.stop.is_set():
                with self._lock:
                    if not self.jobs:
                        break
                    key, request = self.jobs.popleft()
                    self.in_flight += 1
                try:
                    result: Any = self.run.send(request, key)
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self.run.stop.set()
                    result = exc
                finally:
                    with self._lock:
                        self.in_flight -= 1
                self.results.put((key, result))
        finally:
            self.results.put(_EXITED)

    def flying(self) -> int:
        with self._lock:
            return self.in_flight

    def results_until_done(self):
        """(key, Outcome) as they arrive, until every worker has stopped. Called again after a
        Ctrl-C, it goes on where the interrupted call stopped (the count of exited workers
        lives on the object, not in the generator)."""
        while self.exited < self.threads:
            try:
                item = self.results.get(timeout=0.5)  # short: Ctrl-C is seen between waits
            except queue.Empty:
                continue
            if item is _EXITED:
                self.exited += 1
            else:
                yield item


def run_requests(
    provider: Provider,
    requests: list[Request],
    *,
    instruction: Instruction = CURRENT,
    limits: RunLimits = RunLimits(),
    cache: CompletionCache | None = None,
    progress: bool = True,
    seed: int | None = None,
    notify: Callable[[str], None] = _notice,
    budget: Budget | None = None,
) -> RunReport:
    """Answer every request (from the cache where possible) in order, or raise FeynTuneError
    naming what went wrong; whatever was answered before the error stays cached. Ctrl-C stops
    sending, waits for the requests in flight, then raises KeyboardInterrupt; a second Ctrl-C
    raises it at once, abandoning them. With a `budget`, the worst case is checked first and
    sending stops at its cap."""
    cache = cache or CompletionCache()
    start = time.perf_counter()
    identity = provider.identity()
    keys = [
        cache_key(identity, instruction.version, r.settings, r.prompt, r.sample_index)
        for r in requests
    ]
    stored = cache.get_many(keys)
    outcomes: list[Outcome | None] = [None] * len(requests)
    todo: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key in stored:
            outcomes[i] = Outcome(completion=stored[key], kind="cached")
        else:
            todo.setdefault(key, []).append(i)

    check_budget(provider, instruction, [requests[idx[0]] for idx in todo.values()], budget,
                 False, notify)
    run = _Run(provider, instruction, limits, cache, seed, notify, budget)
    report = RunReport(
        provider=provider.describe(), instruction=instruction.as_dict(),
        outcomes=[], cache_path=str(cache.path),
    )
    bar = tqdm(
        total=len(todo), desc=f"{provider.name}:{provider.model}", unit="req",
        disable=not progress or not todo,
    )
    workers = _Workers(run, [(key, requests[idx[0]]) for key, idx in todo.items()],
                       limits.num_concurrent)
    failure: BaseException | None = None
    interrupted = False
    try:
        while True:
            try:
                for key, result in workers.results_until_done():
                    if isinstance(result, BaseException):
                        failure = failure or result
                        continue
                    for i in todo[key]:
                        outcomes[i] = result
                    if result.kind == "ok":
                        report.sent += 1
                        report.usage_run.add(result.completion)
                    bar.update(1)
                break
            except KeyboardInterrupt:
                if interrupted:
                    _abandon(run, workers, cache)
                    raise
                interrupted = True
                run.stop.set()
                _first_interrupt(run, workers)
    except BaseException:
        run.stop.set()  # whatever ends this loop, nothing new is sent behind the user's back
        raise
    finally:
        bar.close()
    if failure is not None:
        raise failure
    if interrupted:
        answered = sum(o is not None and o.completion is not None for o in outcomes)
        notify(f"{provider.name}: stopped by Ctrl-C; "
               f"{_stored_note(cache, f'{answered} of {len(requests)} answers are')}")
        raise KeyboardInterrupt

    report.retries = run.retries
    report.wall_s = time.perf_counter() - start
    report.outcomes = [o or Outcome(kind="stopped") for o in outcomes]
    for o in report.outcomes:
        if o.completion is not None:
            report.usage_all.add(o.completion)
    answered = sum(o.completion is not None for o in report.outcomes)
    where = _stored_note(cache, f"{answered} of {len(requests)} answers are")
    if run.fatal:
        raise FeynTuneError(f"{provider.name} run stopped: {run.fatal}. {where}")
    if run.over_budget:
        raise FeynTuneError(f"{run.budget.stop_line(provider.name)}. {where}")
    failed = [(requests[i].label or f"request {i}", o.error)
              for i, o in enumerate(report.outcomes) if o.kind in ("failed", "stopped")]
    if failed:
        label, error = failed[0]
        raise FeynTuneError(
            f"{len(failed)} {provider.name} request(s) failed after retries "
            f"(first: {label}: {error}). {where}"
        )
    return report


def _first_interrupt(run: _Run, workers: _Workers) -> None:
    run.say(f"Ctrl-C: no new requests are sent; waiting for the {workers.flying()} in flight (at most "
            f"the {run.provider.timeout:g} s request timeout) so that their answers are stored. "
            "Ctrl-C again abandons them.")


def _abandon(run: _Run, workers: _Workers, cache: CompletionCache) -> None:
    run.say(f"Ctrl-C again: abandoned {workers.flying()} request(s) in flight; "
            f"{_stored_note(cache, 'the answers received so far are')}")


def _stored_note(cache: CompletionCache, what: str) -> str:
    """Where the paid-for answers are, and that a re-run sends only the rest."""
    return f"{what} stored in {cache.path}; running again sends only the missing requests"


def format_summary(summary: dict[str, Any], title: str) -> str:
    run, every = summary["usage_this_run"], summary["usage_all_answers"]
    cost_run, cost_all = summary["cost_this_run"], summary["cost_all_answers"]

    def usd(cost: dict[str, Any]) -> str:
        return f"${cost['usd']:.4f}" if cost.get("usd") is not None else "n/a (no price)"

    lines = [
        (f"{title}: {summary['requests']} requests, {summary['sent']} sent, "
         f"{summary['from_cache']} from cache, {summary['retries']} retries, "
         f"{summary['document_errors']} document errors, {summary['refused']} refused, "
         f"{summary['wall_s']:.1f} s"),
        (f"  this run:    {run['input_tokens']} input + {run['output_tokens']} output tokens, "
         f"cost {usd(cost_run)}"),
        (f"  all answers: {every['input_tokens']} input + {every['output_tokens']} output "
         f"tokens, cost {usd(cost_all)}"),
    ]
    if cost_all.get("usd") is None:
        lines.append(f"  {cost_all.get('note')}")
    if run.get("batch_requests"):
        lines.append(f"  batch API: {run['batch_requests']} of this run's answers, at the batch "
                     f"prices (${cost_run.get('usd_batch', 0):.4f} of the cost)")
    batch = summary.get("batch")
    if batch:
        lines.append(f"  batches: {len(batch['batches'])} ({', '.join(batch['batches'])}), "
                     f"{batch['failed_in_batch']} request(s) failed inside them, "
                     f"{batch['resubmitted']} sent again in a batch, "
                     f"{batch['resent_direct']} directly")
    return "\n".join(lines)
