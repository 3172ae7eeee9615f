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
from providers.batch_api import BatchAPI, BatchState, request_error
from providers.registry import register_provider

# Error types of a request inside a batch that concern that request only.
_DOCUMENT_ERROR_TYPES = {"invalid_request_error"}


class AnthropicBatch(BatchAPI):
    """Message Batches: the requests posted inline as {custom_id, params}, polled until
    processing_status is "ended", results as a JSON-lines stream of {custom_id, result} with
    result.type succeeded / errored / canceled / expired. Limits: 100,000 requests or 256 MB
    per batch."""

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def entry(self, custom_id, instruction, prompt, settings):
        return {"custom_id": custom_id,
                "params": self.provider.request_body(instruction, prompt, settings)}

    def submit(self, entries):
        return self.client.messages.batches.create(requests=entries).id

    def state(self, batch_id):
        batch = self.client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        failed = sum(int(getattr(counts, n, 0) or 0) for n in ("errored", "canceled", "expired"))
        return BatchState(str(batch.processing_status), batch.processing_status == "ended",
                          int(getattr(counts, "succeeded", 0) or 0), failed)

    def results(self, batch_id):
        for row in self.client.messages.batches.results(batch_id):
            result = row.result
            kind = getattr(result, "type", "")
            if kind == "succeeded":
                yield row.custom_id, self.provider.completion_of(result.message, batch=True)
            elif kind == "errored":
                inner = getattr(getattr(result, "error", None), "error", None)
                kind_of = str(getattr(inner, "type", "") or "")
                message = f"{kind_of}: {getattr(inner, 'message', '') or 'errored'}"
                status = 400 if kind_of in _DOCUMENT_ERROR_TYPES else 500
                yield row.custom_id, request_error(self.provider, status, message)
            else:  # canceled, expired: never processed
                yield row.custom_id, TransientError(f"{kind or 'unknown'} in the batch")


@register_provider("anthropic")
class AnthropicProvider(Provider):
    key_env = ("ANTHROPIC_API_KEY",)
    max_stop_sequences = 16
    batch_api_class = AnthropicBatch

    def make_client(self, api_key: str | None) -> Any:
        return anthropic.Anthropic(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sampling": "model default (the API takes no temperature)"}

    def request_body(self, instruction: str, prompt: str, settings: GenerationSettings) -> dict:
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
        return body

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        start = time.perf_counter()
        reply = self.client.messages.create(**self.request_body(instruction, prompt, settings))
        return self.completion_of(reply, time.perf_counter() - start)

    def completion_of(self, reply: Any, latency: float = 0.0, batch: bool = False) -> Completion:
        """A Message (the SDK's, or one from a batch's results)."""
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
            batch=batch,
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
