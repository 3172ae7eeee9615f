"""index.html: one self-contained page (inline CSS and JS, figures as data URIs, no network)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from string import Template

from harness.ground.subtasks import GEN_TASK
from harness.leaderboard.render import MISSING_TEXT, display
from harness.leaderboard.rows import COLUMNS
from harness.runs.lmeval_outputs import Run

TEMPLATE = Path(__file__).with_name("page.html")
SAMPLES_PER_MODEL = 3
FIGURE_CAPTIONS = {
    "perplexity.png": "Mean token perplexity per model; measured with the bootstrap 95% "
                      "interval, reported figures as open squares.",
    "entropy_vs_length.png": "exp(word entropy) against length in words for each completion "
                             "and for the true continuations; repetitive output sits low.",
    "semscore.png": "SemScore of each completion against its true continuation.",
}


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _sort_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return "Infinity" if math.isinf(value) and value > 0 else repr(value)
    return str(value)




def _header() -> str:
    cells = []
    for column in COLUMNS:
        kind = "num" if column.numeric else "text"
        title = f' title="{_esc(column.note)}"' if column.note else ""
        cells.append(f'<th scope="col" tabindex="0" data-key="{column.key}" '
                     f'data-type="{kind}"{title}>{_esc(column.title)}</th>')
    return "\n".join(cells)


def _rows(rows: list[dict]) -> str:
    lines = []
    for order, row in enumerate(rows):
        cells = []
        for column in COLUMNS:
            value = row.get(column.key)
            shown = display(column, value)
            classes = []
            if column.numeric:
                classes.append("num")
            if shown == MISSING_TEXT:
                classes.append("na")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f'<td{cls} data-v="{_esc(_sort_value(value))}">{_esc(shown)}</td>')
        lines.append(f'<tr data-order="{order}">' + "".join(cells) + "</tr>")
    return "\n".join(lines)


def _notes(notes: list[str], skips: list[tuple[str, str]]) -> str:
    parts = []
    if notes:
        parts.append("<h2>Notes</h2>\n<ul class=\"notes\">"
                     + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if skips:
        parts.append("<h2>Skipped files</h2>\n<ul class=\"notes\">"
                     + "".join(f"<li><code>{_esc(p)}</code>: {_esc(w)}</li>" for p, w in skips)
                     + "</ul>")
    return "\n".join(parts)


def _figures(pngs: dict[str, bytes]) -> str:
    parts = []
    for name, data in pngs.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,{encoded}">'
                     f"<figcaption>{_esc(FIGURE_CAPTIONS.get(name, name))}</figcaption></figure>")
    return "\n".join(parts)


def _samples(runs: list[Run], labels: dict[str, str]) -> str:
    parts = []
    for run in sorted(runs, key=lambda r: labels[r.run_id]):
        docs = run.samples.get(GEN_TASK, [])[:SAMPLES_PER_MODEL]
        if not docs:
            continue
        blocks = []
        for doc in docs:
            name = f"arXiv:{doc.arxiv_id}" if doc.arxiv_id else f"document {doc.doc_id}"
            blocks.append(
                f"<p><strong>{_esc(name)}</strong></p><div class=\"sample\">"
                f"<div><h4>Prompt</h4>{_esc(doc.prompt or MISSING_TEXT)}</div>"
                f"<div><h4>True continuation</h4>{_esc(doc.truth or MISSING_TEXT)}</div>"
                f"<div><h4>Completion</h4>{_esc(doc.completion or '')}</div></div>"
            )
        parts.append(f"<details><summary>{_esc(labels[run.run_id])}</summary>"
                     + "".join(blocks) + "</details>")
    return "\n".join(parts) or "<p>No measured completions yet.</p>"


def to_html(measured: list[dict], reported: list[dict], runs: list[Run], labels: dict[str, str],
            pngs: dict[str, bytes], notes: list[str], skips: list[tuple[str, str]],
            reported_source: str) -> str:
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        header=_header(),
        measured=_rows(measured),
        reported=_rows(reported),
        ncols=len(COLUMNS),
        reported_source=_esc(reported_source),
        notes=_notes(notes, skips),
        figures=_figures(pngs),
        samples=_samples(runs, labels),
    )
