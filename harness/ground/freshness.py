"""When an arXiv record first appeared, and whether it is later than a cut date.

Contamination-aware evaluation (issue 9) compares a model on hep-th abstracts it cannot have
seen in pre-training with the standard test split. These rules decide "seen or not" from the
record alone; curation (`feyntune data build --fresh-after`), the fresh task
(harness/evaluate/fresh_documents.py) and the cut-off check after `feyntune eval`
(harness/evaluate/contamination.py) all use them:

First-version date of a record, first found wins (and is never guessed):
1. `versions[0].created`, Kaggle's RFC 2822 form "Mon, 2 Apr 2007 19:18:42 GMT" -> that UTC day;
2. the arXiv id's yymm: new-style `0704.0001` / `2608.12345` (scheme began April 2007: 20yy),
   old-style `hep-th/9503124` (1991 to March 2007: yy >= 91 is 19yy, else 20yy) -> the FIRST
   DAY of that month, with month precision;
3. `update_date` "2007-05-23" -> that day. It is the date of the LAST revision, so an upper
   bound on the first version; it is used only when neither of the above gives a date (real
   arXiv records always have an id), and the counts by source are reported.
Anything else is unparseable: counted and reported, never treated as fresh.

"Later than the cut date D" (a calendar day, UTC): a record is fresh when its first version
is on D + 1 or later. A month-precision date (from the id) is fresh only when the WHOLE month
lies after D (its first day > D). The month that contains D is ambiguous -- the paper may
predate the cut -- and is counted apart as `ambiguous_month` and treated as not fresh:
a contamination-free split must not hold a paper the model may have read.

Model cut-offs are months ("December 2023" = data up to the end of that month), so a cut-off
`YYYY-MM` stands for the last day of that month; `--fresh-after` accepts both forms.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.ground.errors import FeynTuneError

SOURCES = ("versions", "id", "update_date")
VERDICTS = ("fresh", "not_fresh", "ambiguous_month", "unparseable")

_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
# Kaggle writes "Mon, 2 Apr 2007 19:18:42 GMT"; the weekday is optional in RFC 2822 and not
# checked (the date is what matters). Month names are English whatever the locale, so this is
# parsed here rather than with strptime's locale-dependent %a/%b.
_CREATED = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s*(GMT|UTC|UT|Z|[+-]\d{4})?\s*$")
_NEW_ID = re.compile(r"^(?:arXiv:)?(\d{2})(\d{2})\.\d{4,5}(?:v\d+)?$", re.IGNORECASE)
_OLD_ID = re.compile(r"^[a-z][a-z\-]*(?:\.[A-Za-z\-]+)?/(\d{2})(\d{2})\d{3}(?:v\d+)?$")
_DAY = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")


@dataclass(frozen=True)
class FirstVersion:
    """When a record first appeared: a UTC day, or the first day of a month."""

    date: dt.date | None
    precision: str  # "day" | "month" | "none"
    source: str     # one of SOURCES, or "unparseable"

    def as_text(self) -> str | None:
        if self.date is None:
            return None
        return self.date.strftime("%Y-%m") if self.precision == "month" else self.date.isoformat()


UNPARSEABLE = FirstVersion(None, "none", "unparseable")


def parse_created(text: Any) -> dt.date | None:
    """The UTC day of a Kaggle `versions[i].created` string, or None."""
    if not isinstance(text, str):
        return None
    match = _CREATED.match(text)
    if not match:
        return None
    day, month_name, year, hour, minute, second, zone = match.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    try:
        stamp = dt.datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0))
    except ValueError:  # 31 Feb, hour 25, ...
        return None
    if zone and zone[0] in "+-":
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        stamp -= offset if zone[0] == "+" else -offset
    return stamp.date()


def parse_day(text: Any) -> dt.date | None:
    """A Kaggle `update_date` ("2007-05-23"), or None."""
    if not isinstance(text, str):
        return None
    match = _DAY.match(text)
    if not match:
        return None
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def id_month(arxiv_id: Any) -> dt.date | None:
    """First day of the month an arXiv id was assigned in, or None for anything else.

    New-style ids began with 0704 (April 2007), old-style ones ran from 1991 to March 2007;
    a yymm outside its scheme's years is not an arXiv id and is not guessed at.
    """
    if not isinstance(arxiv_id, str):
        return None
    arxiv_id = arxiv_id.strip()
    match = _NEW_ID.match(arxiv_id)
    if match:
        year, month = 2000 + int(match.group(1)), int(match.group(2))
        if (year, month) < (2007, 4):
            return None
    else:
        match = _OLD_ID.match(arxiv_id)
        if not match:
            return None
        yy, month = int(match.group(1)), int(match.group(2))
        year = 1900 + yy if yy >= 91 else 2000 + yy
        if (year, month) > (2007, 3):
            return None
    if not 1 <= month <= 12:
        return None
    return dt.date(year, month, 1)


def first_version(record: dict) -> FirstVersion:
    """When a Kaggle record was first versioned (module docstring: sources in order)."""
    versions = record.get("versions")
    if isinstance(versions, list) and versions and isinstance(versions[0], dict):
        day = parse_created(versions[0].get("created"))
        if day is not None:
            return FirstVersion(day, "day", "versions")
    month = id_month(record.get("id"))
    if month is not None:
        return FirstVersion(month, "month", "id")
    day = parse_day(record.get("update_date"))
    if day is not None:
        return FirstVersion(day, "day", "update_date")
    return UNPARSEABLE


def parse_cut(text: Any, what: str = "--fresh-after") -> dt.date:
    """A cut date: `YYYY-MM-DD`, or `YYYY-MM` for the last day of that month."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    value = str(text).strip() if text is not None else ""
    day = parse_day(value)
    if day is not None:
        return day
    month = _MONTH.match(value)
    if month:
        year, mon = int(month.group(1)), int(month.group(2))
        if 1 <= mon <= 12:
            return dt.date(year, mon, calendar.monthrange(year, mon)[1])
    raise FeynTuneError(f"{what} {text!r} is not a date: use YYYY-MM-DD (or YYYY-MM for the "
                        "end of that month)")


