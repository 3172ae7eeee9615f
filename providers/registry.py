"""Providers by name, through one path: the `@register_provider("name")` class decorator, which
every provider file applies, the built-ins included.

A provider file is imported only when its provider is asked for, so running one provider never
needs the other SDKs. To know which file that is without importing any, the registry reads the
decorators in the source of the `providers` package (its folders, in `providers.__path__`);
a class registered by code elsewhere only has to be imported before it is used.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.ground.errors import FeynTuneError
from providers.base import Provider

P = TypeVar("P", bound=type[Provider])

_REGISTERED: dict[str, type[Provider]] = {}
_DECORATOR = "register_provider"


def provider_key(name: str) -> str:
    """The form a provider name is stored under: `openai_compatible` is `openai-compatible`."""
    return str(name).strip().lower().replace("_", "-")


def register_provider(name: str) -> Callable[[P], P]:
    """Class decorator: `@register_provider("mistral")` makes `provider=mistral` work and sets
    the class's `name`, so the name is written once, here."""
    key = provider_key(name)
    if not key:
        raise TypeError("register_provider needs a non-empty name")

    def decorate(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise TypeError(f"{cls!r} is not a providers.base.Provider subclass")
        own = cls.__dict__.get("name")
        if own and provider_key(own) != key:
            raise TypeError(f"{_where(cls)} sets name = {own!r} but registers as {key!r}")
        known = _REGISTERED.get(key)
        # Re-importing a module (a reload, a test) registers the same class again: allowed.
        if known is not None and _where(known) != _where(cls):
            raise FeynTuneError(
                f"provider name {key!r} is registered twice: by {_where(known)} and {_where(cls)}"
            )
        cls.name = key
        _REGISTERED[key] = cls
        return cls

    return decorate


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def provider_names() -> list[str]:
    return sorted(set(_REGISTERED) | set(_provider_files()[0]))


def get_provider_class(name: str) -> type[Provider]:
    key = provider_key(name)
    files, unreadable = _provider_files()
    if len(files.get(key, ())) > 1:
        raise FeynTuneError(
            f"provider name {key!r} is registered by several files: {', '.join(files[key])}"
        )
    if key in _REGISTERED:
        return _REGISTERED[key]
    if key not in files:
        known = ", ".join(sorted(set(_REGISTERED) | set(files)))
        skipped = f"; unreadable provider files: {', '.join(unreadable)}" if unreadable else ""
        raise FeynTuneError(
            f"unknown provider {name!r}; known: {known} (add one with "
            f"@providers.registry.register_provider, see providers/README.md){skipped}"
        )
    module = f"providers.{Path(files[key][0]).stem}"
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise FeynTuneError(
            f"provider {key!r} needs a missing package ({err}); the built-in providers' SDKs "
            "come with: pip install 'feyntune[providers]'"
        ) from None
    if key not in _REGISTERED:
        raise FeynTuneError(f"{files[key][0]} was imported but registered no provider {key!r}")
    return _REGISTERED[key]


# The model_args of a provider run that go to the provider's constructor -> type.
PROVIDER_ARGS = {"base_url": str, "api_key_env": str, "timeout": float}


def create_provider(name: str, model: str, **options) -> Provider:
    return get_provider_class(name)(model, **options)


def _provider_files() -> tuple[dict[str, list[str]], list[str]]:
    """Provider name -> the package file(s) whose `@register_provider("name")` decorates a
    class, read without importing them; and the files that could not be parsed."""
    package = sys.modules[__package__]
    found: dict[str, list[str]] = {}
    unreadable: list[str] = []
    seen: set[str] = set()
    for folder in package.__path__:
        for path in sorted(Path(folder).glob("*.py")):
            # The first folder holding a module name wins, as for the import itself.
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                names = _registered_names(path)
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                unreadable.append(str(path))
                continue
            for key in names:
                found.setdefault(key, []).append(str(path))
    return found, unreadable


def _registered_names(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    if _DECORATOR not in source:
        return []
    names = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and _called_name(deco.func) == _DECORATOR):
                continue
            given = [*deco.args[:1], *(k.value for k in deco.keywords if k.arg == "name")]
            if given and isinstance(given[0], ast.Constant) and isinstance(given[0].value, str):
                names.append(provider_key(given[0].value))
    return names


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""
