"""Any server speaking OpenAI chat completions at a `base_url`: vLLM, llama.cpp, hosted APIs.

No key is needed unless `api_key_env=NAME` says which variable holds one; the base URL is
part of the cache identity, because the same model name on two servers is two models.
"""

from __future__ import annotations

from harness.ground.errors import FeynTuneError
from providers.openai_provider import OpenAIProvider
from providers.registry import register_provider


@register_provider("openai-compatible")
class OpenAICompatibleProvider(OpenAIProvider):
    key_env = ()
    key_required = False
    max_tokens_field = "max_tokens"
    batch_api_class = None  # no batch API: batch=true is refused in one line

    def make_client(self, api_key):
        if not self.base_url:
            raise FeynTuneError(
                "provider 'openai-compatible' needs base_url=... (e.g. http://localhost:8000/v1)"
            )
        return super().make_client(api_key)

    def identity(self) -> dict[str, str]:
        return {**super().identity(), "base_url": str(self.base_url).rstrip("/")}
