"""leaderboard.md shows model names, notes and skipped paths as typed: nothing in them becomes
HTML where Markdown is rendered (checked on the text and with a CommonMark renderer)."""

from __future__ import annotations

import pytest

from harness.leaderboard import render
from harness.leaderboard.render import _md_cell, _md_code, to_markdown

HOSTILE_MODEL = '<img src=x onerror="alert(1)"> & <b>bold</b> | a\\|b'
HOSTILE_NOTE = "completion: <script>alert(2)</script> &amp; <!-- c --> <https://evil.example>"
HOSTILE_PATH = "runs/`<iframe src=y>`/samples.jsonl"


def _board() -> str:
    measured = [{"model": HOSTILE_MODEL, "base_model": "<u>base</u>", "documents": 3}]
    reported = [{"model": "Llama-3.1-8B", "ppl_token_mean": 7.5, "human_mean": 3.75}]
    return to_markdown(measured, reported, [HOSTILE_NOTE], [(HOSTILE_PATH, "bad <em>x</em>")],
                       "docs/reference.md")


def test_text_is_escaped_for_markdown():
    assert _md_cell(HOSTILE_MODEL) == ('&lt;img src=x onerror="alert(1)"&gt; &amp; '
                                       '&lt;b&gt;bold&lt;/b&gt; \\| a\\\\\\|b')
    assert _md_cell("line one\nline two") == "line one line two"
    assert _md_code("notes.txt") == "`notes.txt`"
    assert _md_code(HOSTILE_PATH) == "``runs/`<iframe src=y>`/samples.jsonl``"
    assert _md_code("`x`") == "`` `x` ``"
    md = _board()
    for raw in ("<img", "<b>", "<script", "<!--", "<https:", "<iframe src=y>`/", "<u>", "<em>"):
        assert raw not in md.replace("``runs/`<iframe src=y>`/samples.jsonl``", ""), raw


def test_rendered_markdown_has_no_injected_html():
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(_board())
    for tag in ("<img", "<b>", "<script", "<!--", "<a href", "<iframe", "<u>", "<em>"):
        assert tag not in html, tag
    # Shown as typed: the escapes come back as the original characters.
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &lt;b&gt;bold&lt;/b&gt; | a\\|b" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp;amp; &lt;!-- c --&gt;" in html
    assert "<code>runs/`&lt;iframe src=y&gt;`/samples.jsonl</code>" in html
    # One row, with every cell in its column (the "|" in the name did not split it).
    row = html.split("<tbody>")[1].split("</tr>")[0]
    assert row.count("<td>") == len(render._MD_MEASURED)
