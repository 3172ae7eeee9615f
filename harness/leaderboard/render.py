"""leaderboard.md and leaderboard.csv from the rows (deterministic: no generation time)."""

from __future__ import annotations

import csv
import io
import math
import re

from harness.ground.stats import SETTINGS_TEXT
from harness.leaderboard.compare import change_verdict
from harness.leaderboard.rows import COLUMNS, Column

MISSING_TEXT = "n/a"   # md/html: a column with no value for the row says so
MISSING_CSV = "NA"     # csv: read as missing by pandas and R alike
_BY_KEY = {c.key: c for c in COLUMNS}


def display(column: Column, value) -> str:
    """A value as shown in md/html."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_TEXT
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if column.digits is not None and isinstance(value, (int, float)):
        shown = value * 100 if column.percent else value
        text = f"{shown:.{column.digits}f}"
        return f"{text}%" if column.percent else text
    return str(value)


def csv_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_CSV
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form: the exact number, stable across runs
    return str(value)


def to_csv(measured: list[dict], reported: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in COLUMNS])
    for row in measured + reported:
        writer.writerow([csv_value(row.get(c.key)) for c in COLUMNS])
    return buffer.getvalue()


# Markdown passes raw HTML and entity references through to the page, so a model name or note
# holding "<img src=x onerror=...>" would become markup where the file is shown; escaped, it
# reads as typed. A backslash is escaped too, or one in a name would undo the escape of a "|".
_MD_TEXT = str.maketrans({"\\": "\\\\", "&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|",
                          "\n": " ", "\r": " "})


def _md_cell(text: str) -> str:
    """Text in a table cell or list item, shown as typed (no HTML, no cell break)."""
    return text.translate(_MD_TEXT)


def _md_code(text: str) -> str:
    """Text in a code span (HTML is not rendered there): a fence longer than any run of
    backticks inside, so none of them can end the span early."""
    text = text.replace("\n", " ").replace("\r", " ")
    runs = [len(r) for r in re.findall("`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _ppl_cell(row: dict) -> str:
    mean = display(_BY_KEY["ppl_token_mean"], row.get("ppl_token_mean"))
    if row.get("ppl_token_boot_std") is None:
        return mean
    sd = display(_BY_KEY["ppl_token_boot_std"], row["ppl_token_boot_std"])
    low = display(_BY_KEY["ppl_token_ci_low"], row["ppl_token_ci_low"])
    high = display(_BY_KEY["ppl_token_ci_high"], row["ppl_token_ci_high"])
    return f"{mean} ± {sd} [{low}, {high}]"


def _semscore_cell(row: dict) -> str:
    mean = display(_BY_KEY["semscore_mean"], row.get("semscore_mean"))
    if row.get("semscore_min") is None:
        return mean
    return f"{mean} (min {display(_BY_KEY['semscore_min'], row['semscore_min'])})"


def _fresh_cell(metric: str):
    """Fresh figure with its gap to the standard one and the gap's 95% interval."""
    def cell(row: dict) -> str:
        mean = display(_BY_KEY[f"{metric}_fresh_mean"], row.get(f"{metric}_fresh_mean"))
        if row.get(f"{metric}_fresh_gap") is None:
            return mean
        gap_column = _BY_KEY[f"{metric}_fresh_gap"]
        gap = row[f"{metric}_fresh_gap"]
        low = display(gap_column, row[f"{metric}_fresh_gap_ci_low"])
        high = display(gap_column, row[f"{metric}_fresh_gap_ci_high"])
        return f"{mean} (gap {'+' if gap >= 0 else ''}{display(gap_column, gap)} [{low}, {high}])"
    return cell


