"""`feyntune review import`: raters' CSV files -> human scores per model for the leaderboard.

Two layouts are read: the CSV the review page exports (review, rater, document, label and one
column per criterion; labels are mapped back with the key file) and the reference study's
spreadsheet (paper, model, rater, score, source, category; one overall score per row, the model
named directly). A row that cannot be used -- an unknown label or document, a score outside
1-10, a second rating of the same text by the same rater -- is reported with its file and line,
and the other rows are imported.

Imports accumulate: the ratings file keeps every imported row, and a new import replaces only
the rows of the (review, rater) pairs it brings, so a rater who re-exports replaces their own
earlier scores and nobody else's.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.jsonl import read_json
from harness.review import human_ratings
from harness.review.blind_page import KEY_FORMAT
from harness.review.criteria import (
    CRITERION_KEYS,
    MAX_SCORE,
    MIN_SCORE,
    OVERALL,
    RATINGS_COLUMNS,
    REFERENCE_COLUMNS,
)


@dataclass
class Rating:
    run: str | None
    model: str
    rater: str
    document: str
    scores: dict[str, float]
    review: str | None = None  # the review page's id; None for the reference layout
    label: str | None = None   # the neutral label the rater saw (page layout)
    file: str = ""             # the CSV file it came from
    category: str | None = None  # the reference layout's category column (harness.review.uncertainty)

    @property
    def text(self) -> tuple[str | None, str]:
        """The rated document: a page numbers its documents within its own review, so two
        reviews' document 1 are different papers."""
        return self.review, self.document

    @property
    def unit(self) -> tuple[str | None, str]:
        """What a later import of the same rater and review replaces."""
        return self.review, self.rater


@dataclass
class ImportResult:
    ratings: list[Rating] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # "file:line: why"
    files: int = 0

    @property
    def rows(self) -> int:
        return len(self.ratings)


def load_key(path: Path) -> dict:
    key = read_json(path, "review key")
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise FeynTuneError(f"{path} is not a review key written by `feyntune review build`")
    problem = key_problem(key)
    if problem:
        raise FeynTuneError(f"review key {path} is damaged: {problem}; use the key.json that "
                            "`feyntune review build` wrote beside the page")
    return key


def key_problem(key: dict) -> str | None:
    """The first field the importer needs that a key lacks or has in the wrong form."""
    if not isinstance(key.get("review"), str) or not key["review"]:
        return "missing field 'review'"
    for field_name in ("models", "documents"):
        if not isinstance(key.get(field_name), list):
            return f"missing field {field_name!r}"
    for i, model in enumerate(key["models"]):
        for name in ("model", "run"):
            if not isinstance(model, dict) or not isinstance(model.get(name), str):
                return f"missing field 'models[{i}].{name}'"
    for i, doc in enumerate(key["documents"]):
        if not isinstance(doc, dict) or "document" not in doc:
            return f"missing field 'documents[{i}].document'"
        if not isinstance(doc.get("labels"), dict):
            return f"missing field 'documents[{i}].labels'"
        for label, target in doc["labels"].items():
            if not isinstance(target, dict) or not isinstance(target.get("model"), str):
                return f"missing field 'documents[{i}].labels.{label}.model'"
            if "run" not in target:
                return f"missing field 'documents[{i}].labels.{label}.run'"
    return None


# Only the digits 0-9 as written on the page: float() would also take "1_0", "1e1", " 10.0 ",
# "inf" and digits of other scripts, none of which a rater typed into a 1-10 field.
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")


def page_score(text: str) -> int:
    """A review-page score: exactly one of the integers 1-10; ValueError saying why not."""
    if _WHOLE.fullmatch(text):
        value = int(text)
        if not MIN_SCORE <= value <= MAX_SCORE:
            raise ValueError(f"score {text} is outside {MIN_SCORE}-{MAX_SCORE}")
        if text != str(value):
            raise ValueError(f"score {text!r} is not written as a plain whole number")
        return value
    if _DECIMAL.fullmatch(text):
        raise ValueError(f"score {text} is not a whole number {MIN_SCORE}-{MAX_SCORE}")
    raise ValueError(f"score {text!r} is not a number (a whole number {MIN_SCORE}-{MAX_SCORE} "
                     "in the digits 0-9)")


