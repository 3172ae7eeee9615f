"""`feyntune data build`: the Kaggle arXiv metadata snapshot -> the reference study's ten mixes.

Pipeline (docs/reference.md, section Curation; the record rules live in harness/ground/abstracts.py):
1. stream the snapshot once, keeping only records whose primary category is curated
   (drop controls, then withdrawn papers, clean the abstract; bad input skipped and counted);
2. down-sample cs to 200,000 records the way pandas `DataFrame.sample(random_state=seed)` does;
3. split every base dataset with datasets.Dataset.train_test_split, 70 / 15 / 15, seed 42: each
   category, and each `selection` set (s2: hep-ph OR gr-qc, selected together, split once);
4. compose each mix split by split as `finetune/sets.yaml` describes, shuffled with seed 42;
5. write `<out>/<set>/{train,validation,test}.jsonl` and merge `<out>/manifest.json`
   (finetune/curate_out.py: only the set folders written are replaced, under a lock);
with `--fresh-after DATE`, hep-th records first versioned after DATE leave every split (after
step 3, so the rest keep their splits) for `<out>/hepth-fresh/test.jsonl` (issue 9).

Splits and shuffles only ever permute row positions, and datasets draws those permutations from
`np.random.default_rng(seed)` and the row count alone. So they are computed on a one-column
dataset of positions and applied to the records: the same ids, in the same order, as the
reference calling the same methods on full datasets, without copying the records into Arrow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from finetune import curate_out
from finetune import snapshot as snapshot_io
from harness.ground import freshness
from harness.ground.abstracts import (
    CONTROL_IDS,
    clean_abstract,
    in_category,
    is_control,
    is_withdrawn,
    primary_category,
)
from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import FRESH_DIR
from harness.ground.version import __version__

DEFAULT_CONFIG = Path(__file__).with_name("sets.yaml")
SPLITS = ("train", "validation", "test")
# Field order of the Kaggle snapshot; the output keeps it, with `abstract` cleaned and
# `orig_abstract` appended (the columns of the published LLMsForHepth datasets, less the
# prompt/truth columns that the evaluation task derives itself).
KAGGLE_FIELDS = (
    "id", "submitter", "authors", "title", "comments", "journal-ref", "doi", "report-no",
    "categories", "license", "abstract", "versions", "update_date", "authors_parsed",
)
REQUIRED_FIELDS = ("id", "categories", "abstract")
# Reasons a line of the input is not used although it may be a curated record (bad input).
SKIP_REASONS = (
    "blank_line", "invalid_utf8", "malformed_json", "missing_field", "invalid_unicode",
    "empty_abstract", "duplicate_id", "truncated_input",
)
SET_KINDS = ("category", "selection", "union", "percentage", "proportional", "fill")
_PROGRESS_EVERY = 1 << 14


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class CurationConfig:
    seed: int
    train_size: float
    validation_test_size: float
    categories: tuple[str, ...]
    downsample: dict[str, int]
    sets: dict[str, dict[str, Any]]

    def parts_of(self, name: str) -> list[str]:
        spec = self.sets[name]
        refs = [spec.get("category"), spec.get("major"), spec.get("filler"),
                spec.get("minor_from")]
        refs += _as_list(spec.get("size_of")) + list(spec.get("parts", []))
        refs += list(spec.get("minor", [])) + list(spec.get("categories", []))
        return [ref for ref in refs if ref]

    def closure(self, names: list[str]) -> tuple[list[str], list[str]]:
        """Sets to compose (dependencies first) and categories to read for `names`."""
        ordered: list[str] = []
        categories: set[str] = set()
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in categories or name in ordered:
                return
            if name in self.categories:
                categories.add(name)
                return
            if name in visiting:
                raise FeynTuneError(f"set {name} is defined in terms of itself")
            visiting.add(name)
            for ref in self.parts_of(name):
                visit(ref)
            ordered.append(name)

        for name in names:
            visit(name)
        # hep-th is always read: without it there is nothing to fine-tune or evaluate on.
        categories.add("hep-th")
        return ordered, [c for c in self.categories if c in categories]


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_config(path: str | os.PathLike | None = None) -> CurationConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise FeynTuneError(f"cannot read curation config {path}: {err}") from err
    try:
        config = CurationConfig(
            seed=int(raw["seed"]),
            train_size=float(raw["split"]["train_size"]),
            validation_test_size=float(raw["split"]["validation_test_size"]),
            categories=tuple(raw["categories"]),
            downsample={str(k): int(v) for k, v in (raw.get("downsample") or {}).items()},
            sets={str(k): dict(v) for k, v in raw["sets"].items()},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise FeynTuneError(f"curation config {path} is incomplete: {err!r}") from err
    known = set(config.categories) | set(config.sets)
    for name, spec in config.sets.items():
        if spec.get("kind") not in SET_KINDS:
            raise FeynTuneError(f"{path}: set {name} has kind {spec.get('kind')!r}, "
                                f"expected one of {', '.join(SET_KINDS)}")
        for ref in config.parts_of(name):
            if ref not in known:
                raise FeynTuneError(f"{path}: set {name} refers to {ref!r}, which is neither a "
                                    "curated category nor a set")
        loose = [c for c in spec.get("categories", []) if c not in config.categories]
        if spec["kind"] == "selection" and (loose or not spec.get("categories")):
            raise FeynTuneError(f"{path}: selection {name} needs `categories`, a list of curated "
                                "categories" + (f"; {', '.join(loose)} are not" if loose else ""))
    if any(not c or re.search(r"\s", c) for c in config.categories):
        raise FeynTuneError(f"{path}: a category name is empty or holds whitespace")
    config.closure(list(config.sets))  # rejects cycles
    return config


# ----------------------------------------------------------------------------- streaming
_CATEGORIES_KEY = b'"categories":'
_LEAD = re.compile(r"\S*")


def peek_primary(line: bytes) -> str | None:
    """Primary category read straight from the raw line, or None when that is not certain.

    Parsing JSON is the cost of curation, and most of the snapshot is in categories we drop.
    A JSON string cannot hold an unescaped quote, so `"categories":` can only be a key; a
    value with a backslash (an escape), a key seen twice, or an unusual layout fall back to
    the full parse, which decides with the same `primary_category` rule.
    """
    start = line.find(_CATEGORIES_KEY)
    if start < 0 or line.find(_CATEGORIES_KEY, start + 1) >= 0:
        return None
    pos = start + len(_CATEGORIES_KEY)
    if line[pos:pos + 1] == b" ":
        pos += 1
    if line[pos:pos + 1] != b'"':
        return None
    end = line.find(b'"', pos + 1)
    value = line[pos + 1:end]
    if end < 0 or b"\\" in value:
        return None
    try:
        return primary_category(value.decode("utf-8"))
    except UnicodeDecodeError:
        return None


@dataclass
class Collection:
    """The curated records kept from one pass over the snapshot."""

    categories: list[str]
    lines: list[bytes] = field(default_factory=list)  # output JSON line of each kept record
    category_code: list[int] = field(default_factory=list)
    by_category: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=dict)  # per category: matched, ...
    skipped: Counter = field(default_factory=Counter)
    lines_read: int = 0
    other_categories: int = 0
    # Per kept record, the index in `leads` of the leading run of non-blanks of its
    # `categories`: `categories.startswith(name)` equals `lead.startswith(name)` for a name
    # without whitespace, so the "categories starts with" rule needs no second parse.
    lead_code: array = field(default_factory=lambda: array("I"))
    leads: list[str] = field(default_factory=list)
    truncated_at: int | None = None  # line number of a last line cut off mid-record

    def __post_init__(self) -> None:
        for name in self.categories:
            self.by_category[name] = []
            self.counts[name] = Counter()
        self._category_of_primary: dict[str, str | None] = {}
        self._ids: set[str] = set()
        self._lead_index: dict[str, int] = {}

    def category_of(self, primary: str) -> str | None:
        try:
            return self._category_of_primary[primary]
        except KeyError:
            hit = next((c for c in self.categories if in_category(primary, c)), None)
            if len(self._category_of_primary) < 100_000:
                self._category_of_primary[primary] = hit
            return hit

    def add_line(self, line: bytes) -> None:
        self.lines_read += 1
        if not line.endswith(b"\n") and self._truncated(line):
            return
        primary = peek_primary(line)
        if primary is not None and self.category_of(primary) is None:
            self.other_categories += 1
            return
        self._add_parsed(line)

    def _truncated(self, line: bytes) -> bool:
        """Only the last line can lack its newline: one that is not a whole JSON value is a
        download cut off mid-record, counted apart from other malformed lines."""
        if not line.strip():
            return False
        try:
            json.loads(line)
        except ValueError:
            self.skipped["truncated_input"] += 1
            self.truncated_at = self.lines_read
            return True
        return False

    def _lead(self, categories: str) -> int:
        lead = _LEAD.match(categories).group()
        code = self._lead_index.get(lead)
        if code is None:
            code = self._lead_index[lead] = len(self.leads)
            self.leads.append(lead)
        return code

    def starting_with(self, rows: np.ndarray, prefix: str) -> np.ndarray:
        """The rows (in their order) whose `categories` string starts with `prefix`."""
        table = np.fromiter((lead.startswith(prefix) for lead in self.leads), dtype=bool,
                            count=len(self.leads))
        codes = np.frombuffer(self.lead_code, dtype=f"u{self.lead_code.itemsize}") \
            if len(self.lead_code) else np.zeros(0, dtype=np.uint32)
        return rows[table[codes[rows]]] if len(rows) else rows

    def _parse_rejected(self, line: bytes) -> Any:
        """Why orjson refused a line (counted), or the record when only orjson refuses it.

        orjson also rejects valid JSON that is unusable here (a lone surrogate escape): the
        standard parser tells those apart, and they fail on encoding further on.
        """
        if not line.strip():
            self.skipped["blank_line"] += 1
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped["invalid_utf8"] += 1
            return None
        try:
            return json.loads(text)
        except ValueError:  # also a line cut off mid-record
            self.skipped["malformed_json"] += 1
            return None

    @staticmethod
    def _encode(out: dict[str, Any]) -> bytes | None:
        try:
            # orjson's result keeps its over-allocated buffer (about 8 KiB here); an exact
            # copy makes the records held until writing cost their length, not 4-5 times it.
            return memoryview(orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)).tobytes()
        except (orjson.JSONEncodeError, TypeError):
            pass
        try:  # the same layout as orjson's, for what orjson cannot encode (e.g. huge ints)
            return (json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
            return None

    def _add_parsed(self, line: bytes) -> None:
        # orjson reads the records several times faster than json; Kaggle records hold only
        # strings, lists and nulls, so its one divergence (integers beyond 64 bits read as
        # floats) cannot touch them.
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = self._parse_rejected(line)
            if record is None:
                return
        if not isinstance(record, dict):
            self.skipped["malformed_json"] += 1
            return
        comments = record.get("comments")
        if any(not isinstance(record.get(key), str) for key in REQUIRED_FIELDS) or not (
            comments is None or isinstance(comments, str)
        ):
            self.skipped["missing_field"] += 1
            return
        category = self.category_of(primary_category(record["categories"]))
        if category is None:
            self.other_categories += 1
            return
        counts = self.counts[category]
        counts["matched"] += 1
        arxiv_id, original = record["id"], record["abstract"]
        if is_control(arxiv_id):
            counts["control"] += 1
            return
        if is_withdrawn(comments, original):
            counts["withdrawn"] += 1
            return
        abstract = clean_abstract(original)
        if not abstract:
            self.skipped["empty_abstract"] += 1
            return
        if arxiv_id in self._ids:  # the first occurrence wins
            self.skipped["duplicate_id"] += 1
            return
        out = {name: record.get(name) for name in KAGGLE_FIELDS}
        out["abstract"] = abstract
        out["orig_abstract"] = original
        encoded = self._encode(out)
        if encoded is None:
            self.skipped["invalid_unicode"] += 1
            return
        self._ids.add(arxiv_id)
        self.lead_code.append(self._lead(record["categories"]))
        counts["kept"] += 1
        self.by_category[category].append(len(self.lines))
        self.category_code.append(self.categories.index(category))
        self.lines.append(encoded)


def collect(snap: snapshot_io.SnapshotFile, categories: list[str],
            progress: bool | None = None) -> Collection:
    from tqdm import tqdm

    collection = Collection(categories=list(categories))
    # disable=None: a bar on a terminal, silence in logs and tests unless asked for.
    bar = tqdm(total=snap.size_bytes, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"reading {snap.path.name}", disable=None if progress is None else not progress,
               file=sys.stderr, mininterval=0.5)
    started = time.perf_counter()
    with bar, snapshot_io.LineStream(snap) as stream:
        def show(count: int) -> None:
            rate = count / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{count:,} records, {rate:,.0f} records/s, "
                                f"{len(collection.lines):,} kept", refresh=False)
            bar.update(stream.position() - bar.n)

        add = collection.add_line
        for count, line in enumerate(stream, start=1):
            add(line)
            if count % _PROGRESS_EVERY == 0:
                show(count)
        show(collection.lines_read)
    return collection


# ----------------------------------------------------------------------------- splits, mixes
def _positions(dataset) -> np.ndarray:
    """The `row` column of a split or shuffled dataset, in its order.

    Formatting rows out of datasets gathers them one at a time (seconds per 100k rows, dozens
    of calls per build), so the indices mapping that datasets itself would gather with is
    applied to the column directly; the public path remains the fallback.
    """
    indices = getattr(dataset, "_indices", None)
    try:
        rows = dataset.data.column("row").to_numpy()
        if indices is not None:
            rows = rows[indices.column(0).to_numpy()]
    except (AttributeError, TypeError, IndexError):
        rows = None
    if rows is None or len(rows) != len(dataset):
        rows = dataset.with_format("numpy")[:]["row"]
    return np.asarray(rows, dtype=np.int64)


def _row_dataset(rows: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict({"row": np.asarray(rows, dtype=np.int64)})


def _train_test(rows: np.ndarray, seed: int, **size: float) -> tuple[np.ndarray, np.ndarray]:
    """`Dataset.train_test_split(**size, seed=seed, shuffle=True)` -> (train rows, test rows).

    datasets refuses a split whose train part would be empty (1 record; or 1 left for
    validation/test). Tiny categories of small snapshots then get the split datasets would
    give if it allowed that: its own arithmetic and permutation, so all records go to test.
    """
    n = len(rows)
    if n == 0:
        return rows[:0], rows[:0]
    if "train_size" in size:
        n_train = int(np.floor(size["train_size"] * n))
        n_test = n - n_train
    else:
        n_test = int(np.ceil(size["test_size"] * n))
        n_train = n - n_test
    if n_train > 0 and n_test > 0:
        parts = _row_dataset(rows).train_test_split(**size, seed=seed, shuffle=True)
        return _positions(parts["train"]), _positions(parts["test"])
    permutation = np.random.default_rng(seed).permutation(n)
    return rows[permutation[n_test:n_test + n_train]], rows[permutation[:n_test]]


def split_rows(rows: np.ndarray, seed: int = 42, train_size: float = 0.7,
               validation_test_size: float = 0.5) -> dict[str, np.ndarray]:
    """70% train, then the rest 50/50: its train part is validation, its test part test."""
    train, rest = _train_test(np.asarray(rows, dtype=np.int64), seed, train_size=train_size)
    validation, test = _train_test(rest, seed, test_size=validation_test_size)
    return {"train": train, "validation": validation, "test": test}


def shuffle_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    """What `concatenate_datasets(parts).shuffle(seed=seed)` does to the rows."""
    if len(rows) == 0:
        return np.asarray(rows, dtype=np.int64)
    return _positions(_row_dataset(rows).shuffle(seed=seed))


def downsample_rows(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """`DataFrame.sample(n=limit, replace=False, random_state=seed)`, as the reference drew its cs
    records: pandas takes `RandomState(seed).permutation(N)[:limit]`, and the sample keeps that
    drawn order into the split. pandas refuses a sample larger than the frame, so a category
    smaller than the limit is kept whole, in snapshot order."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < limit:
        return rows
    return rows[np.random.RandomState(seed).permutation(len(rows))[:limit]]


