"""Checks of the models a run will evaluate, made before any model is loaded or merged: each
problem is one line naming the model and what is wrong, instead of a traceback from lm-eval or
transformers minutes (or GPU hours) into the run.

Only the small files are read: a base model's config.json (the architecture transformers must
recognise) and an adapter's adapter_config.json; for a hub id they come from the hub or its cache.
"""

from __future__ import annotations

from harness.ground.errors import FeynTuneError, first_line


def check_base(base: str) -> None:
    """The base model's configuration loads and names an architecture transformers knows."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(base)
    except (OSError, ValueError, KeyError) as err:
        raise FeynTuneError(f"base model {base} cannot be loaded: {first_line(err)}") from None


def check_adapter(name: str, source: str) -> None:
    """The adapter's configuration loads as a PEFT adapter."""
    from peft import PeftConfig

    try:
        PeftConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FeynTuneError(f"adapter {name} ({source}) cannot be loaded: {first_line(err)}") \
            from None


def check_models(base: str, adapters: dict[str, str]) -> None:
    """The base and every adapter (study name -> folder or hub id), in that order."""
    check_base(base)
    for name, source in adapters.items():
        check_adapter(name, source)
