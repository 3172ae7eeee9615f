"""Providers by name. Built-ins are imported only when asked for, so running one provider
never needs the other SDKs. `register_provider` adds a class under a new name; a file
`providers/<name>.py` that registers itself is found by its name without further wiring."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TypeVar

from harness.errors import FeynTuneError
from providers.base import Provider

P = TypeVar("P", bound=type[Provider])

_BUILTIN = {
    "openai": "providers.openai_provider:OpenAIProvider",
    "anthropic": "providers.anthropic_provider:AnthropicProvider",
    "gemini": "providers.gemini:GeminiProvider",
    "deepseek": "providers.deepseek:DeepSeekProvider",
    "openai-compatible": "providers.openai_compatible:OpenAICompatibleProvider",
}
_REGISTERED: dict[str, type[Provider]] = {}


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def register_provider(name: str) -> Callable[[P], P]:
    """Class decorator: `@register_provider("mistral")` makes `provider=mistral` work."""

    def decorate(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise TypeError(f"{cls!r} is not a providers.base.Provider subclass")
        key = _normal(name)
        if not cls.name:
            cls.name = key
        _REGISTERED[key] = cls
        return cls

    return decorate


def provider_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_provider_class(name: str) -> type[Provider]:
    key = _normal(name)
    if key in _REGISTERED:
        return _REGISTERED[key]
    if key not in _BUILTIN and _discover(key) in _REGISTERED:
        return _REGISTERED[key]
    if key not in _BUILTIN:
        raise FeynTuneError(
            f"unknown provider {name!r}; known: {', '.join(provider_names())} "
            "(add one with providers.registry.register_provider, see providers/README.md)"
        )
    module, _, attr = _BUILTIN[key].partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        raise FeynTuneError(
            f"provider {key!r} needs its SDK: pip install 'feyntune[providers]' ({err})"
        ) from None
    _REGISTERED[key] = cls
    return cls


def _discover(key: str) -> str:
    """Import `providers.<key>` (dashes as underscores) so that its registration runs."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
        return key
    module = f"providers.{key.replace('-', '_')}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise FeynTuneError(f"provider {key!r} needs a missing package: {err}") from None
    return key


def create_provider(name: str, model: str, **options) -> Provider:
    return get_provider_class(name)(model, **options)
