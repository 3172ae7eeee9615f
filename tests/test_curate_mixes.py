"""All ten sets equal the study's procedures, split by split and in order, on real records.

The shared sample holds too few hep-ph, gr-qc, q-bio and cs records for the mixes to be built
without shortfalls, so the snapshot here replicates its real records under re-issued ids (the
categories interleaved as in the sample) until every category has at least 300. The expected
ids come from tests/curate_reference.py, written with pandas/numpy/datasets alone.
"""

from __future__ import annotations

import json
from collections import Counter

import curate_reference as reference
import numpy as np
import pandas as pd
import pytest

from finetune import curate

SPLITS = reference.SPLITS
SETS = reference.SETS
# Lines per category (withdrawn stubs included); cs above CS_LIMIT so down-sampling happens.
TARGETS = {"hep-th": 400, "hep-ph": 440, "gr-qc": 340, "q-bio": 330, "cs": 900}
CS_LIMIT = 600


def _category(primary: str) -> str | None:
    for name in ("hep-th", "hep-ph", "gr-qc"):
        if primary == name:
            return name
    for name in ("q-bio", "cs"):
        if primary.startswith(name + "."):
            return name
    return None


@pytest.fixture(scope="module")
def big_snapshot(sample_path, tmp_path_factory):
    lines = sample_path.read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    counts: Counter = Counter()
    out = []
    copy = 0
    while any(counts[c] < n for c, n in TARGETS.items()):
        for line, record in zip(lines, records):
            category = _category(record["categories"].split()[0])
            if copy == 0:
                out.append(line)  # the sample itself, other categories included
            elif category and counts[category] < TARGETS[category]:
                out.append((json.dumps({**record, "id": f"c{copy}-{record['id']}"}) + "\n")
                           .encode())
            else:
                continue
            if category:
                counts[category] += 1
        copy += 1
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    path.write_bytes(b"".join(out))
    return path


@pytest.fixture(scope="module")
def big_build(big_snapshot, tmp_path_factory):
    config = curate.load_config()
    config = curate.CurationConfig(**{**config.__dict__, "downsample": {"cs": CS_LIMIT}})
    out = tmp_path_factory.mktemp("big-out") / "sets"
    result = curate.build(big_snapshot, out, config=config, progress=False)
    return out, result.manifest


@pytest.fixture(scope="module")
def expected(big_snapshot):
    base = reference.base_datasets(reference.load_frame(big_snapshot), cs_limit=CS_LIMIT)
    return base, reference.mixes(base)


def ids_of(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["id"] for line in handle]


def test_snapshot_has_enough_of_every_category(big_build):
    _, manifest = big_build
    kept = {c: v["kept"] for c, v in manifest["records"]["by_category"].items()}
    assert all(n >= 300 for n in kept.values()), kept
    assert manifest["records"]["downsampled_out"] == {"cs": kept["cs"] - CS_LIMIT}
    # Every procedure ran in full: no request exceeded what a split holds.
    assert all(info["shortfalls"] == [] for info in manifest["sets"].values())


def test_every_set_and_split_equals_the_independent_implementation(big_build, expected):
    out, _ = big_build
    _, mixes = expected
    for name in SETS:
        for split in SPLITS:
            assert ids_of(out / name / f"{split}.jsonl") == list(mixes[name][split]["id"]), \
                (name, split)


def test_manifest_composition_by_category(big_build, expected):
    _, manifest = big_build
    _, mixes = expected
    for name in SETS:
        for split in SPLITS:
            primaries = [c.split()[0].split(".")[0] for c in mixes[name][split]["categories"]]
            assert manifest["sets"][name]["splits"][split] == {
                "total": len(primaries), "by_category": {
                    c: n for c in ("hep-th", "hep-ph", "gr-qc", "q-bio", "cs")
                    if (n := primaries.count(c))}}, (name, split)


def test_mix_sizes_follow_the_study(big_build, expected):
    _, manifest = big_build
    base, _ = expected
    sets = manifest["sets"]
    for split in SPLITS:
        n = {c: len(base[c][split]) for c in ("hep-th", "hep-ph", "gr-qc", "q-bio", "cs")}
        size = {name: sets[name]["splits"][split]["total"] for name in SETS}
        # s2 is one split of the union, not the union of splits (the sizes round apart).
        assert size["s2"] == len(base["s2"][split])
        assert size["s3"] == n["hep-th"] + size["s2"]
        assert size["s4"] == size["s5"] == size["s6"] == size["s9"] == n["hep-th"]
        k15 = int(0.15 * n["hep-th"])
        assert sets["s4"]["splits"][split]["by_category"] == {
            "hep-th": n["hep-th"] - 2 * k15, "hep-ph": k15, "gr-qc": k15}
        assert sets["s10"]["splits"][split]["by_category"]["cs"] == \
            n["gr-qc"] + n["hep-ph"] - n["q-bio"]
        assert size["s10"] == n["hep-th"] + n["gr-qc"] + n["hep-ph"]


def test_s2_is_one_selection_not_the_union_of_splits(big_build, expected):
    out, _ = big_build
    base, _ = expected
    s2_train = set(ids_of(out / "s2" / "train.jsonl"))
    union = set(base["hep-ph"]["train"]["id"]) | set(base["gr-qc"]["train"]["id"])
    assert s2_train != union and len(s2_train) == len(base["s2"]["train"])


def test_cs_downsampling_is_pandas_sample():
    rows = np.arange(1000, 3500)
    frame = pd.DataFrame({"row": rows})
    drawn = frame.sample(n=600, replace=False, random_state=42)["row"].to_numpy()
    assert curate.downsample_rows(rows, 600, 42).tolist() == drawn.tolist()
    assert curate.downsample_rows(rows[:600], 600, 42).tolist() == \
        frame.iloc[:600].sample(n=600, replace=False, random_state=42)["row"].tolist()
    assert curate.downsample_rows(rows[:10], 600, 42).tolist() == rows[:10].tolist()
