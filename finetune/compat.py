"""Keyword names resolved against the installed transformers, not the newest one.

pyproject promises `transformers>=5.0`, and a GPU image often carries an older 5.x than the
one the code was written on. Between 5.0 and the current releases two TrainingArguments
changed name: `gradient_checkpointing(_kwargs)` became `activation_checkpointing(_kwargs)`
(the old name stays as an alias for a while), and the boolean `group_by_length` became
`train_sampling_strategy`. The code states each run in the newest names; `for_installed`
translates them to what the installed dataclass has, so that both old and new releases run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.ground.errors import FeynTuneError

# newest name -> older name with the same meaning (value translated by _OLDER_VALUE)
_OLDER_NAME = {
    "activation_checkpointing": "gradient_checkpointing",
    "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs",
    "train_sampling_strategy": "group_by_length",
}


def _older_value(name: str, value: Any) -> Any:
    if name == "train_sampling_strategy":
        if value not in ("random", "group_by_length"):
            raise FeynTuneError(
                f"train_sampling_strategy {value!r} needs a newer transformers than the one installed")
        return value == "group_by_length"
    return value


def training_arguments_class():
    """The installed TrainingArguments (one place to look it up, so a test can stand in an
    older release's class)."""
    from transformers import TrainingArguments

    return TrainingArguments


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def for_installed(kwargs: dict[str, Any], cls=None) -> dict[str, Any]:
    """`kwargs` (newest TrainingArguments names) renamed to the fields `cls` has.

    A name the installed class lacks, with no older equivalent, is an error naming the
    installed version: passing it would crash in `__init__`, dropping it would change the run.
    """
    if cls is None:
        cls = training_arguments_class()
    names = field_names(cls)
    out = {}
    for key, value in kwargs.items():
        if key in names:
            out[key] = value
        elif _OLDER_NAME.get(key) in names:
            out[_OLDER_NAME[key]] = _older_value(key, value)
        else:
            import transformers

            raise FeynTuneError(
                f"the installed transformers {transformers.__version__} has no TrainingArguments "
                f"field {key!r}; upgrade transformers (pip install -U transformers)")
    return out


def enable_checkpointing(model, kwargs: dict | None) -> None:
    """Activation checkpointing on a transformers model, under whichever method name it has."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def disable_checkpointing(model) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
