"""DeepSeek through its OpenAI-compatible endpoint (https://api-docs.deepseek.com)."""

from __future__ import annotations

from providers.openai_provider import OpenAIProvider
from providers.registry import register_provider


@register_provider("deepseek")
class DeepSeekProvider(OpenAIProvider):
    key_env = ("DEEPSEEK_API_KEY",)
    default_base_url = "https://api.deepseek.com"
    max_tokens_field = "max_tokens"
    batch_api_class = None  # no batch API: batch=true is refused in one line
    supports_seed = False
    max_stop_sequences = 16
