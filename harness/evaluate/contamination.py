"""Whether a run's documents may be in the evaluated model's training data.

After `feyntune eval`, the documents of the samples it wrote are dated (harness/ground/freshness.py:
the first version of each) and compared with the model's training cut-off, read from
harness/evaluate/cutoffs.yaml; documents first versioned on or before it are counted in a warning.

Model cut-offs are months ("December 2023" = data up to the end of that month), so a cut-off
`YYYY-MM` stands for the last day of that month.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.ground.errors import FeynTuneError
from harness.ground.freshness import (
    VERDICTS,
    FirstVersion,
    FreshnessTally,
    first_version,
    from_text,
    parse_cut,
)
from harness.runs.identity import model_name, parse_model_args
from harness.runs.lmeval_outputs import iter_samples

CUTOFFS_FILE = Path(__file__).with_name("cutoffs.yaml")


@dataclass(frozen=True)
class ModelCutoff:
    name: str
    patterns: tuple[str, ...]
    cutoff: dt.date          # last day of the month whose data may be in training
    basis: str               # "documented" or "release" (no published cut-off: release month)
    source: str
    note: str = ""

    @property
    def month(self) -> str:
        return self.cutoff.strftime("%Y-%m")


def load_cutoffs(path: str | os.PathLike | None = None) -> list[ModelCutoff]:
    path = Path(path) if path else CUTOFFS_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise FeynTuneError(f"cannot read model cut-offs {path}: {err}") from err
    entries = []
    for name, spec in ((raw or {}).get("models") or {}).items():
        try:
            patterns = spec["match"]
            patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
            entries.append(ModelCutoff(
                name=str(name), patterns=patterns,
                cutoff=parse_cut(str(spec["cutoff"]), f"{path}: {name} cutoff"),
                basis=str(spec.get("basis", "documented")), source=str(spec.get("source", "")),
                note=str(spec.get("note", ""))))
        except (KeyError, TypeError) as err:
            raise FeynTuneError(f"{path}: model {name} needs `match` and `cutoff` ({err!r})") from err
    return entries


def cutoff_for(model: str | None, cutoffs: list[ModelCutoff] | None = None) -> ModelCutoff | None:
    """The first entry whose pattern matches a model name (case-insensitive shell patterns,
    also tried on the name's last path component so local folders named like the hub repo
    match)."""
    if not model:
        return None
    cutoffs = load_cutoffs() if cutoffs is None else cutoffs
    name = str(model).strip().rstrip("/")
    candidates = {name.lower(), name.split("/")[-1].lower()}
    for entry in cutoffs:
        for pattern in entry.patterns:
            pattern = pattern.lower()
            if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
                return entry
    return None


def model_name_from_args(model_args: str | dict | None) -> str | None:
    """The evaluated model's name in lm-eval model_args (`pretrained=` for hf/vllm, `model=` for
    API models); the base model, not an adapter, is what was pre-trained."""
    if not model_args:
        return None
    return model_name(parse_model_args(model_args))


def documents_predating(first_versions: list[FirstVersion], cutoff: ModelCutoff) -> dict[str, int]:
    """How many documents may be in a model's training data (first version not after its cut-off)."""
    tally = FreshnessTally(cutoff.cutoff)
    for first in first_versions:
        tally.add(first)
    return {v: int(tally.verdicts[v]) for v in VERDICTS}


def cutoff_warning(model: str, counts: dict[str, int], cutoff: ModelCutoff) -> str | None:
    """A one-paragraph warning when documents may predate the model's cut-off, else None."""
    at_risk = counts["not_fresh"] + counts["ambiguous_month"]
    total = sum(counts.values())
    if at_risk == 0 and counts["unparseable"] == 0:
        return None
    basis = ("its documented training cut-off" if cutoff.basis == "documented"
             else "its release month (no published cut-off)")
    parts = [(f"{at_risk:,} of {total:,} documents were first versioned on or before "
              f"{cutoff.month}, {basis} for {model} ({cutoff.name})")]
    if counts["unparseable"]:
        parts.append(f"{counts['unparseable']:,} have no parseable date")
    return ("; ".join(parts) + ": the model may have seen them in pre-training. Compare with "
            "hepth_completion_fresh (--metadata '{\"hepth_after\": \"" + cutoff.cutoff.isoformat()
            + "\"}' or a `feyntune data build --fresh-after` split).")


def _doc_first_version(doc: dict) -> FirstVersion:
    """A sample's document date: the fresh task records it; other documents hold only their id
    (and any Kaggle date fields a custom source kept)."""
    recorded = from_text(doc.get("first_version"),
                         str(doc.get("first_version_source") or "versions"))
    return recorded if recorded is not None else first_version(doc)


@dataclass(frozen=True)
class ContaminationCheck:
    model: str | None
    cutoff: ModelCutoff | None
    counts: dict[str, int]
    message: str | None       # a warning, a note (unknown cut-off), or None when all is fresh
    is_warning: bool


def check_samples(sample_files, model_args: str | dict | None,
                  cutoffs: list[ModelCutoff] | None = None) -> ContaminationCheck:
    """Whether the documents of a run's samples_*.jsonl files may predate the evaluated model's
    training cut-off (each document counted once across the files)."""
    model = model_name_from_args(model_args)
    firsts: dict[str, FirstVersion] = {}
    for path in sample_files:
        for _, sample in iter_samples(path):
            doc = sample.get("doc") or {}
            key = str(doc.get("id") or doc.get("abstract") or len(firsts))
            firsts.setdefault(key, _doc_first_version(doc))
    cutoff = cutoff_for(model, cutoffs)
    if cutoff is None:
        note = None
        if model:
            note = (f"no training cut-off is known for {model}, so its documents were not checked "
                    f"for contamination; add the model to {CUTOFFS_FILE}")
        return ContaminationCheck(model, None, {}, note, False)
    counts = documents_predating(list(firsts.values()), cutoff)
    message = cutoff_warning(model, counts, cutoff)
    return ContaminationCheck(model, cutoff, counts, message, message is not None)
