"""lm-eval glue: `--model provider --model_args provider=anthropic,model=claude-sonnet-4-5`.

Chat models get the versioned instruction as the system message and the task's prompt as the
user message (no --apply_chat_template). Everything else -- cache, concurrency, rate limits,
retries -- is `providers.runner`. The instruction, the settings sent, usage and a cost estimate
reach results_*.json under `config.provider_run` (lm-eval merges `get_model_info()` there).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict
from typing import Any

import lm_eval.models  # noqa: F401  - fills the registry first, or the built-in models vanish
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness.ground.errors import FeynTuneError
from providers.base import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, GenerationSettings
from providers.batch import BATCH_ARGS, BatchOptions, send
from providers.budget import BUDGET_ARGS, Budget
from providers.cache import CompletionCache
from providers.instruction import CURRENT, strip_repeated_prompt
from providers.registry import PROVIDER_ARGS, create_provider
from providers.runner import LIMIT_ARGS, Request, RunLimits, format_summary

# lm-eval hands every model these; API models have no use for them.
_LM_EVAL_EXTRAS = {"batch_size", "max_batch_size", "device"}
_GEN_KWARGS = {"until", "max_gen_toks", "temperature", "do_sample", "top_p", "seed"}


def settings_from_gen_kwargs(gen_kwargs: dict[str, Any]) -> GenerationSettings:
    """lm-eval generation kwargs -> provider settings; task defaults where the task is silent."""
    unknown = set(gen_kwargs) - _GEN_KWARGS
    if unknown:
        raise FeynTuneError(
            f"generation kwargs {sorted(unknown)} are not supported for provider models "
            f"(supported: {sorted(_GEN_KWARGS)})"
        )
    until = gen_kwargs.get("until") or []
    if isinstance(until, str):
        until = [until]
    temperature = float(gen_kwargs.get("temperature", DEFAULT_TEMPERATURE))
    if gen_kwargs.get("do_sample") is False:
        temperature = 0.0  # lm-eval's greedy request
    top_p = gen_kwargs.get("top_p")
    seed = gen_kwargs.get("seed")
    return GenerationSettings(
        temperature=temperature,
        max_tokens=int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_TOKENS)),
        stop=tuple(str(s) for s in until),
        seed=None if seed is None else int(seed),
        top_p=None if top_p is None else float(top_p),
    )


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Stops the API could not take (too many, whitespace-only) still end the answer."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


@register_model("provider")
class ProviderLM(LM):
    """A commercial (or any HTTP) chat model as an lm-eval generation model."""

    def __init__(
        self,
        provider: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        api_key_env: str | None = None,
        **extra: Any,  # limits, batch and budget options, and lm-eval's own arguments
    ) -> None:
        super().__init__()
        options = [*PROVIDER_ARGS, *LIMIT_ARGS, *BATCH_ARGS, *BUDGET_ARGS]
        unknown = set(extra) - set(LIMIT_ARGS) - set(BATCH_ARGS) - set(BUDGET_ARGS) \
            - _LM_EVAL_EXTRAS
        if unknown:
            raise FeynTuneError(
                f"unknown model_args for --model provider: {sorted(unknown)} (known: provider, "
                f"model, {', '.join(options)})"
            )
        if not provider or not model:
            raise FeynTuneError(
                "--model provider needs --model_args provider=NAME,model=MODEL "
                "(e.g. provider=anthropic,model=claude-sonnet-4-5)"
            )
        self.limits = RunLimits.from_args(extra)
        self.batch = BatchOptions.from_args(extra)
        self.budget = Budget.from_args(extra)  # over every generate_until call of this model
        # Builds the SDK client and reads the key: a missing key fails here, before any request.
        self.provider = create_provider(
            str(provider), str(model), base_url=base_url or None, timeout=float(timeout),
            api_key_env=api_key_env or None,
        )
        if self.batch.batch:
            self.provider.batch_api()  # a provider without a batch API says so now
        self.instruction = CURRENT
        self.cache = CompletionCache()
        self._runs: list[dict[str, Any]] = []
        self._document_errors: list[dict[str, str]] = []
        self._settings: list[dict[str, Any]] = []

    # -- lm-eval API -----------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        jobs: list[Request] = []
        seen: Counter = Counter()
        for inst in requests:
            context, gen_kwargs = inst.args[0], dict(inst.args[1] or {})
            settings = settings_from_gen_kwargs(gen_kwargs)
            # lm-eval repeats a request by cloning it; the k-th copy is the k-th sample.
            index = seen[(context, settings)]
            seen[(context, settings)] += 1
            label = f"{getattr(inst, 'task_name', '')} doc {getattr(inst, 'doc_id', '?')}"
            jobs.append(Request(context, settings, index, label.strip()))
            if settings.as_dict() not in self._settings:
                self._settings.append(settings.as_dict())

        report = send(
            self.provider, jobs, batch=self.batch, instruction=self.instruction,
            limits=self.limits, cache=self.cache, progress=not disable_tqdm, budget=self.budget,
        )
        texts = []
        for inst, job, outcome in zip(requests, jobs, report.outcomes):
            text = outcome.completion.text if outcome.completion else ""
            text = cut_at_stop(strip_repeated_prompt(job.prompt, text), job.settings.stop)
            texts.append(text)
            self.cache_hook.add_partial("generate_until", inst.args, text)
        summary = report.summary()
        self._runs.append(summary)
        errors = report.document_errors([j.label for j in jobs])
        self._document_errors.extend(errors)
        title = f"{self.provider.name}:{self.provider.model}"
        print(format_summary(summary, title), file=sys.stderr)
        for err in errors:
            print(f"  document error, scored as an empty completion: {err['request']}: "
                  f"{err['error']}", file=sys.stderr)
        return texts

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise self._no_logprobs()

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise self._no_logprobs()

    def _no_logprobs(self) -> FeynTuneError:
        return FeynTuneError(
            f"{self.provider.name} models return no log-likelihoods: API models run only "
            "--tasks hepth_completion_gen (not hepth_completion or hepth_completion_ppl)"
        )

    @property
    def tokenizer_name(self) -> str:
        return f"provider:{self.provider.name}:{self.provider.model}"

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        raise FeynTuneError(
            "drop --apply_chat_template: provider models build their chat messages themselves "
            "(the versioned instruction as system message, the prompt as user message)"
        )

    def get_model_info(self) -> dict[str, Any]:
        return {
            "provider_run": {
                **self.provider.describe(),
                "instruction": self.instruction.as_dict(),
                "settings": self._settings,
                "limits": asdict(self.limits),
                "batch": asdict(self.batch),
                "max_cost": self.budget.max_cost,
                "runs": self._runs,
                "document_errors": self._document_errors,
            }
        }
