"""`feyntune review build`: a blind side-by-side page of completions, and its key.

For N documents that every chosen model completed, the page shows the prompt and then each
model's completion (and, by default, the true continuation) in a per-document shuffled order
under neutral labels A, B, C ... Nothing in the page names a model, a run, a path or the arXiv
paper; the key file that maps labels back is written apart from it.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from string import Template

from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import GEN_TASK
from harness.review.criteria import CRITERIA, MAX_SCORE, MIN_SCORE, RATINGS_COLUMNS
from harness.runs.labels import run_labels
from harness.runs.lmeval_outputs import Run
from harness.study.registry import scan_runs

TEMPLATE = Path(__file__).with_name("page.html")
TRUTH = "true continuation"  # the key's model name for the human-written text
KEY_FORMAT = "feyntune-review-key/1"
PAGE_NAME = "review.html"
KEY_NAME = "key.json"
# Which documents are rated, and in which order: the review's and the judge's default.
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Entry:
    run: str | None   # run id; None for the true continuation
    model: str        # leaderboard label, or TRUTH
    text: str


def _doc_key(doc) -> str:
    # The arXiv id names a document across runs; the prompt guards against two data sets that
    # reuse ids with different splits.
    return f"{doc.arxiv_id or doc.doc_id}\x00{doc.prompt}"


def choose_runs(runs: list[Run], labels: dict[str, str], wanted: list[str] | None) -> list[Run]:
    with_gen = [r for r in runs if r.samples.get(GEN_TASK)]
    if not with_gen:
        raise FeynTuneError("no run with hepth_completion_gen samples to review; run "
                            "`feyntune eval --tasks hepth_completion` first")
    if not wanted:
        return sorted(with_gen, key=lambda r: labels[r.run_id])
    by_name = {}
    for run in with_gen:
        by_name[run.run_id] = run
        by_name[labels[run.run_id]] = run
    missing = [w for w in wanted if w not in by_name]
    if missing:
        known = "; ".join(sorted(labels[r.run_id] for r in with_gen))
        raise FeynTuneError(f"--models: no run with completions named {', '.join(missing)}. "
                            f"Known (label or run path): {known}")
    chosen: dict[str, Run] = {}
    for name in wanted:  # a run named twice (label and path) is reviewed once
        chosen.setdefault(by_name[name].run_id, by_name[name])
    return list(chosen.values())


def _labels(count: int) -> list[str]:
    letters = string.ascii_uppercase
    if count <= len(letters):
        return list(letters[:count])
    return [f"{letters[i // 26 - 1] if i >= 26 else ''}{letters[i % 26]}" for i in range(count)]


def _clean(text: str | None) -> str:
    # Raw-text models continue with a leading space or newlines, chat models do not: strip so
    # the layout gives nothing away.
    return (text or "").strip()


def plan(runs: list[Run], labels: dict[str, str], n: int, seed: int,
         include_truth: bool) -> tuple[list[dict], list[str]]:
    """The documents to rate, each with its shuffled entries; and messages for the user."""
    messages = []
    per_run = {r.run_id: {_doc_key(d): d for d in r.samples[GEN_TASK]} for r in runs}
    common = set.intersection(*(set(docs) for docs in per_run.values()))
    if not common:
        raise FeynTuneError("the chosen runs have no document in common")
    if n < 1:
        raise FeynTuneError("--n must be at least 1")
    if n > len(common):
        messages.append(f"only {len(common)} documents were completed by every chosen model; "
                        f"the page has {len(common)}, not {n}")
        n = len(common)
    rng = random.Random(seed)
    picked = rng.sample(sorted(common), n)
    documents = []
    for number, key in enumerate(picked, start=1):
        first = per_run[runs[0].run_id][key]
        entries = [Entry(r.run_id, labels[r.run_id], _clean(per_run[r.run_id][key].completion))
                   for r in runs]
        if include_truth:
            entries.append(Entry(None, TRUTH, _clean(first.truth)))
        rng.shuffle(entries)
        documents.append({
            "number": number,
            "arxiv_id": first.arxiv_id,
            "prompt": _clean(first.prompt),
            "entries": dict(zip(_labels(len(entries)), entries)),
        })
    return documents, messages


def _review_id(documents: list[dict], seed: int) -> str:
    """A short id tying exported ratings to this key; a digest, so it names nothing."""
    digest = hashlib.sha256()
    digest.update(str(seed).encode())
    for doc in documents:
        digest.update(doc["prompt"].encode())
        for label, entry in doc["entries"].items():
            digest.update(f"{label}\x00{entry.model}\x00{entry.text}".encode())
    return digest.hexdigest()[:12]


def _page(documents: list[dict], review_id: str) -> str:
    esc = html.escape
    items = []
    for doc in documents:
        blocks = []
        for label, entry in doc["entries"].items():
            inputs = "".join(
                f'<label>{esc(title)} <input type="number" min="{MIN_SCORE}" max="{MAX_SCORE}" '
                f'step="1" inputmode="numeric" data-doc="{doc["number"]}" data-label="{label}" '
                f'data-criterion="{key}"></label>'
                for key, title in CRITERIA)
            blocks.append(f'<section class="completion"><h3>Text {label}</h3>'
                          f'<p class="text">{esc(entry.text) or "<em>(empty)</em>"}</p>'
                          f'<div class="scores">{inputs}</div></section>')
        items.append(f'<article class="document" id="doc-{doc["number"]}">'
                     f'<h2>Document {doc["number"]}</h2>'
                     f'<p class="prompt"><strong>Beginning of the abstract:</strong> '
                     f'{esc(doc["prompt"])}</p>' + "".join(blocks) + "</article>")
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        review_id=review_id,
        documents="\n".join(items),
        columns=json.dumps(list(RATINGS_COLUMNS)),
        criteria=json.dumps([key for key, _ in CRITERIA]),
        min_score=MIN_SCORE,
        max_score=MAX_SCORE,
        n_documents=len(documents),
    )


def _existing_review(path: Path) -> str:
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("review")
    except (OSError, ValueError, AttributeError):
        old = None
    return f" (review {old})" if isinstance(old, str) else ""


def _would_change(path: Path, text: str) -> bool:
    return path.exists() and (not path.is_file() or path.read_bytes() != text.encode("utf-8"))


def _beside(path: Path, review_id: str) -> Path:
    return path.with_name(f"{path.stem}-{review_id}{path.suffix}")


def targets(page: Path, key: Path, page_text: str, key_text: str, review_id: str,
            force: bool) -> tuple[Path, Path, list[str]]:
    """Where the page and key go. An existing page or key that would change is kept (ratings
    exported from a page are imported with its key, so replacing either orphans them): the new
    review goes beside it under names carrying its id, unless `force`."""
    if force or not (_would_change(page, page_text) or _would_change(key, key_text)):
        return page, key, []
    new_page, new_key = _beside(page, review_id), _beside(key, review_id)
    for path, text in ((new_page, page_text), (new_key, key_text)):
        if _would_change(path, text):  # only a foreign file can sit under a digest's name
            raise FeynTuneError(f"{path} exists and is not this review's; move it away")
    kept = ", ".join(f"{p}{_existing_review(p)}" for p in (page, key) if p.exists())
    message = (f"kept the existing {kept}: ratings exported from that page need its key. The "
               f"new review (another set of runs or documents) is {new_page} with key "
               f"{new_key}; --force replaces the old one instead")
    return new_page, new_key, [message]


def build_review(runs_dir: Path, out_dir: Path, n: int = 10, models: list[str] | None = None,
                 seed: int = DEFAULT_SEED, include_truth: bool = True,
                 key_path: Path | None = None,
                 force: bool = False) -> tuple[Path, Path, list[str]]:
    """Write the page and the key; returns (page, key, messages). An existing, different page
    or key is replaced only with `force`; otherwise the new review is written beside it."""
    result = scan_runs(Path(runs_dir))
    labels = run_labels(result.runs)
    chosen = choose_runs(result.runs, labels, models)
    documents, messages = plan(chosen, labels, n, seed, include_truth)
    review_id = _review_id(documents, seed)
    out_dir = Path(out_dir)
    page = out_dir / PAGE_NAME
    key = Path(key_path) if key_path else out_dir / KEY_NAME
    page_text = _page(documents, review_id)
    key_text = json.dumps({
        "format": KEY_FORMAT,
        "review": review_id,
        "seed": seed,
        "runs_folder": str(Path(runs_dir)),
        "models": [{"run": r.run_id, "model": labels[r.run_id]} for r in chosen],
        "documents": [{
            "document": doc["number"],
            "arxiv_id": doc["arxiv_id"],
            "labels": {label: {"run": e.run, "model": e.model}
                       for label, e in doc["entries"].items()},
        } for doc in documents],
    }, indent=2, ensure_ascii=False) + "\n"
    page, key, moved = targets(page, key, page_text, key_text, review_id, force)
    messages += moved
    out_dir.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(page_text, encoding="utf-8")
    key.write_text(key_text, encoding="utf-8")
    messages += [f"skipped {s}" for s in result.skips]
    return page, key, messages
