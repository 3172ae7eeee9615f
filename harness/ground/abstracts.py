"""The reference study's rules about one arXiv record, one function per rule.

Curation (finetune/curate.py), the lm-eval task, the providers and the leaderboard all import
these; nothing re-implements them. See docs/reference.md, sections Records and Prompt split.
"""

from __future__ import annotations

import re

# Papers the reference study held out to watch training; dropped before anything else.
CONTROL_IDS = frozenset({"1804.08625", "1404.0016", "1205.2086", "1209.5915", "1802.05268"})

_NEWLINE_RUN = re.compile(r"\n\s*")
_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+")


def primary_category(categories: str) -> str:
    """First whitespace token of the Kaggle `categories` field ('' when there is none)."""
    tokens = (categories or "").split()
    return tokens[0] if tokens else ""


def in_category(primary: str, name: str) -> bool:
    """Whether a primary category belongs to a curated category.

    `hep-th`, `hep-ph`, `gr-qc` match exactly; archives with subject classes (`cs`, `q-bio`)
    match by the prefix before the dot, so `cs.LG` is cs.
    """
    return primary == name or primary.startswith(name + ".")


def is_control(arxiv_id: str) -> bool:
    return arxiv_id in CONTROL_IDS


def is_withdrawn(comments: str | None, abstract: str | None) -> bool:
    """`comments` mentions "withdrawn" in any case, or the abstract says "Withdrawn"/"withdrawn".

    The abstract test is deliberately case-sensitive in exactly those two spellings, as in the
    reference study.
    """
    if comments and "withdrawn" in comments.lower():
        return True
    abstract = abstract or ""
    return "Withdrawn" in abstract or "withdrawn" in abstract


def clean_abstract(text: str) -> str:
    """Replace each newline and the whitespace after it by one space, then strip."""
    return _NEWLINE_RUN.sub(" ", text).strip()


def split_prompt(abstract: str) -> tuple[str, str]:
    """(prompt, ground truth) of a cleaned abstract.

    Sentences are split at `(?<=[.!?])\\s+`; with n > 1 sentences the prompt is the first
    (n + 1) // 2. A one-sentence abstract is split the same way into whitespace words. Both
    parts are joined with one space. Surrounding whitespace is ignored (cleaned abstracts have
    none), so a trailing space never makes an empty last sentence.
    """
    text = abstract.strip()
    if not text:
        return "", ""
    sentences = _SENTENCE_BOUNDARY.split(text)
    parts = sentences if len(sentences) > 1 else text.split()
    k = (len(parts) + 1) // 2
    return " ".join(parts[:k]), " ".join(parts[k:])