def select_together(by_category: dict[str, list[int]], categories: list[str]) -> np.ndarray:
    """One selection of the records of several categories in snapshot order (the reference's s2:
    a single pass keeping primary hep-ph OR gr-qc); rows number the kept records in that order.
    Down-sampling applies to a category's own dataset, not to its records in a selection."""
    parts = [np.asarray(by_category[c], dtype=np.int64) for c in categories]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


@dataclass
class Mix:
    rows: dict[str, np.ndarray]                      # split -> record rows, in output order
    shortfalls: list[dict[str, Any]] = field(default_factory=list)


def _take(rows: np.ndarray, wanted: int, part: str, split: str, shortfalls: list) -> np.ndarray:
    if wanted > len(rows):
        shortfalls.append({"split": split, "part": part, "requested": int(wanted),
                           "taken": len(rows)})
    return rows[:max(wanted, 0)]


def _size(refs: Any, resolve, split: str) -> int:
    return sum(len(resolve(ref, split)) for ref in _as_list(refs))


def compose(config: CurationConfig, name: str, resolve, seed: int,
            starting_with=None) -> Mix:
    """One mix, split by split, from the rows of its parts (`resolve(part, split)`).

    `starting_with(rows, prefix)` keeps the rows whose `categories` string starts with prefix
    (Collection.starting_with); only `percentage` sets with `minor_from` use it.
    """
    spec = config.sets[name]
    kind = spec["kind"]
    mix = Mix(rows={})
    if kind in ("category", "selection"):  # a base dataset's split as it comes, not reshuffled
        base = spec["category"] if kind == "category" else name
        mix.rows = {split: resolve(base, split) for split in SPLITS}
        return mix
    if kind == "proportional":
        # One factor for every split, from the totals over all splits (s9: n_hepth / (n_grqc +
        # n_hepph)), as the reference computed it on the whole datasets.
        total = sum(_size(spec["parts"], resolve, split) for split in SPLITS)
        factor = sum(_size(spec["size_of"], resolve, split) for split in SPLITS) / total \
            if total else 0.0
    for split in SPLITS:
        short = mix.shortfalls
        if kind == "union":
            pieces = [resolve(part, split) for part in spec["parts"]]
        elif kind == "percentage":
            # n = the size_of split; k15 = int(0.15 n) of each minor category (from `minor_from`
            # filtered by `categories` prefix when given); the major's first n - m k15.
            n = _size(spec["size_of"], resolve, split)
            k = int(spec["minor_fraction"] * n)
            pieces = [_take(resolve(spec["major"], split), n - len(spec["minor"]) * k,
                            spec["major"], split, short)]
            for minor in spec["minor"]:
                source = resolve(minor, split) if not spec.get("minor_from") else \
                    starting_with(resolve(spec["minor_from"], split), minor)
                pieces.append(_take(source, k, minor, split, short))
        elif kind == "proportional":
            # Each part but the last: its split shuffled, the first int(factor * len); the last
            # part's shuffled split fills up to the size_of split exactly.
            target = _size(spec["size_of"], resolve, split)
            *firsts, last = spec["parts"]
            pieces = []
            for part in firsts:
                rows = shuffle_rows(resolve(part, split), seed)
                pieces.append(_take(rows, int(factor * len(rows)), part, split, short))
            room = target - sum(len(p) for p in pieces)
            pieces.append(_take(shuffle_rows(resolve(last, split), seed), room, last, split,
                                short))
        else:  # fill: the parts whole, the filler's shuffled split up to the size_of total
            target = _size(spec["size_of"], resolve, split)
            pieces = [resolve(part, split) for part in spec["parts"]]
            room = target - sum(len(p) for p in pieces)
            pieces.append(_take(shuffle_rows(resolve(spec["filler"], split), seed), room,
                                spec["filler"], split, short))
        mix.rows[split] = shuffle_rows(np.concatenate(pieces).astype(np.int64), seed)
    return mix