def _human_cell(row: dict) -> str:
    mean = display(_BY_KEY["human_mean"], row.get("human_mean"))
    if row.get("human_ci_low") is not None and row.get("human_ci_high") is not None:
        mean += (f" [{display(_BY_KEY['human_ci_low'], row['human_ci_low'])}, "
                 f"{display(_BY_KEY['human_ci_high'], row['human_ci_high'])}]")
    counts = [f"n={row['human_n']}"] if row.get("human_n") else []
    counts += [f"{row[k]} {what}" for k, what in (("human_raters", "raters"),
                                                  ("human_documents", "docs")) if row.get(k)]
    return f"{mean} ({', '.join(counts)})" if counts else mean


def _signed(key: str):
    def cell(row: dict) -> str:
        value = row.get(key)
        text = display(_BY_KEY[key], value)
        return f"+{text}" if isinstance(value, (int, float)) and value >= 0 else text
    return cell


def _change_cell(row: dict) -> str:
    change = _signed("ppl_change_vs_base")(row)
    low = _signed("ppl_change_ci_low")(row)
    high = _signed("ppl_change_ci_high")(row)
    return f"{change} [{low}, {high}]"


def _change_verdict(row: dict) -> str:
    high, low = row.get("ppl_change_ci_high"), row.get("ppl_change_ci_low")
    if high is None or low is None:
        return MISSING_TEXT
    return change_verdict(low, high)


def _judge_cell(row: dict) -> str:
    mean = display(_BY_KEY["judge_mean"], row.get("judge_mean"))
    if row.get("judge_ci_low") is None:
        return mean
    low = display(_BY_KEY["judge_ci_low"], row["judge_ci_low"])
    high = display(_BY_KEY["judge_ci_high"], row["judge_ci_high"])
    return f"{mean} [{low}, {high}] (n={row['judge_n']})"


def _api_cost_cell(row: dict) -> str:
    """API rows: the cost, its route and the tokens billed; n/a for local models."""
    if row.get("api_route") is None:
        return MISSING_TEXT
    cost = display(_BY_KEY["api_cost_usd"], row.get("api_cost_usd"))
    cost = f"${cost}" if row.get("api_cost_usd") is not None else "no price"
    return (f"{cost} ({row['api_route']}; {row['api_input_tokens']:,} in + "
            f"{row['api_output_tokens']:,} out tokens)")


def _plain(key: str):
    return lambda row: display(_BY_KEY[key], row.get(key))


def _column(key: str):
    """A cell of one csv column, under that column's own title."""
    return _BY_KEY[key].title, _plain(key)


# leaderboard.md folds a few csv columns into one cell to stay readable on a repository page.
_MD_MEASURED = [
    _column("model"),
    ("Base / provider", lambda r: display(_BY_KEY["base_model"], r.get("base_model")
                                          or r.get("provider"))),
    _column("adapter"),
    ("Mix", _plain("mix")),
    _column("lora"),
    _column("documents"),
    ("PPL mean ± boot sd [95% CI]", _ppl_cell),
    _column("word_perplexity_corpus"),
    ("SemScore (min)", _semscore_cell),
    _column("semscore_full_mean"),
    _column("word_entropy_mean"),
    _column("metadata_leak_rate"),
    _column("repetition_mean"),
    _column("completion_words_mean"),
    ("Human", _human_cell),
    ("Judge [95% CI]", _judge_cell),
    ("API cost (route; tokens)", _api_cost_cell),
    _column("backend"),
    _column("dtype"),
    _column("date"),
    _column("temperature"),
    _column("max_tokens"),
]
# Shown only when some run evaluated hepth_completion_fresh.
_MD_FRESH = [
    _column("fresh_after"),
    _column("fresh_documents"),
    ("PPL fresh (gap [95% CI])", _fresh_cell("ppl_token")),
    ("SemScore fresh (gap [95% CI])", _fresh_cell("semscore")),
]
_MD_REPORTED = [
    _column("model"),
    _column("study"),
    ("Mix", _plain("mix")),
    _column("lora"),
    ("PPL (arithmetic mean)", _plain("ppl_token_mean")),
    ("Human (1-10) [95% CI]", _human_cell),
]
# Measured rows that are one of the study's models, beside the published figure.
_MD_BESIDE = [
    _column("model"),
    _column("study"),
    _column("documents"),
    _column("reported_ppl"),
    ("Measured PPL [95% CI]", _ppl_cell),
    ("Measured - reported", _signed("ppl_minus_reported")),
    ("Reported inside CI", _plain("reported_in_ci")),
    _column("reported_caveat"),
]
# Adapters against their base model on the same documents.
_MD_CHANGE = [
    _column("model"),
    _column("ppl_change_base_run"),
    ("Docs", _plain("ppl_change_documents")),
    ("PPL change vs base [95% CI]", _change_cell),
    ("PPL vs base", _change_verdict),
]


