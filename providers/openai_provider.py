"""OpenAI chat completions through the official `openai` SDK (also the base of DeepSeek and
any OpenAI-compatible server)."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import openai

from providers.base import (
    Completion,
    GenerationSettings,
    Provider,
    ProviderError,
    TransientError,
    classify_http_status,
)
from providers.registry import register_provider


@register_provider("openai")
class OpenAIProvider(Provider):
    key_env = ("OPENAI_API_KEY",)
    default_base_url = None  # the SDK's own (https://api.openai.com/v1)
    # Newer OpenAI models accept only max_completion_tokens; other servers know max_tokens.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    supports_seed: ClassVar[bool] = True

    def make_client(self, api_key: str | None) -> Any:
        return openai.OpenAI(
            api_key=api_key or "no-key",  # local servers ignore it; the SDK insists on one
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,  # the runner retries, with rate limits and a time bound
        )

    def request_body(self, instruction: str, prompt: str, settings: GenerationSettings) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": instruction},
                {"role": "user", "content": prompt},
            ],
            "temperature": settings.temperature,
            self.max_tokens_field: settings.max_tokens,
        }
        if settings.stop:
            body["stop"] = list(settings.stop[: self.max_stop_sequences])
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        if settings.seed is not None and self.supports_seed:
            body["seed"] = settings.seed
        return body

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        start = time.perf_counter()
        reply = self.client.chat.completions.create(
            **self.request_body(instruction, prompt, settings)
        )
        latency = time.perf_counter() - start
        try:
            choice = reply.choices[0]
            text = choice.message.content or ""
            finish = str(choice.finish_reason or "")
        except (AttributeError, IndexError, TypeError) as err:
            raise TransientError(f"malformed reply from {self.name}: no choices ({err})") from None
        usage = getattr(reply, "usage", None)
        return Completion(
            text=text,
            finish_reason=finish,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=latency,
            refused=finish == "content_filter" or bool(getattr(choice.message, "refusal", None)),
        )

    def classify(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, openai.APIStatusError):
            return classify_http_status(
                exc.status_code, _message(exc), exc.response.headers, self
            )
        if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            return TransientError(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError)):
            return TransientError(f"malformed reply from {self.name}: {exc}")
        return super().classify(exc)


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))