def classify(first: FirstVersion, cut: dt.date) -> str:
    """One of VERDICTS for a record's first version against the cut date."""
    if first.date is None:
        return "unparseable"
    if first.date > cut:
        return "fresh"
    if first.precision == "month" and (first.date.year, first.date.month) == (cut.year, cut.month):
        return "ambiguous_month"
    return "not_fresh"


@dataclass
class FreshnessTally:
    """Counts of a cut over many records, for manifests and messages."""

    cut: dt.date
    verdicts: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)  # of the dates found, by source
    earliest_fresh: FirstVersion | None = None
    latest_fresh: FirstVersion | None = None

    def add(self, first: FirstVersion) -> str:
        verdict = classify(first, self.cut)
        self.verdicts[verdict] += 1
        if first.date is not None:
            self.sources[first.source] += 1
        if verdict == "fresh":
            if self.earliest_fresh is None or first.date < self.earliest_fresh.date:
                self.earliest_fresh = first
            if self.latest_fresh is None or first.date > self.latest_fresh.date:
                self.latest_fresh = first
        return verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "after": self.cut.isoformat(),
            "rule": "first version (versions[0].created, else the id's yymm, else update_date) "
                    "later than the date; a month known only from the id counts when the whole "
                    "month is later; the month containing the date is ambiguous and not fresh",
            "verdicts": {v: int(self.verdicts[v]) for v in VERDICTS},
            "dates_by_source": {s: int(self.sources[s]) for s in SOURCES},
            "fresh_first_versions": [
                None if self.earliest_fresh is None else self.earliest_fresh.as_text(),
                None if self.latest_fresh is None else self.latest_fresh.as_text()],
        }

    def describe(self) -> str:
        v = self.verdicts
        return (f"{v['fresh']:,} first versioned after {self.cut.isoformat()}, "
                f"{v['not_fresh']:,} not, {v['ambiguous_month']:,} in the cut's month (known only "
                f"by id month; not fresh), {v['unparseable']:,} with no parseable date")


def select_fresh(records, cut: dt.date) -> tuple[list[bool], FreshnessTally]:
    """Which records are fresh (one flag each, in order) and the counts."""
    tally = FreshnessTally(cut)
    flags = [tally.add(first_version(record)) == "fresh" for record in records]
    return flags, tally


def from_text(text: Any, source: str) -> FirstVersion | None:
    """A FirstVersion written by `FirstVersion.as_text` ("2024-05-17" or "2024-05"), or None."""
    if not isinstance(text, str) or not text:
        return None
    if _DAY.match(text):
        day = parse_day(text)
        return FirstVersion(day, "day", source) if day is not None else None
    if _MONTH.match(text):
        year, month = (int(p) for p in text.split("-"))
        if 1 <= month <= 12:
            return FirstVersion(dt.date(year, month, 1), "month", source)
    return None