# ----------------------------------------------------------------------------- fresh split
FRESH_CATEGORY = "hep-th"


@dataclass
class FreshSplit:
    rows: np.ndarray              # record rows of hepth-fresh/test.jsonl, in output order
    manifest: dict[str, Any]


def move_fresh(collection: Collection, category_rows: dict[str, dict[str, np.ndarray]],
               cut: dt.date, seed: int) -> FreshSplit:
    """Take the hep-th records first versioned after `cut` out of the base datasets' splits (in
    place, keeping the order of the rest) and return them, shuffled with `seed` like every
    split."""
    candidates = np.asarray(collection.by_category[FRESH_CATEGORY], dtype=np.int64)
    # The kept lines are the cleaned records; their date fields are untouched by cleaning.
    records = (orjson.loads(collection.lines[row]) for row in candidates.tolist())
    flags, tally = freshness.select_fresh(records, cut)
    fresh_rows = candidates[np.asarray(flags, dtype=bool)] if len(candidates) else candidates
    is_fresh = np.zeros(len(collection.lines), dtype=bool)
    is_fresh[fresh_rows] = True
    moved = {}
    # Every base dataset holding hep-th records loses them (a selection may include hep-th).
    for base, splits in category_rows.items():
        for split in SPLITS:
            rows = splits[split]
            keep = ~is_fresh[rows]
            if base == FRESH_CATEGORY:
                moved[split] = int(len(rows) - keep.sum())
            splits[split] = rows[keep]
    manifest = {
        "path": f"{FRESH_DIR}/test.jsonl",
        "category": FRESH_CATEGORY,
        **tally.as_dict(),
        "records": len(fresh_rows),
        "moved_from": moved,
        "order": f"shuffled with seed {seed}",
    }
    return FreshSplit(rows=shuffle_rows(fresh_rows, seed), manifest=manifest)


