"""Reading the project's JSON-lines files (curated splits, document files) and its own JSON
files (ratings, review keys): one reader each, one set of errors; and writing its JSON files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.ground.errors import FeynTuneError


def iter_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of every non-blank line; a line that is not a JSON object is an error."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise FeynTuneError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
            if not isinstance(record, dict):
                raise FeynTuneError(
                    f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def read_objects(path: Path) -> list[dict]:
    return [record for _, record in iter_objects(path)]


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON file `path`; a one-line error naming `what` it was meant to be."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FeynTuneError(f"cannot read the {what} {path}: {err}") from None


def write_json(path: Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON; written beside, then renamed, so an interrupted
    write never leaves half of what the file held before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                       encoding="utf-8")
    partial.replace(path)
