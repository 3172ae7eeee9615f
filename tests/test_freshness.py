"""Contamination-aware evaluation (issue 9): first-version dates, the fresh cut in
`feyntune data build --fresh-after`, the model cut-off file, on the real arXiv sample.

Expectations are recomputed independently where it matters: first-version days with the
standard library's RFC 2822 parser, the sample's 2026 records by their id prefix.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from pathlib import Path

import pytest

from finetune import curate
from harness import cli
from harness.evaluate import contamination
from harness.ground import freshness
from harness.ground.abstracts import clean_abstract, is_control, is_withdrawn, primary_category
from harness.ground.errors import FeynTuneError
from harness.ground.freshness import (
    FirstVersion,
    classify,
    first_version,
    id_month,
    parse_created,
    parse_cut,
)

SPLITS = ("train", "validation", "test")
SETS = tuple(f"s{i}" for i in range(1, 11))
D = dt.date


def records_of(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def ids_of(path: Path) -> list[str]:
    return [r["id"] for r in records_of(path)]


# ---------------------------------------------------------------- date parsing
@pytest.mark.parametrize("text, expected", [
    ("Mon, 2 Apr 2007 19:18:42 GMT", D(2007, 4, 2)),
    ("Sat, 31 Mar 2007 02:26:18 GMT", D(2007, 3, 31)),
    ("Tue, 1 Nov 1994 18:57:48 GMT", D(1994, 11, 1)),
    ("Thu, 29 Feb 2024 23:59:59 GMT", D(2024, 2, 29)),
    ("2 Apr 2007 19:18:42 GMT", D(2007, 4, 2)),             # weekday is optional in RFC 2822
    ("Sat, 31 Mar 2007 23:30:00 -0100", D(2007, 4, 1)),     # an offset moves it to the UTC day
    ("Sun, 1 Apr 2007 00:30:00 +0200", D(2007, 3, 31)),
    ("Fri, 29 Feb 2023 10:00:00 GMT", None),                # no such day
    ("Mon, 2 Foo 2007 19:18:42 GMT", None),
    ("Mon, 2 Apr 07 19:18:42 GMT", None),                   # two-digit year: not guessed
    ("2007-04-02", None), ("", None), (None, None), (20070402, None),
])
def test_parse_created(text, expected):
    assert parse_created(text) == expected


def test_parse_created_agrees_with_the_standard_library_on_the_sample(sample_path):
    created = [r["versions"][0]["created"] for r in records_of(sample_path) if r["versions"]]
    assert len(created) == 1177
    for text in created:
        assert parse_created(text) == email.utils.parsedate_to_datetime(text).date(), text


@pytest.mark.parametrize("arxiv_id, expected", [
    ("0704.0001", D(2007, 4, 1)),
    ("2608.12345", D(2026, 8, 1)),
    ("2607.20603v2", D(2026, 7, 1)),
    ("arXiv:1501.00001", D(2015, 1, 1)),
    ("hep-th/9503124", D(1995, 3, 1)),
    ("hep-th/9108001", D(1991, 8, 1)),       # yy >= 91: 19yy
    ("hep-th/0001001", D(2000, 1, 1)),       # else 20yy
    ("math.AG/0601001v3", D(2006, 1, 1)),    # old style with a subject class
    ("cs/0703001", D(2007, 3, 1)),           # the last old-style month
    ("hep-th/0704001", None),                # old style ended March 2007
    ("0703.1234", None),                     # new style began April 2007
    ("1513.00001", None), ("2600.00001", None), ("hep-th/9513001", None),
    ("9503124", None), ("hep-th/95031", None), ("foo", None), ("", None), (None, None),
])
def test_id_month(arxiv_id, expected):
    assert id_month(arxiv_id) == expected


@pytest.mark.parametrize("text, expected", [
    ("2023-12-31", D(2023, 12, 31)), ("2023-12", D(2023, 12, 31)), ("2024-02", D(2024, 2, 29)),
    ("2023-02", D(2023, 2, 28)), (D(2020, 5, 6), D(2020, 5, 6)),
])
def test_parse_cut(text, expected):
    assert parse_cut(text) == expected


@pytest.mark.parametrize("text", ["2024-13-01", "2023-02-30", "2023/12/31", "Dec 2023", "", None, "2023-13"])
def test_parse_cut_rejects(text):
    with pytest.raises(FeynTuneError, match="not a date"):
        parse_cut(text)


def test_first_version_sources_in_order():
    full = {"id": "0704.0002", "versions": [{"version": "v1", "created": "Sat, 31 Mar 2007 02:26:18 GMT"}],
            "update_date": "2008-12-13"}
    assert first_version(full) == FirstVersion(D(2007, 3, 31), "day", "versions")
    # an unreadable versions[0] falls back to the id, then to update_date; never a guess
    assert first_version({**full, "versions": [{"created": "soon"}]}) == FirstVersion(D(2007, 4, 1), "month", "id")
    assert first_version({**full, "versions": []}) == FirstVersion(D(2007, 4, 1), "month", "id")
    assert first_version({**full, "versions": None, "id": "local-1"}) == FirstVersion(D(2008, 12, 13), "day", "update_date")
    assert first_version({"id": "local-1", "versions": [], "update_date": None}) == freshness.UNPARSEABLE
    assert first_version({"id": "local-1", "update_date": "13/12/2008"}) == freshness.UNPARSEABLE


def test_classify_month_precision():
    cut = D(2026, 7, 15)
    assert classify(FirstVersion(D(2026, 7, 16), "day", "versions"), cut) == "fresh"
    assert classify(FirstVersion(D(2026, 7, 15), "day", "versions"), cut) == "not_fresh"  # strictly later
    assert classify(FirstVersion(D(2026, 8, 1), "month", "id"), cut) == "fresh"
    assert classify(FirstVersion(D(2026, 7, 1), "month", "id"), cut) == "ambiguous_month"
    assert classify(FirstVersion(D(2026, 6, 1), "month", "id"), cut) == "not_fresh"
    # a cut on the last day of a month: the next month is wholly later
    assert classify(FirstVersion(D(2026, 8, 1), "month", "id"), D(2026, 7, 31)) == "fresh"
    assert classify(freshness.UNPARSEABLE, cut) == "unparseable"


def test_every_sample_record_is_dated(sample_path):
    records = records_of(sample_path)
    firsts = [first_version(r) for r in records]
    assert sum(f.source == "versions" for f in firsts) == 1177
    new = [(r, f) for r, f in zip(records, firsts) if not r["versions"]]
    # the July-August 2026 listings: no versions, dated by their id's month
    assert len(new) == 300
    assert all(f.source == "id" and f.precision == "month" and f.date in (D(2026, 7, 1), D(2026, 8, 1))
               and r["id"][:4] == f.date.strftime("%y%m") for r, f in new)
    # byte-exact Kaggle records: the id's month is v1's month or the next (late submissions)
    for r, f in zip(records, firsts):
        if r["id"].startswith("0704."):
            months = (f.date.year * 12 + f.date.month) - (2007 * 12 + 4)
            assert months in (0, -1), r["id"]


# ---------------------------------------------------------------- the cut in `feyntune data build`
def expected_fresh_ids(sample_path, cut: dt.date) -> set[str]:
    """Curated hep-th records first versioned after `cut`, without harness.ground.freshness."""
    out = set()
    for r in records_of(sample_path):
        if primary_category(r["categories"]) != "hep-th" or is_control(r["id"]) \
                or is_withdrawn(r.get("comments"), r["abstract"]):
            continue
        if r["versions"]:
            day = email.utils.parsedate_to_datetime(r["versions"][0]["created"]).date()
            fresh = day > cut
        else:
            first_of_month = D(2000 + int(r["id"][:2]), int(r["id"][2:4]), 1)
            fresh = first_of_month > cut
        if fresh:
            out.add(r["id"])
    return out


@pytest.fixture(scope="module")
def builds(sample_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    plain = curate.build(sample_path, root / "plain", progress=False)
    cut = curate.build(sample_path, root / "cut", progress=False, fresh_after="2024-12-31")
    return root, plain.manifest, cut.manifest


def test_fresh_split_holds_exactly_the_newer_hepth_records(builds, sample_path):
    root, _, manifest = builds
    fresh = records_of(root / "cut" / "hepth-fresh" / "test.jsonl")
    expected = expected_fresh_ids(sample_path, D(2024, 12, 31))
    assert len(expected) == 300
    assert sorted(r["id"] for r in fresh) == sorted(expected)
    assert len({r["id"] for r in fresh}) == len(fresh)
    # cleaned by the same rules, in the same record layout as every split
    for r in fresh:
        assert r["abstract"] == clean_abstract(r["orig_abstract"])
        assert list(r) == [*curate.KAGGLE_FIELDS, "orig_abstract"]
    info = manifest["fresh"]
    assert info["after"] == "2024-12-31" and info["records"] == 300
    assert info["verdicts"] == {"fresh": 300, "not_fresh": 72, "ambiguous_month": 0, "unparseable": 0}
    assert info["dates_by_source"] == {"versions": 72, "id": 300, "update_date": 0}
    assert info["fresh_first_versions"] == ["2026-07", "2026-08"]
    assert info["excluded_from_sets"] == list(SETS)


def test_fresh_records_leave_every_split_of_every_set(builds):
    root, plain, manifest = builds
    fresh = set(ids_of(root / "cut" / "hepth-fresh" / "test.jsonl"))
    for name in SETS:
        for split in SPLITS:
            assert not fresh & set(ids_of(root / "cut" / name / f"{split}.jsonl")), (name, split)
    # moved_from counts what the hep-th splits lost; nothing else changes size in s1
    moved = manifest["fresh"]["moved_from"]
    assert sum(moved.values()) == 300
    for split in SPLITS:
        before = plain["sets"]["s1"]["splits"][split]["total"]
        after = manifest["sets"]["s1"]["splits"][split]["total"]
        assert before - after == moved[split]
        assert len(fresh & set(ids_of(root / "plain" / "s1" / f"{split}.jsonl"))) == moved[split]


def test_other_records_keep_their_split_and_order(builds):
    root, _, _ = builds
    fresh = set(ids_of(root / "cut" / "hepth-fresh" / "test.jsonl"))
    for split in SPLITS:
        plain = ids_of(root / "plain" / "s1" / f"{split}.jsonl")
        assert ids_of(root / "cut" / "s1" / f"{split}.jsonl") == [i for i in plain if i not in fresh]
    # non-hep-th parts are untouched: s2 (hep-ph + gr-qc) is byte-identical
    for split in SPLITS:
        assert (root / "cut" / "s2" / f"{split}.jsonl").read_bytes() == \
            (root / "plain" / "s2" / f"{split}.jsonl").read_bytes()
    # the moved records are byte-identical to their lines in the plain build
    plain_lines = {json.loads(line)["id"]: line for split in SPLITS
                   for line in (root / "plain" / "s1" / f"{split}.jsonl").read_bytes().splitlines()}
    for line in (root / "cut" / "hepth-fresh" / "test.jsonl").read_bytes().splitlines():
        assert plain_lines[json.loads(line)["id"]] == line


def test_without_the_flag_nothing_changes(builds, sample_path, tmp_path):
    root, plain, _ = builds
    assert "fresh" not in plain and not (root / "plain" / "hepth-fresh").exists()
    # a cut after every record moves nothing: every set file is byte-identical
    late = curate.build(sample_path, tmp_path / "late", progress=False, fresh_after="2100-01")
    assert late.manifest["fresh"]["records"] == 0
    assert (tmp_path / "late" / "hepth-fresh" / "test.jsonl").read_bytes() == b""
    for name in SETS:
        for split in SPLITS:
            assert (tmp_path / "late" / name / f"{split}.jsonl").read_bytes() == \
                (root / "plain" / name / f"{split}.jsonl").read_bytes()
    assert {k: v for k, v in late.manifest.items() if k != "fresh"} == \
        {**plain, "input": {**plain["input"]}}


def test_month_of_the_cut_is_ambiguous_and_stays(sample_path, tmp_path):
    result = curate.build(sample_path, tmp_path / "mid", sets=["s1"], progress=False,
                          fresh_after="2026-07-15")
    info = result.manifest["fresh"]
    fresh = ids_of(tmp_path / "mid" / "hepth-fresh" / "test.jsonl")
    assert sorted(fresh) == sorted(expected_fresh_ids(sample_path, D(2026, 7, 15)))
    assert all(i.startswith("2608.") for i in fresh) and len(fresh) == info["records"] == 176
    assert info["verdicts"]["ambiguous_month"] == 124
    in_splits = {i for split in SPLITS for i in ids_of(tmp_path / "mid" / "s1" / f"{split}.jsonl")}
    assert sum(i.startswith("2607.") for i in in_splits) == 124  # July stays in the splits


def test_unparseable_dates_are_counted_not_guessed(sample_path, tmp_path):
    lines = sample_path.read_bytes().splitlines(keepends=True)
    extra = []
    for n, (versions, update) in enumerate([([{"created": "yesterday"}], "n/a"), ([], None),
                                            (None, "2026-09-01")]):
        record = {**json.loads(lines[0]), "id": f"local-{n}", "categories": "hep-th",
                  "versions": versions, "update_date": update}
        extra.append((json.dumps(record) + "\n").encode())
    snapshot = tmp_path / "snap.jsonl"
    snapshot.write_bytes(b"".join(lines + extra))
    result = curate.build(snapshot, tmp_path / "out", sets=["s1"], progress=False,
                          fresh_after="2024-12-31")
    info = result.manifest["fresh"]
    assert info["verdicts"]["unparseable"] == 2
    assert info["dates_by_source"]["update_date"] == 1
    fresh = set(ids_of(tmp_path / "out" / "hepth-fresh" / "test.jsonl"))
    assert "local-2" in fresh and not {"local-0", "local-1"} & fresh  # dated by update_date
    in_splits = {i for split in SPLITS for i in ids_of(tmp_path / "out" / "s1" / f"{split}.jsonl")}
    assert {"local-0", "local-1"} <= in_splits


def test_cli_flag_and_bad_date(sample_path, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["data", "build", "--snapshot", str(sample_path), "--out", str(out),
                     "--sets", "s1", "--fresh-after", "2024-12-31", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "fresh: 300 hep-th records first versioned after 2024-12-31" in text
    assert json.loads((out / "manifest.json").read_text())["fresh"]["records"] == 300
    assert cli.main(["data", "build", "--snapshot", str(sample_path), "--out", str(tmp_path / "x"),
                     "--fresh-after", "31.12.2024"]) == 2
    assert "--fresh-after '31.12.2024' is not a date" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- model cut-offs
def test_cutoff_file_and_matching():
    entries = contamination.load_cutoffs()
    assert all(e.source and e.basis in ("documented", "release") for e in entries)
    assert len({e.name for e in entries}) == len(entries)
    llama = contamination.cutoff_for("meta-llama/Llama-3.1-8B")
    assert (llama.name, llama.cutoff, llama.basis) == ("llama-3.1", D(2023, 12, 31), "documented")
    assert contamination.cutoff_for("/models/Meta-Llama-3.1-8B-Instruct/").name == "llama-3.1"
    assert contamination.cutoff_for("meta-llama/Meta-Llama-3-8B").cutoff == D(2023, 3, 31)
    assert contamination.cutoff_for("HuggingFaceTB/SmolLM2-135M-Instruct").basis == "release"
    assert contamination.cutoff_for("gpt-4o-2024-08-06").month == "2023-10"
    assert contamination.cutoff_for("claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5"
    assert contamination.cutoff_for("gemini-2.5-flash").month == "2025-01"
    assert contamination.cutoff_for("some/unknown-model") is None and contamination.cutoff_for(None) is None
    assert contamination.model_name_from_args("pretrained=meta-llama/Llama-3.1-8B,peft=x,dtype=bfloat16") \
        == "meta-llama/Llama-3.1-8B"
    assert contamination.model_name_from_args({"model": "gpt-4o"}) == "gpt-4o"


def test_bad_cutoff_file(tmp_path):
    bad = tmp_path / "cutoffs.yaml"
    bad.write_text("models:\n  x: {match: ['x*'], cutoff: December}\n")
    with pytest.raises(FeynTuneError, match="not a date"):
        contamination.load_cutoffs(bad)
    bad.write_text("models:\n  x: {cutoff: 2023-12}\n")
    with pytest.raises(FeynTuneError, match="needs `match` and `cutoff`"):
        contamination.load_cutoffs(bad)


def test_cutoff_warning_on_the_sample(sample_path):
    hepth = [r for r in records_of(sample_path) if primary_category(r["categories"]) == "hep-th"]
    llama = contamination.cutoff_for("meta-llama/Llama-3.1-8B")
    counts = contamination.documents_predating([first_version(r) for r in hepth], llama)
    assert counts == {"fresh": 300, "not_fresh": 72, "ambiguous_month": 0, "unparseable": 0}
    warning = contamination.cutoff_warning("meta-llama/Llama-3.1-8B", counts, llama)
    assert "72 of 372 documents were first versioned on or before 2023-12" in warning
    assert "documented training cut-off" in warning
    assert contamination.cutoff_warning("x", {"fresh": 5, "not_fresh": 0, "ambiguous_month": 0,
                                          "unparseable": 0}, llama) is None


def test_check_samples_of_a_run(sample_path, tmp_path):
    """Samples as lm-eval writes them: standard documents hold only their id, fresh ones also
    their first version; a document in both subtasks counts once."""
    hepth = [r for r in records_of(sample_path) if primary_category(r["categories"]) == "hep-th"]
    standard = tmp_path / "samples_hepth_completion_gen_x.jsonl"
    standard.write_text("".join(json.dumps({"doc_id": i, "doc": {"id": r["id"], "abstract": r["abstract"]}}) + "\n"
                                for i, r in enumerate(hepth)))
    twin = tmp_path / "samples_hepth_completion_ppl_x.jsonl"
    twin.write_text(standard.read_text())
    check = contamination.check_samples([standard, twin], "pretrained=meta-llama/Llama-3.1-8B,peft=adapters/s1")
    assert check.is_warning and check.cutoff.name == "llama-3.1"
    # dated by id month here: the 72 older records all predate December 2023
    assert check.counts == {"fresh": 300, "not_fresh": 72, "ambiguous_month": 0, "unparseable": 0}
    assert "72 of 372 documents" in check.message

    fresh = tmp_path / "samples_hepth_completion_fresh_gen_x.jsonl"
    fresh.write_text(json.dumps({"doc": {"id": "local-1", "first_version": "2024-03-05",
                                         "first_version_source": "versions"}}) + "\n"
                     + json.dumps({"doc": {"id": "local-2", "first_version": "2023-12"}}) + "\n")
    check = contamination.check_samples([fresh], {"model": "gpt-4o"})
    assert check.counts == {"fresh": 2, "not_fresh": 0, "ambiguous_month": 0, "unparseable": 0}
    assert check.message is None and not check.is_warning
    check = contamination.check_samples([fresh], "pretrained=meta-llama/Llama-3.1-8B")
    assert check.counts["ambiguous_month"] == 1 and check.is_warning  # December 2023 itself

    unknown = contamination.check_samples([fresh], "pretrained=my/own-model")
    assert not unknown.is_warning and "no training cut-off is known for my/own-model" in unknown.message
