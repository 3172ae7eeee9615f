"""The review page in headless chromium: enter scores, reload, export, import, leaderboard."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from browser import ARTIFACTS, Browser, chromium_binary
from test_review import two_models

from harness import cli
from harness.leaderboard.command import build as build_leaderboard
from harness.review.blind_page import build_review


def box(doc: int, label: str, criterion: str) -> str:
    return f'input[data-doc="{doc}"][data-label="{label}"][data-criterion="{criterion}"]'


def wait_for_file(folder: Path, pattern: str, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in folder.glob(pattern) if p.stat().st_size > 0]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} downloaded into {folder}")


@pytest.mark.slow
def test_review_page_keeps_entries_and_exports_them(hepth_eval_runs, tmp_path):
    chromium_binary()
    runs = two_models(hepth_eval_runs, tmp_path / "runs")
    page_path, key_path, _ = build_review(runs, tmp_path / "review", n=2, seed=5)
    key = json.loads(key_path.read_text())
    scores = {"smollm2": "3", "smollm2 + LoRA-all s3": "6", "true continuation": "9"}
    downloads = tmp_path / "downloads"
    with Browser(profile=tmp_path / "profile") as page:
        page.open(page_path)
        page.click("#rater")
        page.type_text("Ann Example")
        for doc in key["documents"]:
            for label, target in doc["labels"].items():
                page.click(box(doc["document"], label, "overall"))
                page.type_text(scores[target["model"]])
        page.click(box(1, "A", "accuracy"))
        page.type_text("8")
        page.click(box(1, "B", "creativity"))
        page.type_text("12")  # out of range: flagged, never stored
        assert page.js(f"document.querySelector('{box(1, 'B', 'creativity')}')"
                       ".validity.valid") is False

        # What a user sees before leaving: every valid entry is in the browser's storage.
        def stored() -> dict:
            values = list(page.local_storage().values())
            return json.loads(values[0]) if values else {}

        page.wait_until(lambda: stored().get("rater") == "Ann Example"
                        and len(stored().get("scores", {})) == 7, what="entries in localStorage")
        page.reload()
        assert page.js("document.getElementById('rater').value") == "Ann Example"
        assert page.js(f"document.querySelector('{box(1, 'A', 'accuracy')}').value") == "8"
        assert page.js(f"document.querySelector('{box(1, 'B', 'creativity')}').value") == ""
        for doc in key["documents"]:
            for label, target in doc["labels"].items():
                value = page.js(f"document.querySelector('{box(doc['document'], label, 'overall')}')"
                                ".value")
                assert value == scores[target["model"]]
        assert page.js("document.getElementById('status').textContent").startswith("6 of 6 texts")

        page.allow_downloads(downloads)
        page.click("#export")
        exported = wait_for_file(downloads, "ratings-*.csv")
        page.screenshot(ARTIFACTS / "review.png")
    assert exported.name == f"ratings-Ann_Example-{key['review']}.csv"
    with open(exported, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["rater"] for r in rows} == {"Ann Example"}

    out = tmp_path / "results"
    assert cli.main(["review", "import", str(exported), "--key", str(key_path),
                     "--out", str(out / "human_ratings.json")]) == 0
    build_leaderboard(runs, out)
    with open(out / "leaderboard.csv", encoding="utf-8", newline="") as f:
        board = {r["model"]: r for r in csv.DictReader(f)}
    assert board["smollm2"]["human_mean"] == "3.0" and board["smollm2"]["human_n"] == "2"
    assert board["smollm2 + LoRA-all s3"]["human_mean"] == "6.0"