# ----------------------------------------------------------------------------- the build
@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]  # this build's
    merged: dict[str, Any] = field(default_factory=dict)  # the folder's manifest.json after it


def _set_counts(rows: np.ndarray, codes: np.ndarray, categories: list[str]) -> dict[str, Any]:
    tally = np.bincount(codes[rows], minlength=len(categories)) if len(rows) else \
        np.zeros(len(categories), dtype=np.int64)
    return {"total": len(rows),
            "by_category": {c: int(n) for c, n in zip(categories, tally) if n}}


def build(snapshot: str | os.PathLike, out: str | os.PathLike, sets: list[str] | None = None,
          seed: int | None = None, config: CurationConfig | None = None,
          progress: bool | None = None, fresh_after: str | dt.date | None = None) -> BuildResult:
    """Curate the snapshot into `out`.

    With `fresh_after` (a date), hep-th records first versioned later than it are MOVED out of
    the hep-th train/validation/test splits -- so out of every split of every set, the
    composed mixes being built from those splits -- into `<out>/hepth-fresh/test.jsonl`
    (harness/ground/freshness.py says how dates are read). Every other record keeps the split it has
    without the option, since the splits are drawn before the move. Out of validation and test
    too: the fresh and the standard figures are then measured on disjoint documents.
    """
    config = config or load_config()
    seed = config.seed if seed is None else int(seed)
    cut = freshness.parse_cut(fresh_after) if fresh_after is not None else None
    names = list(config.sets) if not sets else list(dict.fromkeys(sets))
    unknown = [name for name in names if name not in config.sets]
    if unknown:
        raise FeynTuneError(f"unknown set(s) {', '.join(unknown)}; known: "
                            f"{', '.join(config.sets)}")
    out = Path(out).expanduser().resolve()
    snap = snapshot_io.locate(snapshot)
    order, categories = config.closure(names)
    folders = {name: tuple(f"{split}.jsonl" for split in SPLITS) for name in names}
    if cut is not None:
        folders[FRESH_DIR] = ("test.jsonl",)
    # Locked and checked before the long read: a refusal costs nothing.
    with curate_out.OutputFolder(out) as folder:
        curate_out.check_replaceable(out, folder.manifest, folders)
        return _build_into(folder, snap, names, order, categories, config, seed, cut, progress)


