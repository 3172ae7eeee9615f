"""The one instruction chat models get, versioned: the version is part of every cache key and
is stored with the results, so changing the wording means a new version, never an edit."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Instruction:
    version: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


HEPTH_COMPLETION_V1 = Instruction(
    version="hepth-completion-v1",
    text=(
        "You are given the beginning of the abstract of a high-energy theoretical physics "
        "(arXiv hep-th) paper. Continue the abstract from exactly where it stops until the "
        "abstract is complete, in the same style. Answer with the continuation only: do not "
        "repeat the given beginning and add no title, preamble, comment or formatting."
    ),
)
CURRENT = HEPTH_COMPLETION_V1

_SPACE = re.compile(r"\s+")


def strip_repeated_prompt(prompt: str, answer: str) -> str:
    """Drop the prompt when a model echoes it before continuing (whitespace-insensitive)."""
    body = answer.lstrip()
    target = _SPACE.sub(" ", prompt.strip())
    if not target:
        return answer
    # Walk the answer while matching the normalised prompt character by character.
    i = j = 0
    while i < len(body) and j < len(target):
        if body[i].isspace():
            if target[j] != " ":
                return answer
            j += 1
            while i < len(body) and body[i].isspace():
                i += 1
            continue
        if body[i] != target[j]:
            return answer
        i += 1
        j += 1
    if j < len(target):
        return answer
    return body[i:].lstrip()
