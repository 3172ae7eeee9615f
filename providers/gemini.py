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
from providers.registry import register_provider

try:  # newer google-genai sends through httpx2, a fork of httpx with its own exceptions
    import httpx2

    _NETWORK_ERRORS: tuple[type[BaseException], ...] = (
        httpx.TimeoutException, httpx.TransportError, httpx2.TimeoutException,
        httpx2.TransportError)
except ImportError:
    _NETWORK_ERRORS = (httpx.TimeoutException, httpx.TransportError)

_REFUSED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


@register_provider("gemini")
class GeminiProvider(Provider):
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    max_stop_sequences = 5

    def make_client(self, api_key: str | None) -> Any:
        options = types.HttpOptions(
            base_url=self.base_url,
            timeout=int(self.timeout * 1000),  # the SDK counts milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),  # the runner retries
        )
        # vertexai=False: a GOOGLE_GENAI_USE_VERTEXAI in the environment must not reroute us.
        return genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def complete(self, instruction: str, prompt: str, settings: GenerationSettings) -> Completion:
        config = types.GenerateContentConfig(
            system_instruction=instruction,
            temperature=settings.temperature,
            max_output_tokens=settings.max_tokens,
            stop_sequences=list(settings.stop[: self.max_stop_sequences]) or None,
            top_p=settings.top_p,
            seed=settings.seed,
        )
        start = time.perf_counter()
        reply = self.client.models.generate_content(
            model=self.model, contents=prompt, config=config
        )
        latency = time.perf_counter() - start
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
