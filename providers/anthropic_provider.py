"""Anthropic messages through the official `anthropic` SDK.

Sampling is the model's own: SDK 2.x has no temperature/top_p arguments and the API version it
sends (2026-10-21) answers 400 to any of them, so the task's temperature cannot be applied;
`describe()` says so in the stored results.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic

from providers.base import (
    Completion,
    GenerationSettings,
    Provider,
    ProviderError,
    TransientError,
    classify_http_status,
)
from providers.registry import register_provider


@register_provider("anthropic")
class AnthropicProvider(Provider):
    key_env = ("ANTHROPIC_API_KEY",)
    max_stop_sequences = 16

    def make_client(self, api_key: str | None) -> Any:
        return anthropic.Anthropic(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sampling": "model default (the API takes no temperature)"}

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "system": instruction,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": settings.max_tokens,
        }
        # The API rejects whitespace-only stop sequences; those are applied to the answer later.
        stops = [s for s in settings.stop if s.strip()][: self.max_stop_sequences]
        if stops:
            body["stop_sequences"] = stops
        start = time.perf_counter()
        reply = self.client.messages.create(**body)
        latency = time.perf_counter() - start
        try:
            text = "".join(b.text for b in reply.content if getattr(b, "type", "") == "text")
        except (AttributeError, TypeError) as err:
            raise TransientError(f"malformed reply from anthropic: {err}") from None
        finish = str(getattr(reply, "stop_reason", "") or "")
        usage = getattr(reply, "usage", None)
        return Completion(
            text=text,
            finish_reason=finish,
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            latency_s=latency,
            refused=finish == "refusal",
        )

    def classify(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, anthropic.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            inner = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
            message = str(inner.get("message") or exc.message)
            return classify_http_status(exc.status_code, message, exc.response.headers, self)
        if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
            return TransientError(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (anthropic.APIResponseValidationError, json.JSONDecodeError)):
            return TransientError(f"malformed reply from anthropic: {exc}")
        return super().classify(exc)
