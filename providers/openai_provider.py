"""OpenAI chat completions through the official `openai` SDK (also the base of DeepSeek and
any OpenAI-compatible server)."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import openai
from openai.types.chat import ChatCompletion

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

CHAT_ENDPOINT = "/v1/chat/completions"
_ENDED = {"completed", "failed", "expired", "cancelled"}


class OpenAIBatch(BatchAPI):
    """The Batch API: a JSON-lines file uploaded with purpose "batch", a batch over it with a
    24 h window, results in an output file and failures in an error file, each line carrying
    the request's custom_id. Limits: 50,000 requests and 200 MB per input file."""

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def entry(self, custom_id, instruction, prompt, settings):
        return {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT,
                "body": self.provider.request_body(instruction, prompt, settings)}

    def submit(self, entries):
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        upload = self.client.files.create(file=("feyntune-batch.jsonl", lines.encode("utf-8")),
                                          purpose="batch")
        batch = self.client.batches.create(input_file_id=upload.id, endpoint=CHAT_ENDPOINT,
                                           completion_window="24h")
        return batch.id

    def state(self, batch_id):
        batch = self.client.batches.retrieve(batch_id)
        counts = batch.request_counts
        return BatchState(str(batch.status), batch.status in _ENDED,
                          int(getattr(counts, "completed", 0) or 0),
                          int(getattr(counts, "failed", 0) or 0))

    def results(self, batch_id):
        batch = self.client.batches.retrieve(batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self.client.files.content(file_id).text.splitlines():
                if line.strip():
                    yield self._result(json.loads(line))

    def _result(self, row: dict):
        key = str(row.get("custom_id"))
        response = row.get("response") or {}
        status = response.get("status_code")
        body = response.get("body") or {}
        if status == 200 and not row.get("error"):
            try:
                return key, self.provider.completion_of(ChatCompletion.model_validate(body),
                                                        batch=True)
            except (ProviderError, ValueError) as err:
                return key, TransientError(f"malformed answer in the batch: {err}")
        error = row.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = str(error.get("message") or error.get("code") or "failed in the batch")
        if status is None:  # not sent: expired, cancelled, or the batch failed
            return key, TransientError(f"{error.get('code') or 'not run'}: {message}")
        return key, request_error(self.provider, int(status), message)


@register_provider("openai")
class OpenAIProvider(Provider):
    key_env = ("OPENAI_API_KEY",)
    default_base_url = None  # the SDK's own (https://api.openai.com/v1)
    # Newer OpenAI models accept only max_completion_tokens; other servers know max_tokens.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    supports_seed: ClassVar[bool] = True
    batch_api_class = OpenAIBatch

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
        return self.completion_of(reply, time.perf_counter() - start)

    def completion_of(self, reply: Any, latency: float = 0.0, batch: bool = False) -> Completion:
        """A chat.completion object (the SDK's, or one from a batch's output file)."""
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
            batch=batch,
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
