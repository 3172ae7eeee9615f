"""SemScore as the task computes it against one batched encode of the same texts.

Task path: the PrecomputeSemScores filter (one batched encode of every text the documents need)
followed by the per-document `generation_metrics` calls of process_results, which read the cache.
Floor: one `SentenceTransformer.encode` of the same unique texts plus the cosines. Both start
from a loaded model. The completions are real hep-th text: each document's stand-in completion
is the ground truth of the next document (generating them would time the LLM, not SemScore).
Target: <= 1.2x.

    .venv/bin/python bench/semscore.py [--n 24] [--model mpnet|minilm] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-sample.jsonl"


def documents(n: int) -> list[dict]:
    from harness.evaluate.documents import to_document
    from harness.ground.abstracts import primary_category

    docs = []
    for i, line in enumerate(SAMPLE.read_text(encoding="utf-8").splitlines()):
        r = json.loads(line)
        if primary_category(r["categories"]) == "hep-th":
            doc = to_document(r, i, str(SAMPLE))
            if doc and doc["y_true"]:
                docs.append(doc)
        if len(docs) == n:
            return docs
    raise SystemExit(f"only {len(docs)} usable hep-th abstracts in {SAMPLE}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--model", default="mpnet", choices=["mpnet", "minilm"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from harness import assets
    from harness.evaluate import metrics
    from harness.evaluate.metrics import EMBED_BATCH_SIZE, Embedder

    sys.path.insert(0, str(REPO / "tasks" / "hepth_completion"))
    from utils import PrecomputeSemScores, process_generation  # the task's own hooks

    model_name = str(assets.path(args.model))
    docs = [{**d, "semscore_model": model_name} for d in documents(args.n)]
    completions = [" " + docs[(i + 1) % len(docs)]["y_true"] for i in range(len(docs))]

    embedder = Embedder(model_name)
    model = embedder.model  # loaded once, outside both timings
    t_task, t_floor = [], []
    for _ in range(args.repeats):
        metrics._embedder.cache_clear()
        task_embedder = metrics.get_embedder(model_name)
        task_embedder._model = model  # same loaded model, empty cache
        t0 = time.perf_counter()
        resps = PrecomputeSemScores().apply(list(completions), docs)
        task = [process_generation(d, [c]) for d, c in zip(docs, resps)]
        t_task.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        left = [c.strip() for c in completions] + [metrics.join_completion(d["prompt"], c) for d, c in zip(docs, completions)]
        right = [d["y_true"] for d in docs] + [d["abstract"] for d in docs]
        unique = list(dict.fromkeys(left + right))
        vec = model.encode(unique, batch_size=EMBED_BATCH_SIZE, convert_to_numpy=True, normalize_embeddings=True)
        pos = {t: i for i, t in enumerate(unique)}
        cos = np.einsum("ij,ij->i", vec[[pos[t] for t in left]], vec[[pos[t] for t in right]])
        t_floor.append(time.perf_counter() - t0)

    n = len(docs)
    ours = np.array([[r["semscore"] for r in task], [r["semscore_full"] for r in task]]).ravel()
    worst = float(np.max(np.abs(ours - cos)))
    print(f"SemScore: {n} documents ({len(unique)} distinct texts), {args.model}, CPU")
    print(f"  floor (one batched encode + cosines): {min(t_floor):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_floor)})")
    print(f"  task path (filter + process_results):  {min(t_task):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_task)})")
    print(f"  ratio {min(t_task) / min(t_floor):.2f}x (target <= 1.2x); max |difference| = {worst:.1e}")
    print(f"  mean semscore {ours[:n].mean():.4f}, semscore_full {ours[n:].mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