def _md_table(rows: list[dict], spec) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in spec) + " |",
             "|" + "|".join("---" for _ in spec) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(cell(row)) for _, cell in spec) + " |")
    return lines


def to_markdown(measured: list[dict], reported: list[dict], notes: list[str],
                skips: list[tuple[str, str]], reported_source: str,
                command: str = "feyntune leaderboard --runs results/runs --out results") -> str:
    """leaderboard.md; `command`: the command that made it, for the footer."""
    lines = ["# hep-th abstract completion leaderboard", ""]
    lines += [("Measured with the `hepth_completion` lm-eval task. PPL: token perplexity of the "
               "whole abstract, arithmetic mean over abstracts, with the standard deviation of "
               f"its bootstrap distribution and the 95% percentile interval ({SETTINGS_TEXT}"
               "). Sorted by perplexity; models without one (API models) after. "
               f"`{MISSING_TEXT}`: no value for that model."), ""]
    if any(row.get("fresh_documents") for row in measured):
        lines += [("Fresh: the same figures on `hepth_completion_fresh`, abstracts first "
                   "versioned after the date shown (newer than the model's training data); gap = "
                   "fresh minus standard, with the 95% percentile interval of a bootstrap of the "
                   "difference (standard documents that are also fresh left out)."), ""]
    lines.append("## Measured")
    lines.append("")
    if measured:
        spec = list(_MD_MEASURED)
        if any(row.get("fresh_documents") for row in measured):
            at = next(i for i, (title, _) in enumerate(spec) if title == "Human")
            spec[at:at] = _MD_FRESH
        lines += _md_table(measured, spec)
    else:
        lines.append("No measured runs yet: run `feyntune eval` and regenerate.")
    beside = [row for row in measured if row.get("reported_ppl") is not None]
    if beside:
        lines += ["", "## Measured beside reported", "",
                  ("Models of the reference study measured here: the published perplexity, the "
                   "measured one with its 95% bootstrap interval, their difference, and whether "
                   "the published figure lies inside that interval."), ""]
        if any(row.get("reported_caveat") for row in beside):
            lines += [("**Caveat**: rows with an entry under Caveat were not measured in the "
                       "published setting (another base model, fewer documents or another "
                       "dtype); their difference from the published figure says little about "
                       "the reproduction."), ""]
        lines += _md_table(beside, _MD_BESIDE)
    changed = [row for row in measured if row.get("ppl_change_vs_base") is not None]
    if changed:
        lines += ["", "## Change against the base model", "",
                  ("Each adapter minus its base model on the documents both scored: mean "
                   "per-abstract change in token perplexity with the 95% interval of a paired "
                   f"bootstrap ({SETTINGS_TEXT}); lower: the interval lies below zero."), ""]
        lines += _md_table(changed, _MD_CHANGE)
    lines += ["", "## Reported by the reference study", "",
              (f"Published figures ({reported_source}); not measured here and not part of any "
               "measured statistic."), ""]
    lines += _md_table(reported, _MD_REPORTED)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in notes]
    if skips:
        lines += ["", "## Skipped files", ""] + [f"- {_md_code(str(path))}: {_md_cell(why)}"
                                                    for path, why in skips]
    lines += ["", f"Regenerate with `{command}`.", ""]
    return "\n".join(lines)
