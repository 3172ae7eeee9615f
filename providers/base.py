"""The one interface every provider implements, and the values that cross it.

A provider does exactly one thing: send one prompt with one set of generation settings and
return one `Completion`, or raise one of the three `ProviderError` kinds below. Retries, rate
limits, concurrency and caching live once, outside the providers (`providers.runner`,
`providers.cache`), so a new provider is a small file.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from harness.ground.errors import FeynTuneError
from providers import pricing

# Task defaults of the reference study: sampling at 0.8, at most 1024 new tokens.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_MAX_TOKENS = 1024
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class GenerationSettings:
    """What a provider needs to know about how to generate (part of the cache key)."""

    temperature: float = DEFAULT_TEMPERATURE
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    seed: int | None = None  # sent only where the API supports it
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise FeynTuneError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise FeynTuneError(f"max_gen_toks must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class Completion:
    """One answer. `refused` marks a completion the model or its filter declined to give."""

    text: str
    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    refused: bool = False
    batch: bool = False  # answered through a batch API (billed at its rates)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProviderError(Exception):
    """Base of the errors a provider raises; messages are already free of the API key."""


class TransientError(ProviderError):
    """Worth retrying: rate limit, server error, timeout, dropped connection, garbled reply."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FatalError(ProviderError):
    """Retrying cannot fix it and it concerns every request (bad key, unknown model)."""


class DocumentError(ProviderError):
    """Retrying cannot fix it but it concerns this prompt only (content refused, too long)."""


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Phrases of 400-class errors that concern one prompt only (all providers word them alike).
_DOCUMENT_MARKERS = (
    "content_filter", "content_policy", "content policy", "safety", "blocked",
    "context_length", "context length", "too long", "maximum context", "prompt is too long",
)


class Provider:
    """Base class. Subclasses set the class attributes and implement `make_client`,
    `complete` and `classify`; the constructor reads the key and builds the client once."""

    name: ClassVar[str] = ""  # set by @register_provider, the one place a name is written
    key_env: ClassVar[tuple[str, ...]] = ()  # environment variables tried in order
    key_required: ClassVar[bool] = True
    default_base_url: ClassVar[str | None] = None
    max_stop_sequences: ClassVar[int] = 4  # more are applied after the answer arrives
    # The provider's batch API (a providers.batch_api.BatchAPI subclass), None: it has none.
    batch_api_class: ClassVar[type | None] = None

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout: float = 120.0,
        api_key_env: str | None = None,
    ) -> None:
        if not model:
            raise FeynTuneError(f"provider {self.name!r} needs a model name (model=...)")
        self.model = str(model)
        self.base_url = base_url or self.default_base_url
        self.timeout = float(timeout)
        self._api_key = self._read_key(api_key_env)
        self.client = self.make_client(self._api_key)

    # -- to implement -------------------------------------------------------------------------
    def make_client(self, api_key: str | None) -> Any:
        """Build the SDK client with its own retries switched off (the runner owns them)."""
        raise NotImplementedError

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        """Send one request; raise the SDK's exceptions untouched (the runner calls classify)."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> ProviderError:
        """Turn an SDK exception into Transient/Fatal/DocumentError (message not yet scrubbed)."""
        return FatalError(f"{type(exc).__name__}: {exc}")

    # -- shared -------------------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        """What makes two answers interchangeable in the cache."""
        return {"provider": self.name, "model": self.model}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "base_url": self.base_url, "timeout": self.timeout}

    def error(self, exc: BaseException) -> ProviderError:
        """`classify`, with the key scrubbed from the message, for the runner."""
        if isinstance(exc, ProviderError):
            err = exc
        else:
            try:
                err = self.classify(exc)
            except Exception as inner:  # noqa: BLE001 - a classifier bug must not leak the original's key
                err = FatalError(f"{type(exc).__name__} (unclassified: {inner!r})")
        err.args = (self.scrub(str(err)),)
        return err

    def scrub(self, text: str) -> str:
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, REDACTED)
        return text

    def _read_key(self, api_key_env: str | None) -> str | None:
        names = (api_key_env,) if api_key_env else self.key_env
        for env in names:
            value = os.environ.get(env, "").strip()
            if value:
                return value
        if api_key_env or (self.key_required and names):
            raise FeynTuneError(
                f"no API key for provider {self.name!r}: set "
                + " or ".join(f"${n}" for n in names)
                + " in the environment (keys are read only from the environment; "
                "api_key_env=NAME in --model_args names another variable)"
            )
        return None

    def batch_api(self) -> Any:
        """This provider's batch API, or one clear line saying it has none."""
        if self.batch_api_class is None:
            raise FeynTuneError(
                f"provider {self.name!r} has no batch API: drop batch=true (batch mode "
                "covers openai, anthropic and gemini)"
            )
        return self.batch_api_class(self)

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"


def classify_http_status(
    status: int | None, message: str, headers: Mapping[str, str] | None, provider: Provider
) -> ProviderError:
    """Shared mapping of an HTTP error status to the three kinds."""
    text = f"HTTP {status}: {message}"
    if status in (408, 409, 425, 429) or (status is not None and status >= 500):
        return TransientError(text, retry_after=retry_after_seconds(headers), status=status)
    if status in (401, 403):
        where = " or ".join(f"${n}" for n in provider.key_env) or "the key"
        return FatalError(f"authentication failed for {provider.name} ({where}): {text}")
    if status == 404:
        return FatalError(
            f"{provider.name} does not know model {provider.model!r} (or the endpoint "
            f"{provider.base_url or 'default'} is wrong): {text}"
        )
    lowered = message.lower()
    if status in (400, 413, 422) and any(m in lowered for m in _DOCUMENT_MARKERS):
        return DocumentError(text)
    return FatalError(f"{provider.name} rejected the request: {text}")


@dataclass
class Usage:
    """Token and request counts, summed over completions."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # The part of the above answered through a batch API (billed at its rates).
    batch_requests: int = 0
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0

    def add(self, completion: Completion) -> None:
        self.requests += 1
        self.input_tokens += completion.input_tokens
        self.output_tokens += completion.output_tokens
        if completion.batch:
            self.batch_requests += 1
            self.batch_input_tokens += completion.input_tokens
            self.batch_output_tokens += completion.output_tokens

    def include(self, other: Usage) -> None:
        """Add another count to this one (a job run in several passes)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def cost(self, provider: str, model: str) -> dict[str, Any]:
        """What these answers cost at the price table's rates (batch ones at batch rates)."""
        return pricing.estimate(provider, model, self.input_tokens, self.output_tokens,
                                self.batch_input_tokens, self.batch_output_tokens)
