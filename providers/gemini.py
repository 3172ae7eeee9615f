"""Google Gemini (generateContent) through the official `google-genai` SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from providers.base import (
    Completion,
    DocumentError,
    GenerationSettings,
    Provider,
    ProviderError,
    TransientError,
    classify_http_status,
)
from providers.batch_api import BatchAPI, BatchState, request_error
from providers.registry import register_provider

try:  # newer google-genai sends through httpx2, a fork of httpx with its own exceptions
    import httpx2

    _NETWORK_ERRORS: tuple[type[BaseException], ...] = (
        httpx.TimeoutException, httpx.TransportError, httpx2.TimeoutException,
        httpx2.TransportError)
except ImportError:
    _NETWORK_ERRORS = (httpx.TimeoutException, httpx.TransportError)

_REFUSED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


_ENDED_JOBS = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
               "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
# google.rpc codes of a failed request that concern that request only (INVALID_ARGUMENT).
_RPC_STATUS = {3: 400, 8: 429, 4: 504, 13: 500, 14: 503}


class GeminiBatch(BatchAPI):
    """Gemini API batch mode: requests inline (each GenerateContentRequest with a metadata key),
    a job polled until its state ends, responses inline in the same order, each with its key.
    Limit: 20 MB for an inline batch (larger runs are split into several jobs)."""

    max_requests = 100_000
    max_bytes = 20 * 1000 * 1000

    def entry(self, custom_id, instruction, prompt, settings):
        config = self.provider.config(instruction, settings)
        return {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "metadata": {"key": custom_id},
                "config": config.model_dump(exclude_none=True, mode="json")}

    def submit(self, entries):
        job = self.client.batches.create(model=self.provider.model, src=entries)
        return str(job.name)

    def state(self, batch_id):
        job = self.client.batches.get(name=batch_id)
        state = getattr(job.state, "name", None) or str(job.state)
        stats = job.completion_stats
        return BatchState(state, state in _ENDED_JOBS,
                          int(getattr(stats, "successful_count", 0) or 0),
                          int(getattr(stats, "failed_count", 0) or 0))

    def results(self, batch_id):
        job = self.client.batches.get(name=batch_id)
        responses = (job.dest.inlined_responses if job.dest else None) or []
        for item in responses:
            key = str((item.metadata or {}).get("key", ""))
            if item.error is not None:
                error = item.error
                code = getattr(error, "code", None)
                message = str(getattr(error, "message", None) or error)
                yield key, request_error(self.provider, _RPC_STATUS.get(code, code or 500),
                                         message)
                continue
            try:
                yield key, self.provider.completion_of(item.response, batch=True)
            except ProviderError as err:
                yield key, err


@register_provider("gemini")
class GeminiProvider(Provider):
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    max_stop_sequences = 5
    batch_api_class = GeminiBatch

    def make_client(self, api_key: str | None) -> Any:
        options = types.HttpOptions(
            base_url=self.base_url,
            timeout=int(self.timeout * 1000),  # the SDK counts milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),  # the runner retries
        )
        # vertexai=False: a GOOGLE_GENAI_USE_VERTEXAI in the environment must not reroute us.
        return genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def config(self, instruction: str, settings: GenerationSettings) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=instruction,
            temperature=settings.temperature,
            max_output_tokens=settings.max_tokens,
            stop_sequences=list(settings.stop[: self.max_stop_sequences]) or None,
            top_p=settings.top_p,
            seed=settings.seed,
        )

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        start = time.perf_counter()
        reply = self.client.models.generate_content(
            model=self.model, contents=prompt, config=self.config(instruction, settings)
        )
        return self.completion_of(reply, time.perf_counter() - start)

    def completion_of(self, reply: Any, latency: float = 0.0, batch: bool = False) -> Completion:
        """A GenerateContentResponse (the SDK's, or one of a batch job's responses)."""
        usage = reply.usage_metadata
        input_tokens = int(getattr(usage, "prompt_token_count", 0) or 0)
        # Thinking tokens are billed as output.
        output_tokens = int(getattr(usage, "candidates_token_count", 0) or 0) + int(
            getattr(usage, "thoughts_token_count", 0) or 0
        )
        feedback = reply.prompt_feedback
        if not reply.candidates:
            if feedback is not None and feedback.block_reason:
                raise DocumentError(f"gemini blocked the prompt: {feedback.block_reason}")
            raise TransientError("malformed reply from gemini: no candidates")
        candidate = reply.candidates[0]
        finish = getattr(candidate.finish_reason, "name", None) or str(candidate.finish_reason or "")
        parts = (candidate.content.parts if candidate.content else None) or []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        return Completion(
            text=text,
            finish_reason=finish,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency,
            refused=finish in _REFUSED,
            batch=batch,
        )

    def classify(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, genai_errors.APIError):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            err = classify_http_status(exc.code, str(exc.message or exc), headers, self)
            if isinstance(err, TransientError) and err.retry_after is None:
                err.retry_after = _retry_delay(exc.details)
            return err
        if isinstance(exc, _NETWORK_ERRORS):
            return TransientError(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (json.JSONDecodeError, genai_errors.UnknownApiResponseError)):
            return TransientError(f"malformed reply from gemini: {exc}")
        return super().classify(exc)


def _retry_delay(details: Any) -> float | None:
    """Gemini puts its back-off hint in the error body (google.rpc.RetryInfo "17s")."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None
