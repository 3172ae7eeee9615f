"""Send every item to every judge through the provider layer, check each answer, and ask again
(with the reason) when an answer cannot be used.

Retries of the transport (429, 5xx, timeouts) are the runner's; this module retries only
answers that arrived but break the rubric. Each re-ask is a different request text, so the cache
keeps every answer and a re-run replays the same sequence without sending anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.ground.errors import FeynTuneError
from harness.judge.items import Item
from harness.judge.rubric import CURRENT, correction_text, parse_answer, request_text
from providers.base import GenerationSettings, Usage
from providers.batch import BATCH_ARGS, BatchOptions, send
from providers.budget import BUDGET_ARGS, Budget
from providers.cache import CompletionCache
from providers.registry import PROVIDER_ARGS, create_provider, provider_key
from providers.runner import LIMIT_ARGS, Request, RunLimits, summary_figures

# The --judge options besides the provider's constructor's: limits, batch route, budget.
RUN_ARGS = {**{k: v[1] for k, v in LIMIT_ARGS.items()}, **{k: v[1] for k, v in BATCH_ARGS.items()},
            **BUDGET_ARGS}

PROVIDER_ERROR = "provider error"
# Scores are short JSON; reasoning models need more room (--max-tokens).
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class JudgeSpec:
    provider: str
    model: str
    options: dict = field(default_factory=dict)   # provider constructor options
    limits: RunLimits = field(default_factory=RunLimits)
    batch: BatchOptions = field(default_factory=BatchOptions)
    max_cost: float | None = None

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"


def parse_judge(text: str) -> JudgeSpec:
    """`provider:model[,key=value,...]`, the keys being the provider model_args of
    `feyntune eval --model provider` (base_url, rpm, num_concurrent, ...)."""
    head, *pairs = [part.strip() for part in str(text).split(",")]
    provider, sep, model = head.partition(":")
    if not sep or not provider.strip() or not model.strip():
        raise FeynTuneError(f"--judge {text!r}: expected PROVIDER:MODEL[,key=value...], "
                            "e.g. anthropic:claude-sonnet-4-5,rpm=50")
    options, run_args = {}, {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or (key not in PROVIDER_ARGS and key not in RUN_ARGS):
            known = ", ".join([*PROVIDER_ARGS, *RUN_ARGS])
            raise FeynTuneError(f"--judge {text!r}: unknown option {pair!r} (known: {known})")
        try:
            if key in PROVIDER_ARGS:
                options[key] = PROVIDER_ARGS[key](value)
            else:
                RUN_ARGS[key](value)  # the type check, here, to name the option
                run_args[key] = value
        except ValueError:
            raise FeynTuneError(f"--judge {text!r}: {key}={value!r} is not a "
                                f"{'number' if key != 'batch' else 'true or false'}") from None
    # The registry's spelling: prices, the cache and the judge's name all key on it.
    return JudgeSpec(provider_key(provider), model.strip(), options,
                     RunLimits.from_args(run_args), BatchOptions.from_args(run_args),
                     Budget.from_args(run_args).max_cost)


@dataclass
class JudgeResult:
    spec: JudgeSpec
    scores: dict[int, dict[str, int]]      # item index -> scores
    failed: dict[int, str]                 # item index -> why no usable answer
    answers: int = 0                       # answers received, re-asks included
    reasked: int = 0                       # items asked again after an unusable answer
    refused: int = 0                       # answers the model declined to give
    sent: int = 0                          # requests sent in this run (the rest were cached)
    retries: int = 0                       # the runner's transport retries in this run
    wall_s: float = 0.0
    usage_run: Usage = field(default_factory=Usage)
    usage_all: Usage = field(default_factory=Usage)

    def cost(self, usage: Usage) -> dict:
        return usage.cost(self.spec.provider, self.spec.model)

    def summary(self) -> dict:
        """The runner's summary figures over every pass, for its format_summary."""
        return summary_figures(
            self.spec.provider, self.spec.model, requests=self.usage_all.requests,
            sent=self.sent, from_cache=self.usage_all.requests - self.sent, retries=self.retries,
            document_errors=sum(r.startswith(PROVIDER_ERROR) for r in self.failed.values()),
            refused=self.refused, wall_s=self.wall_s, usage_run=self.usage_run,
            usage_all=self.usage_all)


def rate(items: list[Item], spec: JudgeSpec, settings: GenerationSettings,
         answer_retries: int = 2, cache: CompletionCache | None = None,
         progress: bool = True) -> JudgeResult:
    """Every item's scores from one judge, or the reason it has none."""
    if answer_retries < 0:
        raise FeynTuneError(f"--answer-retries must be >= 0, got {answer_retries}")
    provider = create_provider(spec.provider, spec.model, **spec.options)
    if spec.batch.batch:
        provider.batch_api()  # a provider without a batch API says so before anything is sent
    budget = Budget(spec.max_cost)  # over every pass: re-asks spend from the same cap
    cache = cache or CompletionCache()
    result = JudgeResult(spec, {}, {})
    originals = [request_text(i.prompt, i.truth, i.completion) for i in items]
    texts = list(originals)
    pending = list(range(len(items)))
    for attempt in range(answer_retries + 1):
        if not pending:
            break
        # The label reaches logs and error messages only, never the provider.
        requests = [Request(texts[i], settings, attempt, f"judge item {i + 1}") for i in pending]
        report = send(provider, requests, batch=spec.batch, instruction=CURRENT,
                      limits=spec.limits, cache=cache, progress=progress, budget=budget)
        result.sent += report.sent
        result.retries += report.retries
        result.wall_s += report.wall_s
        result.usage_run.include(report.usage_run)
        result.usage_all.include(report.usage_all)
        again = []
        for index, outcome in zip(pending, report.outcomes):
            if outcome.completion is None:  # refused for this prompt at the provider: final
                result.failed[index] = f"{PROVIDER_ERROR}: {outcome.error}"
                continue
            result.answers += 1
            answer = outcome.completion.text
            try:
                if outcome.completion.refused:
                    result.refused += 1
                    raise ValueError("the model declined to answer")
                result.scores[index] = parse_answer(answer)
            except ValueError as err:
                if attempt < answer_retries:
                    texts[index] = correction_text(originals[index], answer, str(err))
                    again.append(index)
                else:
                    result.failed[index] = (f"no usable answer in {attempt + 1} "
                                            f"attempt(s); last: {err}")
        result.reasked += len(again)
        pending = again
    return result
