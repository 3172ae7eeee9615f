"""Where FeynTune keeps its own files: models prepared offline and the provider cache."""

from __future__ import annotations

import os
from pathlib import Path


def feyntune_home() -> Path:
    """`$FEYNTUNE_HOME`, default `~/.cache/feyntune`."""
    return Path(os.environ.get("FEYNTUNE_HOME") or Path.home() / ".cache" / "feyntune").expanduser()


def models_dir() -> Path:
    return feyntune_home() / "models"
