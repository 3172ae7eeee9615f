"""The judge's one instruction (versioned, like the completion instruction), the text of one
request, and the check of one answer.

The rubric is the review page's: the criteria of `harness.review.criteria`, integers from
MIN_SCORE to MAX_SCORE. A new wording is a new version, never an edit: the version is part of
every cached answer's key and is stored with the ratings.
"""

from __future__ import annotations

import json
import re

from harness.review.criteria import CRITERIA, CRITERION_KEYS, MAX_SCORE, MIN_SCORE
from providers.instruction import Instruction

VERSION = "feyntune-judge-v1"


def _instruction_text() -> str:
    listed = "\n".join(f'- "{key}": {title}' for key, title in CRITERIA)
    # A shape, not numbers: example scores would anchor the judge's own.
    shape = "{" + ", ".join(f'"{key}": n' for key in CRITERION_KEYS) + "}"
    return (
        "You are an expert in high-energy theoretical physics rating machine-written text. You "
        "are given the beginning of the abstract of an arXiv hep-th paper, the true "
        "continuation written by the authors (for reference only), and a candidate continuation "
        "of the same beginning. Rate the candidate continuation, read as the rest of the "
        "abstract, on each criterion below with a whole number from "
        f"{MIN_SCORE} (worst) to {MAX_SCORE} (best). Judge the candidate on its own merits: it "
        "need not repeat the true continuation to score well, and its length is no merit by "
        "itself.\n"
        f"{listed}\n"
        "Answer with one JSON object holding exactly these keys, each with its score, and "
        f"nothing else: {shape}, where each n is a whole number from {MIN_SCORE} to "
        f"{MAX_SCORE}."
    )


JUDGE_V1 = Instruction(version=VERSION, text=_instruction_text())
CURRENT = JUDGE_V1


def request_text(prompt: str, truth: str, completion: str) -> str:
    """What one request shows: the three texts and nothing that names a model or a run."""
    return (
        f"Beginning of the abstract:\n{prompt.strip()}\n\n"
        f"True continuation (reference):\n{truth.strip()}\n\n"
        f"Candidate continuation to rate:\n{completion.strip() or '(empty)'}"
    )


def correction_text(original: str, previous_answer: str, why: str) -> str:
    """A retry after an unusable answer: the same request, plus what was wrong with the last
    answer (a different text, so the cache keeps both and a re-run replays both)."""
    return (
        f"{original}\n\n"
        f"Your previous answer could not be used ({why}). It was:\n{previous_answer.strip()}\n"
        f"Answer again with only the JSON object: keys {', '.join(CRITERION_KEYS)}, each a "
        f"whole number from {MIN_SCORE} to {MAX_SCORE}."
    )


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_answer(text: str) -> dict[str, int]:
    """The scores of one answer, or ValueError saying why it cannot be used.

    Accepted: one JSON object (a Markdown code fence around it is tolerated) with exactly the
    rubric's keys, each a whole number in range. Nothing is guessed: a missing key, an extra
    key, 7.5, "7" or 11 make the answer unusable.
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise ValueError("empty answer")
    try:
        data = json.loads(body)
    except ValueError as err:
        raise ValueError(f"not a JSON object ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - callers catch ValueError
    missing = [k for k in CRITERION_KEYS if k not in data]
    extra = sorted(k for k in data if k not in CRITERION_KEYS)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise ValueError("; ".join(parts))
    scores = {}
    for key in CRITERION_KEYS:
        value = data[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(  # noqa: TRY004 - one exception kind for every unusable answer
                f"{key} is {json.dumps(value)}, not a whole number")
        if not MIN_SCORE <= value <= MAX_SCORE:
            raise ValueError(f"{key} = {value} is outside {MIN_SCORE}-{MAX_SCORE}")
        scores[key] = value
    return scores
