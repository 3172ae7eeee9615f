"""Each rule of harness/ground/abstracts.py (docs/reference.md, Records and Prompt split) on real sample records and edges."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest

from harness.ground.abstracts import (
    CONTROL_IDS,
    clean_abstract,
    in_category,
    is_control,
    is_withdrawn,
    primary_category,
    split_prompt,
)

CURATED = ("hep-th", "hep-ph", "gr-qc", "q-bio", "cs")


@pytest.fixture(scope="module")
def records(sample_path):
    with open(sample_path, encoding="utf-8") as handle:
        return {rec["id"]: rec for rec in map(json.loads, handle)}


# ---------------------------------------------------------------- primary category
def test_primary_category_is_first_token():
    assert primary_category("hep-th astro-ph gr-qc") == "hep-th"
    assert primary_category("math.QA hep-th math-ph") == "math.QA"
    assert primary_category("  cs.LG\tstat.ML") == "cs.LG"
    assert primary_category("") == ""
    assert primary_category(None) == ""


def test_in_category_exact_or_archive_prefix():
    assert in_category("hep-th", "hep-th")
    assert not in_category("hep-ph", "hep-th")
    assert not in_category("hep-thx", "hep-th")
    assert in_category("cs.LG", "cs") and in_category("cs", "cs")
    assert in_category("q-bio.PE", "q-bio")
    assert not in_category("csx.LG", "cs")
    # "physics." contains "cs." as a substring; only the prefix before the dot counts.
    assert not in_category("physics.gen-ph", "cs")
    assert not in_category("", "hep-th")


def test_sample_composition_by_primary_category(records):
    """The counts the sample's README states, from the primary category alone."""
    tally = Counter()
    for rec in records.values():
        primary = primary_category(rec["categories"])
        tally.update(c for c in CURATED if in_category(primary, c))
    assert tally == {"hep-th": 372, "hep-ph": 66, "gr-qc": 37, "q-bio": 15, "cs": 64}
    # hep-th as a cross-list does not make a record hep-th.
    assert primary_category(records["0704.0081"]["categories"]) == "math.QA"
    assert primary_category(records["0704.0144"]["categories"]) == "hep-th"


# ---------------------------------------------------------------- control papers
def test_control_ids_are_the_five_papers():
    assert CONTROL_IDS == {"1804.08625", "1404.0016", "1205.2086", "1209.5915", "1802.05268"}
    assert all(is_control(i) for i in CONTROL_IDS)
    assert not is_control("1804.0862")
    assert not is_control("0704.0001")


# ---------------------------------------------------------------- withdrawn
def test_withdrawn_by_comments_any_case_or_abstract_two_spellings():
    assert is_withdrawn("This paper has been WITHDRAWN", "fine")
    assert is_withdrawn(None, "This paper has been withdrawn.")
    assert is_withdrawn(None, "Withdrawn.")
    # The abstract test is case-sensitive in exactly "Withdrawn"/"withdrawn".
    assert not is_withdrawn(None, "WITHDRAWN")
    assert not is_withdrawn("12 pages", "We study strings.")
    assert not is_withdrawn(None, None)


def test_withdrawn_stubs_of_the_sample(records):
    withdrawn = {i for i, r in records.items() if is_withdrawn(r["comments"], r["abstract"])}
    assert withdrawn == {
        "0704.0156", "0704.0213", "0704.0374", "0704.0480", "0704.0525", "0704.0615",
        "0704.0644", "0704.0840", "0906.3336", "2101.10016",
    }
    # Withdrawn by the comments alone: the abstract is an ordinary one.
    hepph = records["0704.0840"]
    assert "withdrawn" not in hepph["abstract"].lower()
    assert is_withdrawn(hepph["comments"], hepph["abstract"])


# ---------------------------------------------------------------- cleaning
def test_clean_abstract_real_records(records):
    assert clean_abstract(records["0704.0101"]["abstract"]) == (
        "In this contribution we go through the developments that in the years 1968 to "
        "1974 led from the Veneziano model to the bosonic string.")
    # A newline and the indentation after it become one space; the hard wraps go.
    assert clean_abstract(records["0704.0525"]["abstract"]) == (
        "This paper has been removed by arXiv administrators because it plagiarizes "
        "gr-qc/0410004, gr-qc/0603075, and others. This paper also has excessive overlap with "
        "the following papers also written by the authors or their collaborators: "
        "gr-qc/0608111, and others.")


def test_clean_abstract_edges():
    assert clean_abstract("a\n\n   b") == "a b"
    assert clean_abstract("a\n\tb") == "a b"
    assert clean_abstract("  a  b  ") == "a  b"  # only newline runs are collapsed
    assert clean_abstract("a \nb") == "a  b"      # whitespace before a newline stays
    assert clean_abstract("\n  \n ") == ""


def test_clean_abstract_keeps_every_character_but_whitespace(records):
    for rec in records.values():
        cleaned = clean_abstract(rec["abstract"])
        assert "\n" not in cleaned and cleaned == cleaned.strip()
        assert re.sub(r"\s", "", cleaned) == re.sub(r"\s", "", rec["abstract"])


# ---------------------------------------------------------------- prompt / truth
def test_split_prompt_sentences():
    assert split_prompt("One. Two! Three? Four.") == ("One. Two!", "Three? Four.")
    assert split_prompt("One. Two. Three.") == ("One. Two.", "Three.")
    assert split_prompt("One.  Two.") == ("One.", "Two.")


def test_split_prompt_single_sentence_by_words():
    assert split_prompt("a b c d e") == ("a b c", "d e")
    assert split_prompt("a b c d") == ("a b", "c d")
    assert split_prompt("word") == ("word", "")
    assert split_prompt("") == ("", "")
    assert split_prompt("  Trailing space. ") == ("Trailing", "space.")


def test_split_prompt_on_real_hepth_abstracts(records):
    for rec in records.values():
        if primary_category(rec["categories"]) != "hep-th":
            continue
        abstract = clean_abstract(rec["abstract"])
        prompt, truth = split_prompt(abstract)
        sentences = re.split(r"(?<=[.!?])\s+", abstract)
        parts = sentences if len(sentences) > 1 else abstract.split()
        assert prompt.split() + truth.split() == abstract.split()
        head = math.ceil(len(parts) / 2)
        assert prompt == " ".join(parts[:head])
    prompt, truth = split_prompt(clean_abstract(records["0704.0101"]["abstract"]))
    # 24 words: (24 + 1) // 2 = 12 go to the prompt.
    assert prompt == "In this contribution we go through the developments that in the years"
    assert truth == "1968 to 1974 led from the Veneziano model to the bosonic string."
