"""index.html in a real headless chromium: the table shows, and sorts on a click."""

from __future__ import annotations

import pytest
from browser import ARTIFACTS, Browser, chromium_binary

from harness.leaderboard.command import build

ROWS_JS = ("[...document.querySelectorAll('#%s tr')].map(r => [r.cells[0].textContent,"
           " r.cells[%d].getAttribute('data-v')])")


def column_index(page: Browser, key: str) -> int:
    return page.js("[...document.querySelectorAll('#leaderboard thead th')]"
                   f".findIndex(th => th.dataset.key === {key!r})")


@pytest.mark.slow
def test_leaderboard_page_shows_and_sorts(hepth_eval_runs, tmp_path):
    chromium_binary()
    out = tmp_path / "results"
    build(hepth_eval_runs, out)
    with Browser() as page:
        page.open(out / "index.html")
        # The table is there and visible, measured rows above the reported ones.
        visible = page.js("(() => { const t = document.getElementById('leaderboard');"
                          " const r = t.getBoundingClientRect(); return r.width > 0 && r.height > 0; })()")
        assert visible
        assert page.js("document.querySelectorAll('#measured-rows tr').length") == 1
        assert page.js("document.querySelectorAll('#reported-rows tr').length") == 27
        assert page.js("document.querySelector('#measured-rows tr').cells[0].textContent") == "smollm2"
        # The figures are embedded and decode.
        widths = page.js("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 3 and all(w > 100 for w in widths)

        ppl = column_index(page, "ppl_token_mean")
        before = page.js(ROWS_JS % ("reported-rows", ppl))
        page.click('th[data-key="ppl_token_mean"]')
        ascending = page.js(ROWS_JS % ("reported-rows", ppl))
        page.click('th[data-key="ppl_token_mean"]')
        descending = page.js(ROWS_JS % ("reported-rows", ppl))
        assert page.js("document.querySelector('th[data-key=\"ppl_token_mean\"]')"
                       ".getAttribute('aria-sort')") == "descending"

        def numbers(rows):
            return [float(v) for _, v in rows if v != ""]

        assert numbers(ascending) == sorted(numbers(before))
        assert numbers(descending) == sorted(numbers(before), reverse=True)
        # Models without a perplexity stay last in either direction.
        assert all(v == "" for _, v in descending[len(numbers(descending)):])
        assert descending[0][0] == "Llama-3.1-8B + LoRA-all s9"  # 12.16, the worst

        page.click('th[data-key="model"]')
        names = [name for name, _ in page.js(ROWS_JS % ("reported-rows", 0))]
        assert names[0] == "ChatGPT-4" and names[-1] == "Llama-3.1-8B + LoRA-QKV s10"
        # Natural order: s2 before s10.
        assert names.index("Llama-3.1-8B + LoRA-all s2") < names.index("Llama-3.1-8B + LoRA-all s10")
        # Sorting never moves a reported row into the measured block.
        assert page.js("document.querySelectorAll('#measured-rows tr').length") == 1
        page.click('th[data-key="ppl_token_mean"]')
        page.screenshot(ARTIFACTS / "leaderboard.png")
    assert (ARTIFACTS / "leaderboard.png").stat().st_size > 10_000
