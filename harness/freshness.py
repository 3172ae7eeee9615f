"""When an arXiv record first appeared, and whether it is newer than a model's training data.

Contamination-aware evaluation (issue 9) compares a model on hep-th abstracts it cannot have
seen in pre-training with the standard test split. Everything here decides "seen or not" from
the record alone:

First-version date of a record, first found wins (and is never guessed):
1. `versions[0].created`, Kaggle's RFC 2822 form "Mon, 2 Apr 2007 19:18:42 GMT" -> that UTC day;
2. the arXiv id's yymm: new-style `0704.0001` / `2608.12345` (scheme began April 2007: 20yy),
   old-style `hep-th/9503124` (1991 to March 2007: yy >= 91 is 19yy, else 20yy) -> the FIRST
   DAY of that month, with month precision;
3. `update_date` "2007-05-23" -> that day. It is the date of the LAST revision, so an upper
   bound on the first version; it is used only when neither of the above gives a date (real
   arXiv records always have an id), and the counts by source are reported.
Anything else is unparseable: counted and reported, never treated as fresh.

"Later than the cut date D" (a calendar day, UTC): a record is fresh when its first version
is on D + 1 or later. A month-precision date (from the id) is fresh only when the WHOLE month
lies after D (its first day > D). The month that contains D is ambiguous -- the paper may
predate the cut -- and is counted apart as `ambiguous_month` and treated as not fresh:
a contamination-free split must not hold a paper the model may have read.

Model cut-offs are months ("December 2023" = data up to the end of that month), so a cut-off
`YYYY-MM` stands for the last day of that month; `--fresh-after` accepts both forms.
"""

from __future__ import annotations

import calendar
import datetime as dt
import fnmatch
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import FeynTuneError

SOURCES = ("versions", "id", "update_date")
VERDICTS = ("fresh", "not_fresh", "ambiguous_month", "unparseable")
CUTOFFS_FILE = Path(__file__).with_name("cutoffs.yaml")

_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
# Kaggle writes "Mon, 2 Apr 2007 19:18:42 GMT"; the weekday is optional in RFC 2822 and not
# checked (the date is what matters). Month names are English whatever the locale, so this is
# parsed here rather than with strptime's locale-dependent %a/%b.
_CREATED = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s*(GMT|UTC|UT|Z|[+-]\d{4})?\s*$")
_NEW_ID = re.compile(r"^(?:arXiv:)?(\d{2})(\d{2})\.\d{4,5}(?:v\d+)?$", re.IGNORECASE)
_OLD_ID = re.compile(r"^[a-z][a-z\-]*(?:\.[A-Za-z\-]+)?/(\d{2})(\d{2})\d{3}(?:v\d+)?$")
_DAY = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")


@dataclass(frozen=True)
class FirstVersion:
    """When a record first appeared: a UTC day, or the first day of a month."""

    date: dt.date | None
    precision: str  # "day" | "month" | "none"
    source: str     # one of SOURCES, or "unparseable"

    def as_text(self) -> str | None:
        if self.date is None:
            return None
        return self.date.strftime("%Y-%m") if self.precision == "month" else self.date.isoformat()


UNPARSEABLE = FirstVersion(None, "none", "unparseable")


# ----------------------------------------------------------------------------- parsing
def parse_created(text: Any) -> dt.date | None:
    """The UTC day of a Kaggle `versions[i].created` string, or None."""
    if not isinstance(text, str):
        return None
    match = _CREATED.match(text)
    if not match:
        return None
    day, month_name, year, hour, minute, second, zone = match.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    try:
        stamp = dt.datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0))
    except ValueError:  # 31 Feb, hour 25, ...
        return None
    if zone and zone[0] in "+-":
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        stamp -= offset if zone[0] == "+" else -offset
    return stamp.date()


