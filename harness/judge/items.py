"""What the judge rates: one completion of one document by one model, picked and ordered with a
recorded seed.

Completions are read in `completions` only (through the leaderboard's runs reader), so a new
reader is wired in one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from harness.ground.errors import FeynTuneError


@dataclass(frozen=True)
class Item:
    run: str          # run id (results file path under the runs folder)
    model: str        # leaderboard label
    document: str     # arXiv id (the study's "paper"), else the task's doc_id
    doc_id: int
    prompt: str
    truth: str
    completion: str


@dataclass(frozen=True)
class ModelDocs:
    run: str
    model: str
    items: dict[str, Item]   # document -> item


def _document_name(arxiv_id: str | None, doc_id: int) -> str:
    return str(arxiv_id) if arxiv_id else f"doc {doc_id}"


def completions(runs_dir: Path, models: list[str] | None) -> tuple[list[ModelDocs], list[str]]:
    """Each chosen run's completed documents; and messages (files the reader left out)."""
    from harness.ground.subtasks import GEN_TASK
    from harness.review.blind_page import choose_runs
    from harness.runs.labels import run_labels
    from harness.study.registry import scan_runs

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FeynTuneError(f"--runs {runs_dir} is not a folder of lm-eval runs")
    result = scan_runs(runs_dir)
    labels = run_labels(result.runs)
    chosen = choose_runs(result.runs, labels, models)
    out = []
    for run in chosen:
        items = {}
        for doc in run.samples[GEN_TASK]:
            name = _document_name(doc.arxiv_id, doc.doc_id)
            items[name] = Item(run.run_id, labels[run.run_id], name, doc.doc_id,
                               doc.prompt or "", doc.truth or "", doc.completion or "")
        out.append(ModelDocs(run.run_id, labels[run.run_id], items))
    return out, [f"skipped {skip}" for skip in result.skips]


def plan(models: list[ModelDocs], n: int | None, seed: int) -> tuple[list[Item], list[str]]:
    """Up to n documents per model, shuffled across documents and models.

    Documents every chosen model completed come first (so models are compared on the same
    texts); a model with fewer than n of those is topped up from its own other documents, and
    the messages say so. The draw and the order depend on the seed only.
    """
    if n is not None and n < 1:
        raise FeynTuneError("--n must be at least 1")
    rng = random.Random(seed)
    common = sorted(set.intersection(*(set(m.items) for m in models)))
    shared = rng.sample(common, len(common))
    messages = []
    chosen: list[Item] = []
    for model in models:
        own = sorted(set(model.items) - set(common))
        extra = rng.sample(own, len(own))
        picked = (shared + extra)[:n] if n is not None else shared + extra
        if n is not None and len(picked) < n:
            messages.append(f"{model.model}: only {len(picked)} completed documents, not {n}")
        elif n is not None and len(shared) < n <= len(picked):
            messages.append(f"{model.model}: {n - len(shared)} of its {n} documents are not "
                            "completed by every chosen model")
        chosen.extend(model.items[name] for name in picked)
    rng.shuffle(chosen)
    return chosen, messages
