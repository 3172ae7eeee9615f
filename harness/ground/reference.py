"""Where the reference study's file is, and the one fact of it that the task itself needs.

The reference study (studies/reference.yaml) is a study file like any other, read by
harness/study/spec.py. The benchmark task sits below the study room, yet with no documents given
it falls back on the study's published test split: that block is read here, as data.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.ground.errors import FeynTuneError

REFERENCE_STUDY = Path(__file__).resolve().parents[2] / "studies" / "reference.yaml"


def published_documents(path: Path = REFERENCE_STUDY) -> tuple[str, str]:
    """(hub dataset, split) of the reference study's test documents."""
    try:
        documents = yaml.safe_load(path.read_text(encoding="utf-8"))["documents"]
        return str(documents["hub"]), str(documents.get("split", "test"))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise FeynTuneError(f"{path}: cannot read documents.hub ({err})") from None