def reference_score(text: str) -> float:
    """A score of the reference study's spreadsheet, which has decimals: a plain decimal
    number in [MIN_SCORE, MAX_SCORE]; ValueError saying why not."""
    if not (_WHOLE.fullmatch(text) or _DECIMAL.fullmatch(text)):
        raise ValueError(f"score {text!r} is not a number (digits 0-9, optionally one '.')")
    value = float(text)
    if not MIN_SCORE <= value <= MAX_SCORE:
        raise ValueError(f"score {text} is outside {MIN_SCORE}-{MAX_SCORE}")
    return value


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            # csv counts physical lines; a quoted cell can span several.
            rows.append((reader.line_num, dict(zip(header, (c.strip() for c in row)))))
    return header, rows


class _Importer:
    def __init__(self, key: dict | None):
        self.key = key
        self.result = ImportResult()
        self.seen: dict[tuple, str] = {}
        self.models_by_name: dict[str, dict] = {}
        if key:
            for model in key.get("models", []):
                self.models_by_name[model["model"]] = model
                self.models_by_name[model["run"]] = model
            self.documents = {str(d["document"]): d["labels"] for d in key.get("documents", [])}

    def error(self, where: str, why: str) -> None:
        self.result.errors.append(f"{where}: {why}")

    def _once(self, identity: tuple, where: str, what: str) -> bool:
        if identity in self.seen:
            self.error(where, f"{what} already rated at {self.seen[identity]}; row left out")
            return False
        self.seen[identity] = where
        return True

    def page_row(self, where: str, row: dict) -> None:
        if self.key is None:
            raise FeynTuneError("ratings exported by the review page need --key (the key.json "
                                "that `feyntune review build` wrote beside the page)")
        if row.get("review") != self.key["review"]:
            self.error(where, f"from review {row.get('review')!r}, but the key is for review "
                              f"{self.key['review']!r}")
            return
        rater, document, label = row.get("rater", ""), row.get("document", ""), row.get("label", "")
        if not rater:
            return self.error(where, "no rater name")
        labels = self.documents.get(document)
        if labels is None:
            return self.error(where, f"unknown document {document!r}")
        if label not in labels:
            return self.error(where, f"unknown label {label!r} for document {document} "
                                     f"(labels: {', '.join(sorted(labels))})")
        scores = {}
        for criterion in CRITERION_KEYS:
            text = row.get(criterion, "")
            if text:
                try:
                    scores[criterion] = page_score(text)
                except ValueError as err:
                    return self.error(where, f"{criterion}: {err}; row left out")
        if not scores:
            return self.error(where, "no score in the row")
        if not self._once((rater, document, label), where,
                          f"document {document} text {label} by rater {rater!r}"):
            return
        target = labels[label]
        self.result.ratings.append(Rating(target.get("run"), target["model"], rater, document,
                                          scores, review=self.key["review"], label=label,
                                          file=where.rsplit(":", 1)[0]))

    def reference_row(self, where: str, row: dict) -> None:
        paper, model, rater = row.get("paper", ""), row.get("model", ""), row.get("rater", "")
        missing = [name for name, value in (("paper", paper), ("model", model), ("rater", rater))
                   if not value]
        if missing:
            return self.error(where, f"empty {', '.join(missing)}")
        try:
            score = reference_score(row.get("score", ""))
        except ValueError as err:
            return self.error(where, f"{err}; row left out")
        if not self._once(("reference", paper, model, rater), where,
                          f"paper {paper} model {model!r} by rater {rater!r}"):
            return
        known = self.models_by_name.get(model)
        self.result.ratings.append(Rating(known["run"] if known else None,
                                          known["model"] if known else model, rater, paper,
                                          {OVERALL: score}, file=where.rsplit(":", 1)[0],
                                          category=row.get("category") or None))

    def read_file(self, path: Path) -> None:
        try:
            header, rows = _read(path)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            self.error(str(path), f"cannot read ({err}); file left out")
            return
        if set(RATINGS_COLUMNS[:4]) <= set(header):
            handle = self.page_row
        elif set(REFERENCE_COLUMNS[:4]) <= set(header):
            handle = self.reference_row
        else:
            self.error(str(path), f"unknown layout (header: {', '.join(header) or 'none'}); "
                                  f"expected {','.join(RATINGS_COLUMNS)} or "
                                  f"{','.join(REFERENCE_COLUMNS)}; file left out")
            return
        self.result.files += 1
        for line, row in rows:
            handle(f"{path}:{line}", row)


