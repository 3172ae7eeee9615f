"""The documents of hepth_completion_fresh: the hepth_completion documents first versioned after
a cut date (harness/ground/freshness.py says how a record is dated), read for the lm-eval hooks in
tasks/hepth_completion/fresh.py.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.evaluate import documents
from harness.ground.errors import FeynTuneError
from harness.ground.freshness import FirstVersion, FreshnessTally, first_version, parse_cut
from harness.ground.jsonl import read_json
from harness.ground.subtasks import FRESH_DIR


@dataclass(frozen=True)
class FreshRecords:
    records: tuple[dict, ...]   # the fresh records, in source order
    first: tuple[FirstVersion, ...]
    cut: dt.date                # documents are first versioned after this day
    where: str                  # what was read, for messages
    tally: FreshnessTally
    source: Any                 # the harness.evaluate.documents.Source the records came from


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
    data = read_json(manifest, "build manifest")
    fresh = data.get("fresh") if isinstance(data, dict) else data
    if fresh is not None and not isinstance(fresh, dict):
        raise FeynTuneError(f"cannot read the build manifest {manifest}: it is not the manifest "
                            "of a `feyntune data build`")
    after = (fresh or {}).get("after")
    return path, (parse_cut(after, f"{manifest} fresh.after") if after else None)


def load_fresh_records(metadata: dict, cwd: str | os.PathLike | None = None) -> FreshRecords:
    """The records of hepth_completion_fresh, from lm-eval task metadata.

    `hepth_fresh_data`: a `feyntune data build --fresh-after` folder (its hepth-fresh/test.jsonl,
    cut date from its manifest), its hepth-fresh folder, or a JSON-lines file; `hepth_after`:
    a cut date applied to that file, or -- without `hepth_fresh_data` -- to the standard
    `hepth_data` source (harness/evaluate/documents.py). Either way only records whose first version is
    after the cut are kept, and the cut is the later of the build's and `hepth_after`.
    """
    fresh_data, after = metadata.get("hepth_fresh_data"), metadata.get("hepth_after")
    after = parse_cut(after, "metadata hepth_after") if after not in (None, "") else None
    if fresh_data not in (None, ""):
        try:
            path, build_cut = _build_cut(documents.user_path(fresh_data, cwd))
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


def fresh_dataset(metadata: dict, build) -> Any:
    """lm-eval dataset of a fresh subtask: `build` (harness.evaluate.documents.generation_dataset or
    perplexity_dataset) run on the fresh records, each document also carrying its
    `first_version`, where that date came from, and the cut `fresh_after`."""
    fresh = load_fresh_records(metadata)
    dataset = build(metadata, documents.documents_from(list(fresh.records), fresh.where, fresh.source))
    by_key = {documents.document_id(r, i): f for i, (r, f) in enumerate(zip(fresh.records, fresh.first))}
    for split in list(dataset):
        part = dataset[split]
        firsts = [by_key[key] for key in part["id"]]
        part = part.add_column("first_version", [f.as_text() for f in firsts])
        part = part.add_column("first_version_source", [f.source for f in firsts])
        dataset[split] = part.add_column("fresh_after", [fresh.cut.isoformat()] * len(firsts))
    return dataset