def _build_into(folder: curate_out.OutputFolder, snap: snapshot_io.SnapshotFile,
                names: list[str], order: list[str], categories: list[str],
                config: CurationConfig, seed: int, cut: dt.date | None,
                progress: bool | None) -> BuildResult:
    digest = snapshot_io.BackgroundSha256(snap.path)
    collection = collect(snap, categories, progress=progress)
    if collection.counts["hep-th"]["kept"] == 0:
        raise FeynTuneError(
            f"{snap.path}: no usable hep-th record among {collection.lines_read:,} lines "
            f"(hep-th records matched: {collection.counts['hep-th']['matched']:,}); is this the "
            "Kaggle arXiv metadata snapshot (JSON lines)?")

    # The base datasets, each split on its own: the categories, then the selections.
    category_rows: dict[str, dict[str, np.ndarray]] = {}
    downsampled: dict[str, int] = {}
    for category in categories:
        rows = np.asarray(collection.by_category[category], dtype=np.int64)
        limit = config.downsample.get(category)
        if limit is not None and len(rows) >= limit:
            downsampled[category] = len(rows) - limit
            rows = downsample_rows(rows, limit, seed)
        category_rows[category] = split_rows(rows, seed, config.train_size,
                                             config.validation_test_size)
    for name in order:
        if config.sets[name]["kind"] == "selection":
            rows = select_together(collection.by_category, config.sets[name]["categories"])
            category_rows[name] = split_rows(rows, seed, config.train_size,
                                             config.validation_test_size)
    fresh = None if cut is None else move_fresh(collection, category_rows, cut, seed)

    mixes: dict[str, Mix] = {}

    def resolve(part: str, split: str) -> np.ndarray:
        return category_rows[part][split] if part in category_rows else mixes[part].rows[split]

    for name in order:
        mixes[name] = compose(config, name, resolve, seed, collection.starting_with)

    codes = np.asarray(collection.category_code, dtype=np.int64)
    input_info = {"path": str(snap.path.resolve()), "size_bytes": snap.size_bytes,
                  "sha256": None, "compression": snap.compression}
    manifest = {
        "format": curate_out.FORMAT,
        "command": "feyntune data build",
        "feyntune_version": __version__,
        "input": input_info,
        "seed": seed,
        "rules": {
            "control_ids": sorted(CONTROL_IDS),
            "split": {"train_size": config.train_size,
                      "validation_test_size": config.validation_test_size,
                      "method": "datasets.Dataset.train_test_split, shuffle=True"},
            "downsample": config.downsample,
            "downsample_method": "pandas DataFrame.sample(n, replace=False, random_state=seed)",
            "sets": {name: config.sets[name] for name in order},  # with their dependencies
        },
        "records": {
            "lines": collection.lines_read,
            "other_categories": collection.other_categories,
            "by_category": {c: {key: int(collection.counts[c][key])
                                for key in ("matched", "control", "withdrawn", "kept")}
                            for c in categories},
            "downsampled_out": downsampled,
        },
        "skipped": {reason: int(collection.skipped[reason]) for reason in SKIP_REASONS},
        "sets": {
            name: {"splits": {split: _set_counts(mixes[name].rows[split], codes, categories)
                              for split in SPLITS},
                   "shortfalls": mixes[name].shortfalls,
                   "rule": config.sets[name],
                   # Sets of earlier builds stay in the merged manifest: each says its source.
                   "built_from": {"input": input_info, "seed": seed,
                                  "feyntune_version": __version__}}
            for name in names
        },
    }
    if collection.truncated_at is not None:
        manifest["records"]["truncated_line"] = collection.truncated_at
    if fresh is not None:
        manifest["fresh"] = {**fresh.manifest, "excluded_from_sets": names}

    try:
        merged = _write(folder, collection.lines, names, mixes, fresh, manifest, digest,
                        list(config.sets))
    except OSError as err:  # a full disk, a folder made read-only meanwhile, ...
        raise FeynTuneError(f"cannot write into {folder.out}: {err}") from err
    return BuildResult(out=folder.out, manifest=manifest, merged=merged)