def import_files(files: list[Path], key: dict | None) -> ImportResult:
    importer = _Importer(key)
    for path in files:
        importer.read_file(Path(path))
    return importer.result


def read_rating_files(files: list[str], key_path: str | None,
                      command: str) -> tuple[ImportResult, dict | None]:
    """The ratings of a command's CSV files (and review key), each skipped row reported."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FeynTuneError(f"no such ratings file: {', '.join(missing)}")
    key = load_key(Path(key_path)) if key_path else None
    result = import_files([Path(f) for f in files], key)
    for error in result.errors:
        print(f"feyntune {command}: skipped {error}", file=sys.stderr)
    return result, key


def summarise(ratings: list[Rating]) -> list[dict]:
    """Per model: mean overall score and count, per-criterion means, raters, documents."""
    groups: dict[tuple, list[Rating]] = {}
    for rating in ratings:
        groups.setdefault((rating.run, rating.model), []).append(rating)
    models = []
    for (run, model), items in groups.items():
        criteria = {}
        for criterion in CRITERION_KEYS:
            values = [r.scores[criterion] for r in items if criterion in r.scores]
            if values:
                criteria[criterion] = math.fsum(values) / len(values)
        overall = [r.scores[OVERALL] for r in items if OVERALL in r.scores]
        models.append({
            "run": run,
            "model": model,
            "mean": math.fsum(overall) / len(overall) if overall else None,
            "n": len(overall),
            "raters": len({r.rater for r in items}),
            "documents": len({r.text for r in items}),
            "criteria": criteria,
        })
    return models


@dataclass
class Merged:
    ratings: list[Rating]  # every row the ratings file now holds
    added: int
    replaced: int
    kept: int
    replaced_units: list[tuple[str | None, str]]  # (review, rater) whose earlier rows went


def earlier_ratings(out: Path) -> list[Rating]:
    """The rows of earlier imports in the ratings file `out` ([] when there is none)."""
    if not Path(out).exists():
        return []
    data = human_ratings.load_file(out)
    rows = data.get("ratings")
    if rows is None:
        if data.get("models"):
            raise FeynTuneError(
                f"{out} holds per-model scores but not the rating rows behind them, so new "
                "ratings cannot be added to it; import every ratings file again into a new "
                "file (--out), or move it away")
        return []
    try:
        ratings = [Rating(**{**row, "scores": dict(row["scores"])}) for row in rows]
        for rating in ratings:
            for value in rating.scores.values():
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not MIN_SCORE <= value <= MAX_SCORE:
                    raise ValueError(f"score {value!r} of rater {rating.rater!r}")
        return ratings
    except (TypeError, KeyError, ValueError) as err:
        raise FeynTuneError(f"{out}: a stored rating row is damaged ({err}); it was not "
                            "written by `feyntune review import`") from None


def merge(earlier: list[Rating], new: list[Rating]) -> Merged:
    """Earlier rows, less those of the (review, rater) pairs the new rows bring, plus the new."""
    units = {r.unit for r in new}
    kept = [r for r in earlier if r.unit not in units]
    gone = [r for r in earlier if r.unit in units]
    return Merged(ratings=kept + new, added=len(new), replaced=len(gone), kept=len(kept),
                  replaced_units=sorted({r.unit for r in gone}, key=lambda u: (u[0] or "", u[1])))


def write(models: list[dict], out: Path, ratings: list[Rating] | None = None,
          extras: dict | None = None) -> None:
    rows = None if ratings is None else [asdict(r) for r in ratings]
    human_ratings.save(out, models, rows, extras)