def parse_day(text: Any) -> dt.date | None:
    """A Kaggle `update_date` ("2007-05-23"), or None."""
    if not isinstance(text, str):
        return None
    match = _DAY.match(text)
    if not match:
        return None
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def id_month(arxiv_id: Any) -> dt.date | None:
    """First day of the month an arXiv id was assigned in, or None for anything else.

    New-style ids began with 0704 (April 2007), old-style ones ran from 1991 to March 2007;
    a yymm outside its scheme's years is not an arXiv id and is not guessed at.
    """
    if not isinstance(arxiv_id, str):
        return None
    arxiv_id = arxiv_id.strip()
    match = _NEW_ID.match(arxiv_id)
    if match:
        year, month = 2000 + int(match.group(1)), int(match.group(2))
        if (year, month) < (2007, 4):
            return None
    else:
        match = _OLD_ID.match(arxiv_id)
        if not match:
            return None
        yy, month = int(match.group(1)), int(match.group(2))
        year = 1900 + yy if yy >= 91 else 2000 + yy
        if (year, month) > (2007, 3):
            return None
    if not 1 <= month <= 12:
        return None
    return dt.date(year, month, 1)


def first_version(record: dict) -> FirstVersion:
    """When a Kaggle record was first versioned (module docstring: sources in order)."""
    versions = record.get("versions")
    if isinstance(versions, list) and versions and isinstance(versions[0], dict):
        day = parse_created(versions[0].get("created"))
        if day is not None:
            return FirstVersion(day, "day", "versions")
    month = id_month(record.get("id"))
    if month is not None:
        return FirstVersion(month, "month", "id")
    day = parse_day(record.get("update_date"))
    if day is not None:
        return FirstVersion(day, "day", "update_date")
    return UNPARSEABLE


def parse_cut(text: Any, what: str = "--fresh-after") -> dt.date:
    """A cut date: `YYYY-MM-DD`, or `YYYY-MM` for the last day of that month."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    value = str(text).strip() if text is not None else ""
    day = _DAY.match(value)
    if day:
        try:
            return dt.date(*(int(part) for part in day.groups()))
        except ValueError:
            pass
    month = _MONTH.match(value)
    if month:
        year, mon = int(month.group(1)), int(month.group(2))
        if 1 <= mon <= 12:
            return dt.date(year, mon, calendar.monthrange(year, mon)[1])
    raise FeynTuneError(f"{what} {text!r} is not a date: use YYYY-MM-DD (or YYYY-MM for the "
                        "end of that month)")


def classify(first: FirstVersion, cut: dt.date) -> str:
    """One of VERDICTS for a record's first version against the cut date."""
    if first.date is None:
        return "unparseable"
    if first.date > cut:
        return "fresh"
    if first.precision == "month" and (first.date.year, first.date.month) == (cut.year, cut.month):
        return "ambiguous_month"
    return "not_fresh"


@dataclass
class FreshnessTally:
    """Counts of a cut over many records, for manifests and messages."""

    cut: dt.date
    verdicts: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)  # of the dates found, by source
    earliest_fresh: FirstVersion | None = None
    latest_fresh: FirstVersion | None = None

    def add(self, first: FirstVersion) -> str:
        verdict = classify(first, self.cut)
        self.verdicts[verdict] += 1
        if first.date is not None:
            self.sources[first.source] += 1
        if verdict == "fresh":
            if self.earliest_fresh is None or first.date < self.earliest_fresh.date:
                self.earliest_fresh = first
            if self.latest_fresh is None or first.date > self.latest_fresh.date:
                self.latest_fresh = first
        return verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "after": self.cut.isoformat(),
            "rule": "first version (versions[0].created, else the id's yymm, else update_date) "
                    "later than the date; a month known only from the id counts when the whole "
                    "month is later; the month containing the date is ambiguous and not fresh",
            "verdicts": {v: int(self.verdicts[v]) for v in VERDICTS},
            "dates_by_source": {s: int(self.sources[s]) for s in SOURCES},
            "fresh_first_versions": [
                None if self.earliest_fresh is None else self.earliest_fresh.as_text(),
                None if self.latest_fresh is None else self.latest_fresh.as_text()],
        }

    def describe(self) -> str:
        v = self.verdicts
        return (f"{v['fresh']:,} first versioned after {self.cut.isoformat()}, "
                f"{v['not_fresh']:,} not, {v['ambiguous_month']:,} in the cut's month (known only "
                f"by id month; not fresh), {v['unparseable']:,} with no parseable date")


def select_fresh(records, cut: dt.date) -> tuple[list[bool], FreshnessTally]:
    """Which records are fresh (one flag each, in order) and the counts."""
    tally = FreshnessTally(cut)
    flags = [tally.add(first_version(record)) == "fresh" for record in records]
    return flags, tally