def _write(folder: curate_out.OutputFolder, lines: list[bytes], names: list[str],
           mixes: dict[str, Mix], fresh: FreshSplit | None, manifest: dict[str, Any],
           digest: snapshot_io.BackgroundSha256, order: list[str]) -> dict[str, Any]:
    stage = folder.stage()
    for name in names:
        (stage / name).mkdir()
        for split in SPLITS:
            with open(stage / name / f"{split}.jsonl", "wb", buffering=1 << 20) as handle:
                handle.writelines(map(lines.__getitem__, mixes[name].rows[split].tolist()))
    if fresh is not None:
        (stage / FRESH_DIR).mkdir()
        with open(stage / FRESH_DIR / "test.jsonl", "wb", buffering=1 << 20) as handle:
            handle.writelines(map(lines.__getitem__, fresh.rows.tolist()))
    manifest["input"]["sha256"] = digest.result()
    return folder.commit(manifest, order)


def summary(result: BuildResult) -> str:
    manifest = result.manifest
    records = manifest["records"]
    lines = [f"read {records['lines']:,} lines of {manifest['input']['path']}"]
    for category, counts in records["by_category"].items():
        lines.append(f"  {category:7s} {counts['kept']:>9,} kept of {counts['matched']:,} "
                     f"(control {counts['control']}, withdrawn {counts['withdrawn']:,})")
    for category, dropped in records["downsampled_out"].items():
        lines.append(f"  {category}: {dropped:,} records down-sampled away")
    bad = {reason: n for reason, n in manifest["skipped"].items() if n}
    lines.append("skipped (bad input): " + (", ".join(f"{r} {n:,}" for r, n in bad.items())
                                            if bad else "none"))
    if "truncated_line" in records:
        lines.append(f"  truncated input: line {records['truncated_line']:,}, the last, ends "
                     "in the middle of a record; is the download complete?")
    lines.append(f"{'set':5s} {'train':>9s} {'validation':>11s} {'test':>9s}")
    for name, info in manifest["sets"].items():
        splits = info["splits"]
        lines.append(f"{name:5s} " + " ".join(
            f"{splits[s]['total']:>{w},}" for s, w in zip(SPLITS, (9, 11, 9))))
        for short in info["shortfalls"]:
            lines.append(f"      short: {short['split']} wanted {short['requested']:,} "
                         f"{short['part']}, only {short['taken']:,} exist")
    if "fresh" in manifest:
        fresh = manifest["fresh"]
        moved = fresh["moved_from"]
        lines.append(f"fresh: {fresh['records']:,} hep-th records first versioned after "
                     f"{fresh['after']} -> {fresh['path']} (moved out of train {moved['train']:,}, "
                     f"validation {moved['validation']:,}, test {moved['test']:,} of every set)")
        verdicts = fresh["verdicts"]
        lines.append(f"       of {sum(verdicts.values()):,} hep-th records: "
                     f"{verdicts['ambiguous_month']:,} in the cut's month known only by id month "
                     f"(kept, not fresh), {verdicts['unparseable']:,} with no parseable date (kept, "
                     "not fresh)")
        if not fresh["records"]:
            lines.append("       no record is fresh: hepth-fresh/test.jsonl is empty; choose an "
                         "earlier --fresh-after or a newer snapshot")
    kept = [name for name in result.merged.get("sets", {}) if name not in manifest["sets"]]
    if kept:
        lines.append(f"kept from earlier builds: {', '.join(kept)}")
    if result.merged.get("interrupted"):
        lines.append(f"warning: {', '.join(result.merged['interrupted'])} were being replaced "
                     "when an earlier build was killed; rebuild them (--sets)")
    lines.append(f"wrote {result.out} (manifest.json, sha256 {manifest['input']['sha256'][:12]}…)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def _build_command(args) -> int:
    config = load_config(args.config)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    result = build(args.snapshot, args.out, sets=sets, seed=args.seed, config=config,
                   progress=False if args.no_progress else None, fresh_after=args.fresh_after)
    print(summary(result))
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="curate arXiv metadata into the training sets",
                          description="Curate the Kaggle arXiv metadata snapshot.")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    build_parser = actions.add_parser(
        "build", help="build the ten dataset mixes s1..s10 from the snapshot",
        description="Stream the Kaggle arXiv metadata snapshot (JSON lines, .gz or .zip) and "
        "write <out>/<set>/{train,validation,test}.jsonl plus <out>/manifest.json, with the "
        "reference study's rules (docs/reference.md, section Curation) as defaults.")
    build_parser.add_argument("--snapshot", required=True, type=Path,
                              help="arxiv-metadata-oai-snapshot.json (or .gz / .zip)")
    build_parser.add_argument("--out", required=True, type=Path,
                              help="output folder; a previous build's keeps its other sets and files, "
                              "only the set folders written are replaced")
    build_parser.add_argument("--sets", default=None,
                              help="comma-separated sets to write, e.g. s1,s3 (default: all)")
    build_parser.add_argument("--seed", type=int, default=None,
                              help="seed of splits, shuffles and down-sampling (default: 42)")
    build_parser.add_argument("--config", type=Path, default=None,
                              help=f"set definitions (default: {DEFAULT_CONFIG.name} shipped "
                              "with feyntune)")
    build_parser.add_argument("--fresh-after", default=None, metavar="YYYY-MM-DD",
                              help="also write <out>/hepth-fresh/test.jsonl: the hep-th records "
                              "first versioned after this date (YYYY-MM: after that month), "
                              "moved out of every split of every set, for contamination-free "
                              "evaluation (task hepth_completion_fresh)")
    build_parser.add_argument("--no-progress", action="store_true",
                              help="no progress bar (it is shown on a terminal by default)")
    build_parser.set_defaults(func=_build_command)
