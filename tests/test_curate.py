"""`feyntune data build` on the real arXiv sample: every curation rule of docs/reference.md
(section Curation).

The expected splits and mixes are recomputed independently by tests/curate_reference.py, the way
the reference study worked (pandas and datasets, no `finetune`); tests/test_curate_mixes.py does
the same on a larger snapshot where no mix runs short, tests/test_curate_output.py covers the
output folder.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import curate_reference as reference
import numpy as np
import pytest
import yaml
from datasets import Dataset

from finetune import curate
from harness import cli
from harness.ground.abstracts import CONTROL_IDS
from harness.ground.errors import FeynTuneError

SPLITS = ("train", "validation", "test")
SETS = tuple(f"s{i}" for i in range(1, 11))
CATEGORIES = ("hep-th", "hep-ph", "gr-qc", "q-bio", "cs")


# ---------------------------------------------------------------- helpers
def run_build(snapshot, out, **kwargs):
    return curate.build(snapshot, out, progress=False, **kwargs)


def ids_of(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["id"] for line in handle]


def records_of(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def file_bytes(folder: Path, names=SETS) -> dict[str, bytes]:
    return {f"{name}/{split}": (folder / name / f"{split}.jsonl").read_bytes()
            for name in names for split in SPLITS}


def sample_lines(sample_path) -> list[bytes]:
    return Path(sample_path).read_bytes().splitlines(keepends=True)


def primary_of(line: bytes) -> str:
    return json.loads(line)["categories"].split()[0]


def reference_splits(path, seed=42):
    """Per-category splits as the reference computed them (independent of finetune.curate)."""
    return reference.base_datasets(reference.load_frame(path), seed)


@pytest.fixture(scope="module")
def sample_build(sample_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("curate") / "sets"
    result = run_build(sample_path, out)
    return out, result.manifest


# ---------------------------------------------------------------- rules
def test_primary_category_selects_records(sample_build):
    out, manifest = sample_build
    by_cat = manifest["records"]["by_category"]
    assert {c: by_cat[c]["matched"] for c in CATEGORIES} == {
        "hep-th": 372, "hep-ph": 66, "gr-qc": 37, "q-bio": 15, "cs": 64}
    assert manifest["records"]["lines"] == 1477
    assert manifest["records"]["other_categories"] == 1477 - 372 - 66 - 37 - 15 - 64
    for split in SPLITS:
        assert {r["categories"].split()[0] for r in records_of(out / "s1" / f"{split}.jsonl")} \
            == {"hep-th"}
    s10 = [r["categories"].split()[0] for s in SPLITS for r in records_of(out / "s10" / f"{s}.jsonl")]
    assert any(p.startswith("cs.") for p in s10) and any(p.startswith("q-bio.") for p in s10)
    # A cross-listed hep-th paper with another primary category is not hep-th.
    all_ids = {i for s in SPLITS for name in SETS for i in ids_of(out / name / f"{s}.jsonl")}
    assert "0704.0081" not in all_ids  # math.QA hep-th ...


def test_withdrawn_records_are_dropped(sample_build):
    out, manifest = sample_build
    by_cat = manifest["records"]["by_category"]
    assert {c: by_cat[c]["withdrawn"] for c in CATEGORIES} == {
        "hep-th": 0, "hep-ph": 1, "gr-qc": 1, "q-bio": 1, "cs": 1}
    assert {c: by_cat[c]["kept"] for c in CATEGORIES} == {
        "hep-th": 372, "hep-ph": 65, "gr-qc": 36, "q-bio": 14, "cs": 63}
    written = {i for s in SPLITS for name in SETS for i in ids_of(out / name / f"{s}.jsonl")}
    # hep-ph (by its comments only), gr-qc, q-bio and cs withdrawn stubs of the sample.
    assert written.isdisjoint({"0704.0840", "0704.0525", "0704.0615", "0704.0213"})


def test_output_fields_and_cleaning(sample_build, sample_path):
    out, _ = sample_build
    originals = {json.loads(l)["id"]: json.loads(l) for l in sample_lines(sample_path)}
    records = [r for s in SPLITS for r in records_of(out / "s10" / f"{s}.jsonl")]
    for rec in records:
        assert list(rec) == list(curate.KAGGLE_FIELDS) + ["orig_abstract"]
        orig = originals[rec["id"]]
        assert rec["orig_abstract"] == orig["abstract"]
        assert {k: v for k, v in rec.items() if k not in ("abstract", "orig_abstract")} == \
            {k: v for k, v in orig.items() if k != "abstract"}
        assert "\n" not in rec["abstract"] and rec["abstract"] == rec["abstract"].strip()
    by_id = {r["id"]: r for s in SPLITS for r in records_of(out / "s1" / f"{s}.jsonl")}
    assert by_id["0704.0101"]["abstract"] == (
        "In this contribution we go through the developments that in the years 1968 to "
        "1974 led from the Veneziano model to the bosonic string.")


def test_control_papers_are_dropped_first(sample_path, tmp_path):
    controls = sorted(CONTROL_IDS)
    lines, renamed = [], []
    for line in sample_lines(sample_path):
        rec = json.loads(line)
        if rec["categories"].split()[0] == "hep-th" and len(renamed) < len(controls):
            renamed.append(rec["id"])
            rec["id"] = controls[len(renamed) - 1]
            if len(renamed) == 1:  # a withdrawn control is counted as a control (dropped first)
                rec["comments"] = "withdrawn"
            line = (json.dumps(rec) + "\n").encode()
        lines.append(line)
    snapshot = tmp_path / "with-controls.jsonl"
    snapshot.write_bytes(b"".join(lines))
    manifest = run_build(snapshot, tmp_path / "out", sets=["s1"]).manifest
    counts = manifest["records"]["by_category"]["hep-th"]
    assert (counts["control"], counts["withdrawn"], counts["kept"]) == (5, 0, 367)
    written = {i for s in SPLITS for i in ids_of(tmp_path / "out" / "s1" / f"{s}.jsonl")}
    assert written.isdisjoint(CONTROL_IDS) and len(written) == 367


def test_split_ids_and_sizes_equal_datasets_train_test_split(sample_build, sample_path):
    out, manifest = sample_build
    # 372 hep-th: floor(0.7 * 372) = 260 train; the other 112 halve into 56 / 56.
    assert [manifest["sets"]["s1"]["splits"][s]["total"] for s in SPLITS] == [260, 56, 56]
    reference = reference_splits(sample_path)
    for split in SPLITS:
        assert ids_of(out / "s1" / f"{split}.jsonl") == list(reference["hep-th"][split]["id"])


def test_every_mix_equals_the_reference_composition(sample_build, sample_path):
    out, _ = sample_build
    expected = reference.mix_ids(sample_path)
    for name in SETS:
        for split in SPLITS:
            assert ids_of(out / name / f"{split}.jsonl") == expected[name][split], (name, split)


def test_mix_counts_and_shortfalls_on_the_sample(sample_build):
    _, manifest = sample_build
    sets = manifest["sets"]
    for split in SPLITS:
        s1 = sets["s1"]["splits"][split]["by_category"]["hep-th"]
        s2 = sets["s2"]["splits"][split]["by_category"]
        assert sets["s3"]["splits"][split]["by_category"] == {"hep-th": s1, **s2}
        k = int(0.15 * s1)
        s6 = sets["s6"]["splits"][split]
        assert s6["by_category"] == {"hep-th": s1 - k, "hep-ph": k} and s6["total"] == s1
    # s2 is one 70/15/15 split of the 101 hep-ph + gr-qc records: 70 / 15 / 16.
    assert [sets["s2"]["splits"][s]["total"] for s in SPLITS] == [70, 15, 16]
    # The sample's 36 gr-qc records cannot give s4/s5 their 15%: taken and reported.
    assert sets["s4"]["splits"]["test"]["by_category"] == {"hep-th": 40, "hep-ph": 8, "gr-qc": 6}
    assert {"split": "test", "part": "gr-qc", "requested": 8, "taken": 6} in \
        sets["s4"]["shortfalls"]
    assert sets["s6"]["shortfalls"] == []
    # s9 would need more hep-ph/gr-qc than exist (hep-th outnumbers them): all are taken.
    for split in SPLITS:
        assert sets["s9"]["splits"][split]["by_category"] == {
            "hep-ph": sets["s8"]["splits"][split]["by_category"]["hep-ph"],
            "gr-qc": sets["s7"]["splits"][split]["by_category"]["gr-qc"]}
    assert len(sets["s9"]["shortfalls"]) == 6


def test_builds_are_byte_identical_and_subsets_match(sample_build, sample_path, tmp_path):
    out, _ = sample_build
    again = tmp_path / "again"
    run_build(sample_path, again)
    assert file_bytes(again) == file_bytes(out)
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    only = tmp_path / "only-s3"
    manifest = run_build(sample_path, only, sets=["s3"]).manifest
    assert sorted(p.name for p in only.iterdir() if not p.name.startswith(".")) == \
        ["manifest.json", "s3"]
    assert list(manifest["sets"]) == ["s3"]
    assert file_bytes(only, ["s3"]) == file_bytes(out, ["s3"])


def test_seed_changes_the_split(sample_path, tmp_path):
    manifest = run_build(sample_path, tmp_path / "seed7", sets=["s1"], seed=7).manifest
    assert manifest["seed"] == 7
    reference = reference_splits(sample_path, seed=7)
    assert ids_of(tmp_path / "seed7" / "s1" / "train.jsonl") == \
        list(reference["hep-th"]["train"]["id"])
    assert ids_of(tmp_path / "seed7" / "s1" / "train.jsonl") != \
        list(reference_splits(sample_path)["hep-th"]["train"]["id"])


@pytest.mark.parametrize("n", range(9))
def test_tiny_categories_split_without_error(n):
    split = curate.split_rows(np.arange(n))
    assert sorted(np.concatenate([split[s] for s in SPLITS]).tolist()) == list(range(n))
    if n >= 4:  # datasets itself accepts these sizes: same rows
        rows = Dataset.from_dict({"i": list(range(n))})
        first = rows.train_test_split(train_size=0.7, seed=42, shuffle=True)
        second = first["test"].train_test_split(test_size=0.5, seed=42)
        assert split["train"].tolist() == first["train"]["i"]
        assert split["validation"].tolist() == second["train"]["i"]
        assert split["test"].tolist() == second["test"]["i"]


# ---------------------------------------------------------------- bad input
def test_bad_lines_are_skipped_and_counted(sample_build, sample_path, tmp_path, capsys):
    lines = sample_lines(sample_path)
    hepth = next(line for line in lines if primary_of(line) == "hep-th")
    rec = json.loads(hepth)

    def variant(**changes) -> bytes:
        new = {**rec, "id": f"bad.{len(changes)}.{sorted(changes)}", **changes}
        return (json.dumps(new) + "\n").encode()

    no_id = {k: v for k, v in rec.items() if k != "id"}
    bad = [
        b"\n",                                                       # blank_line
        b"{not json\n",                                              # malformed_json
        b'[{"categories": "hep-th"}]\n',                             # malformed_json
        hepth.replace(b'"title": "', b'"title": "\xff\xfe', 1),      # invalid_utf8
        variant(abstract=None),                                      # missing_field
        (json.dumps(no_id) + "\n").encode(),                         # missing_field
        variant(comments=12),                                        # missing_field
        variant(abstract="\n   \n "),                                # empty_abstract
        variant(title="\ud800"),                                     # invalid_unicode
        hepth,                                                       # duplicate_id
        hepth[: len(hepth) // 2],                                    # truncated_input (last)
    ]
    assert b"\xff" in bad[3]
    snapshot = tmp_path / "bad.jsonl"
    snapshot.write_bytes(b"".join(lines + bad))
    out = tmp_path / "out"
    assert cli.main(["data", "build", "--snapshot", str(snapshot), "--out", str(out),
                     "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == {
        "blank_line": 1, "invalid_utf8": 1, "malformed_json": 2, "missing_field": 3,
        "invalid_unicode": 1, "empty_abstract": 1, "duplicate_id": 1, "truncated_input": 1}
    printed = capsys.readouterr().out
    assert "malformed_json 2" in printed and "duplicate_id 1" in printed
    assert f"truncated input: line {len(lines) + len(bad):,}" in printed
    # Nothing of the bad lines reaches the sets: they equal the clean build byte for byte.
    assert file_bytes(out) == file_bytes(sample_build[0])


def test_compressed_snapshots(sample_build, sample_path, tmp_path):
    raw = Path(sample_path).read_bytes()
    gz = tmp_path / "arxiv.json.gz"
    gz.write_bytes(gzip.compress(raw))
    zipped = tmp_path / "arxiv.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arxiv-metadata-oai-snapshot.json", raw)
    for path in (gz, zipped):
        out = tmp_path / path.name.replace(".", "-")
        manifest = run_build(path, out, sets=["s1", "s10"]).manifest
        assert file_bytes(out, ["s1", "s10"]) == file_bytes(sample_build[0], ["s1", "s10"])
        assert manifest["input"]["size_bytes"] == path.stat().st_size
        assert manifest["input"]["compression"] == ("gzip" if path is gz else "zip")


def test_corrupt_compressed_snapshots_fail_clearly(sample_path, tmp_path):
    data = gzip.compress(Path(sample_path).read_bytes())
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeynTuneError, match="truncated"):
        run_build(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.json", b"{}\n")
        archive.writestr("b.json", b"{}\n")
    with pytest.raises(FeynTuneError, match="one JSON-lines file"):
        run_build(two, tmp_path / "out")


def test_input_hash_and_size_in_manifest(sample_build, sample_path):
    import hashlib

    _, manifest = sample_build
    assert manifest["input"]["sha256"] == hashlib.sha256(Path(sample_path).read_bytes()).hexdigest()
    assert manifest["input"]["size_bytes"] == Path(sample_path).stat().st_size
    assert manifest["seed"] == 42 and manifest["feyntune_version"]


# ---------------------------------------------------------------- CLI, atomic output
def test_cli_errors_exit_2_with_a_message(sample_path, tmp_path, capsys):
    def run(*argv):
        code = cli.main(["data", "build", *argv, "--no-progress"])
        return code, capsys.readouterr().err

    code, err = run("--snapshot", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"))
    assert code == 2 and "not found" in err and "Traceback" not in err
    hepph = tmp_path / "hepph.jsonl"
    hepph.write_bytes(b"".join(l for l in sample_lines(sample_path) if primary_of(l) == "hep-ph"))
    code, err = run("--snapshot", str(hepph), "--out", str(tmp_path / "o"))
    assert code == 2 and "no usable hep-th record" in err
    code, err = run("--snapshot", str(sample_path), "--out", str(tmp_path / "o"), "--sets", "s1,s11")
    assert code == 2 and "unknown set(s) s11" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = run("--snapshot", str(sample_path), "--out", str(foreign))
    assert code == 2 and "not a `feyntune data build` output" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "o").exists()


def test_console_script_success_and_failure(sample_path, tmp_path):
    exe = Path(sys.executable).with_name("feyntune")
    done = subprocess.run([str(exe), "data", "build", "--snapshot", str(sample_path), "--out",
                           str(tmp_path / "o"), "--sets", "s1"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "s1" in done.stdout and "260" in done.stdout
    failed = subprocess.run([str(exe), "data", "build", "--snapshot", str(tmp_path / "nope"),
                             "--out", str(tmp_path / "p")], capture_output=True, text=True,
                          check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "not found" in failed.stderr


def test_progress_bar_shows_records_per_second(sample_path, tmp_path, capsys):
    curate.build(sample_path, tmp_path / "o", sets=["s1"], progress=True)
    assert "records/s" in capsys.readouterr().err


def test_interrupted_build_leaves_the_folder_as_it_was(sample_path, tmp_path, monkeypatch):
    out = tmp_path / "sets"
    run_build(sample_path, out, sets=["s1"])
    before = file_bytes(out, ["s1"])
    manifest = (out / "manifest.json").read_bytes()

    def killed(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(curate.curate_out.OutputFolder, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        run_build(sample_path, out, sets=["s2"])
    assert file_bytes(out, ["s1"]) == before and not (out / "s2").exists()
    assert (out / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in out.iterdir()) == [".feyntune-build.lock", "manifest.json", "s1"]
    assert [p.name for p in tmp_path.iterdir()] == ["sets"]
    monkeypatch.undo()
    run_build(sample_path, out, sets=["s2"])  # s1 stays: only the sets written are replaced
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["manifest.json", "s1", "s2"]
    assert file_bytes(out, ["s1"]) == before


def test_config_is_data_and_validated(tmp_path):
    config = curate.load_config()
    assert list(config.sets) == list(SETS) and config.seed == 42
    assert config.downsample == {"cs": 200000}
    assert (config.train_size, config.validation_test_size) == (0.7, 0.5)
    order, categories = config.closure(["s10"])
    assert order == ["s10"] and categories == list(CATEGORIES)
    assert config.closure(["s4"]) == (["s2", "s4"], ["hep-th", "hep-ph", "gr-qc"])
    raw = yaml.safe_load(curate.DEFAULT_CONFIG.read_text())
    raw["sets"]["s11"] = {"kind": "union", "parts": ["hep-th", "astro-ph"]}
    bad = tmp_path / "sets.yaml"
    bad.write_text(yaml.safe_dump(raw))  # keys sorted: s10 before s3 is fine
    with pytest.raises(FeynTuneError, match="astro-ph"):
        curate.load_config(bad)
    raw["sets"]["s11"] = {"kind": "union", "parts": ["hep-th", "s12"]}
    raw["sets"]["s12"] = {"kind": "union", "parts": ["s11"]}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(FeynTuneError, match="in terms of itself"):
        curate.load_config(bad)
    del raw["sets"]["s12"]
    raw["sets"]["s11"] = {"kind": "selection", "categories": ["hep-ph", "astro-ph"]}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(FeynTuneError, match="astro-ph"):
        curate.load_config(bad)
    raw["sets"]["s11"] = {"kind": "selection"}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(FeynTuneError, match="selection s11 needs `categories`"):
        curate.load_config(bad)
    del raw["sets"]["s11"]
    bad.write_text(yaml.safe_dump(raw))
    assert curate.load_config(bad).sets == config.sets


def test_peek_primary_agrees_with_the_parsed_record(sample_path):
    for line in sample_lines(sample_path):
        peeked = curate.peek_primary(line)
        assert peeked == json.loads(line)["categories"].split()[0]
    # Uncertain layouts are left to the full parse.
    assert curate.peek_primary(b'{"categories":"hep-th math.MP"}') == "hep-th"
    assert curate.peek_primary(b'{"categories": "hep\\u002dth"}') is None
    assert curate.peek_primary(b'{"categories": null}') is None
    assert curate.peek_primary(b'{"categories": "cs.LG", "x": {"categories": "hep-th"}}') is None
    assert curate.peek_primary(b'{"id": "1", "categories": "hep-') is None
    assert curate.peek_primary(b'{"title": "a \\"categories\\": \\"hep-th\\""}') is None