# ----------------------------------------------------------------------------- model cut-offs
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
    if isinstance(model_args, str):
        pairs = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
    else:
        pairs = dict(model_args)
    for key in ("pretrained", "model", "model_name", "engine"):
        if pairs.get(key):
            return str(pairs[key]).strip()
    return None


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


# ----------------------------------------------------------------------------- the fresh task
FRESH_DIR = "hepth-fresh"  # written by `feyntune data build --fresh-after` (finetune/curate.py)


@dataclass(frozen=True)
class FreshRecords:
    records: tuple[dict, ...]   # the fresh records, in source order
    first: tuple[FirstVersion, ...]
    cut: dt.date                # documents are first versioned after this day
    where: str                  # what was read, for messages
    tally: FreshnessTally
    source: Any                 # the harness.documents.Source the records came from


def _build_cut(path: Path) -> tuple[Path, dt.date | None]:
    """The JSON-lines file a `hepth_fresh_data` path stands for, and the cut date recorded by
    the build that wrote it (None when no build manifest says)."""
    if path.is_dir():
        for candidate in (path / FRESH_DIR / "test.jsonl", path / "test.jsonl"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise FeynTuneError(f"{path} holds neither {FRESH_DIR}/test.jsonl (a `feyntune data "
                                "build --fresh-after` output) nor test.jsonl")
    elif not path.is_file():
        raise FeynTuneError(f"{path} does not exist")
    manifest = path.parent.parent / "manifest.json"
    if path.parent.name != FRESH_DIR or not manifest.is_file():
        return path, None
    try:
        after = (json.loads(manifest.read_text()).get("fresh") or {}).get("after")
    except (OSError, ValueError, AttributeError) as err:
        raise FeynTuneError(f"cannot read the build manifest {manifest}: {err}") from None
    return path, (parse_cut(after, f"{manifest} fresh.after") if after else None)


def load_fresh_records(metadata: dict, cwd: str | os.PathLike | None = None) -> FreshRecords:
    """The records of hepth_completion_fresh, from lm-eval task metadata.

    `hepth_fresh_data`: a `feyntune data build --fresh-after` folder (its hepth-fresh/test.jsonl,
    cut date from its manifest), its hepth-fresh folder, or a JSON-lines file; `hepth_after`:
    a cut date applied to that file, or -- without `hepth_fresh_data` -- to the standard
    `hepth_data` source (harness/documents.py). Either way only records whose first version is
    after the cut are kept, and the cut is the later of the build's and `hepth_after`.
    """
    from harness import documents

    fresh_data, after = metadata.get("hepth_fresh_data"), metadata.get("hepth_after")
    after = parse_cut(after, "metadata hepth_after") if after not in (None, "") else None
    if fresh_data not in (None, ""):
        base = Path(cwd) if cwd is not None else Path.cwd()
        path = Path(os.path.expanduser(str(fresh_data)))
        path = path if path.is_absolute() else base / path
        try:
            path, build_cut = _build_cut(path.resolve())
        except FeynTuneError as err:
            raise FeynTuneError(f"hep-th fresh documents from metadata hepth_fresh_data="
                                f"{fresh_data}: {err}") from None
        if build_cut is None and after is None:
            raise FeynTuneError(
                f"hepth_fresh_data={fresh_data}: no `feyntune data build` manifest records the "
                "cut date of this file; pass it too, --metadata '{\"hepth_fresh_data\": ..., "
                "\"hepth_after\": \"YYYY-MM-DD\"}', so the results say what they are fresh of")
        cut = max(c for c in (build_cut, after) if c is not None)
        source = documents.Source("file", str(path), f"metadata hepth_fresh_data={fresh_data}")
        records, where = documents.read_records(source)
    elif after is not None:
        source = documents.resolve_source(metadata.get("hepth_data"), cwd=cwd)
        records, where = documents.read_records(source)
        cut = after
    else:
        raise FeynTuneError(
            "hepth_completion_fresh needs documents newer than the model: pass --metadata "
            "'{\"hepth_fresh_data\": \"DIR\"}' (a `feyntune data build --fresh-after` folder) or "
            "'{\"hepth_after\": \"YYYY-MM-DD\"}' (a cut applied to hepth_data)")
    tally = FreshnessTally(cut)
    kept, firsts = [], []
    for record in records:
        first = first_version(record)
        if tally.add(first) == "fresh":
            kept.append(record)
            firsts.append(first)
    print(f"feyntune: hepth_completion_fresh from {where}: {tally.describe()}", file=sys.stderr)
    if not kept:
        raise FeynTuneError(f"no hep-th document in {where} is first versioned after "
                            f"{cut.isoformat()} ({tally.describe()})")
    return FreshRecords(tuple(kept), tuple(firsts), cut, where, tally, source)


def _doc_key(record: dict, index: int) -> str:
    # the id harness.documents.to_document gives the document
    doc_id = record.get("id")
    return str(doc_id) if doc_id not in (None, "") else f"#{index}"


def fresh_dataset(metadata: dict, build) -> Any:
    """lm-eval dataset of a fresh subtask: `build` (harness.documents.generation_dataset or
    perplexity_dataset) run on the fresh records, each document also carrying its
    `first_version`, where that date came from, and the cut `fresh_after`."""
    from harness import documents

    fresh = load_fresh_records(metadata)
    dataset = build(metadata, documents.documents_from(list(fresh.records), fresh.where, fresh.source))
    by_key = {_doc_key(r, i): f for i, (r, f) in enumerate(zip(fresh.records, fresh.first))}
    for split in list(dataset):
        part = dataset[split]
        firsts = [by_key[key] for key in part["id"]]
        part = part.add_column("first_version", [f.as_text() for f in firsts])
        part = part.add_column("first_version_source", [f.source for f in firsts])
        dataset[split] = part.add_column("fresh_after", [fresh.cut.isoformat()] * len(firsts))
    return dataset


# ----------------------------------------------------------------------------- after `feyntune eval`
def _doc_first_version(doc: dict) -> FirstVersion:
    """A sample's document date: the fresh task records it; other documents hold only their id
    (and any Kaggle date fields a custom source kept)."""
    text = doc.get("first_version")
    if isinstance(text, str) and text:
        source = str(doc.get("first_version_source") or "versions")
        if _DAY.match(text):
            return FirstVersion(parse_day(text), "day", source)
        if _MONTH.match(text):
            year, month = (int(p) for p in text.split("-"))
            return FirstVersion(dt.date(year, month, 1), "month", source)
    return first_version(doc)


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
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    doc = json.loads(line).get("doc") or {}
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


# ----------------------------------------------------------------------------- fresh vs standard
# Each fresh subtask measures what its standard twin measures, on newer documents.
FRESH_TASKS = {"hepth_completion_fresh_gen": "hepth_completion_gen",
               "hepth_completion_fresh_ppl": "hepth_completion_ppl"}


@dataclass(frozen=True)
class Gap:
    """Fresh minus standard figure of one metric, with a percentile bootstrap interval of the
    difference (two independent samples, each resampled on its own)."""

    n_standard: int
    n_fresh: int
    standard: float   # arithmetic means, as the leaderboard reports them
    fresh: float
    gap: float        # fresh - standard: for perplexity, > 0 means worse on unseen papers
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def freshness_gap(standard, fresh, n_resamples: int = 9999, confidence_level: float = 0.95,
                  random_state: int = 1) -> Gap:
    """The gap between a metric's per-document values on fresh and on standard documents.

    The same bootstrap settings as harness.stats (9,999 resamples, percentile interval, random
    state 1), through scipy.stats.bootstrap with two unpaired samples: the documents differ, so
    nothing pairs them. Resamples are drawn in batches to bound memory on full test splits.
    """
    import numpy as np
    from scipy import stats

    a = np.asarray(list(fresh), dtype=np.float64)
    b = np.asarray(list(standard), dtype=np.float64)
    for name, values in (("fresh", a), ("standard", b)):
        if values.size < 2:
            raise FeynTuneError(f"freshness gap: {values.size} {name} value(s); need at least 2")
        if not np.isfinite(values).all():
            raise FeynTuneError(f"freshness gap: {name} values hold NaN or infinity")

    def difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    batch = max(1, (1 << 22) // max(a.size, b.size))
    result = stats.bootstrap((a, b), difference, paired=False, vectorized=True,
                             n_resamples=n_resamples, confidence_level=confidence_level,
                             method="percentile", random_state=random_state, batch=batch)
    interval = result.confidence_interval
    return Gap(n_standard=int(b.size), n_fresh=int(a.size), standard=float(b.mean()),
               fresh=float(a.mean()), gap=float(a.mean() - b.mean()),
               ci_low=float(interval.low), ci_high=float(interval.high))
