"""Wall time of hepth_completion_ppl through lm-eval against the floor, in one process.

Floor: the same model (SmolLM2 asset, float32, CPU) scoring the same real hep-th abstracts
itself: BOS + tokens, length-sorted, padded batches of the same size, one forward pass per batch.
Both sides include loading the model from disk; imports are warmed first. Target: <= 1.3x.

    .venv/bin/python bench/eval_ppl.py [--n 32] [--batch-size 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-sample.jsonl"

# The same two paths as the GPU benchmark (bench/gpu.py), here on a CPU with SmolLM2.
from gpu import direct_perplexity, eval_perplexity


def hepth_records(n: int) -> list[dict]:
    from harness.ground.abstracts import clean_abstract, is_withdrawn, primary_category

    out = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if primary_category(r["categories"]) == "hep-th" and not is_withdrawn(r.get("comments"), r["abstract"]):
            out.append({"id": r["id"], "abstract": clean_abstract(r["abstract"])})
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} hep-th abstracts in {SAMPLE}")
    return out


def floor(model_dir: Path, abstracts: list[str], batch_size: int) -> list[float]:
    """The direct forward pass of bench/gpu.py, on the CPU in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return direct_perplexity(model, tok, abstracts, batch_size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs of each side")
    args = ap.parse_args()

    import logging

    import lm_eval.evaluator  # noqa: F401 -- warm imports outside the timings
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from harness import assets

    model_dir = assets.path("smollm2")
    records = hepth_records(args.n)
    abstracts = [r["abstract"] for r in records]
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        docs.write_text("".join(json.dumps(r) + "\n" for r in records))
        t_floor, t_lm = [], []
        for k in range(args.repeats):
            t0 = time.perf_counter()
            ref = floor(model_dir, abstracts, args.batch_size)
            t_floor.append(time.perf_counter() - t0)
            logging.disable(logging.INFO)
            t0 = time.perf_counter()
            by_id = eval_perplexity(model_dir, docs, Path(tmp) / f"out{k}", "cpu", "float32",
                                    args.batch_size)
            t_lm.append(time.perf_counter() - t0)
            logging.disable(logging.NOTSET)
            got = [by_id[r["id"]] for r in records]
    worst = max(abs(g / r - 1) for g, r in zip(got, ref))
    print(f"hepth_completion_ppl: {args.n} real hep-th abstracts, SmolLM2-135M float32 CPU, batch {args.batch_size}")
    print(f"  floor (direct, length-sorted batches): {min(t_floor):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_floor)})")
    print(f"  through lm-eval (feyntune eval path):  {min(t_lm):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_lm)})")
    print(f"  ratio {min(t_lm) / min(t_floor):.2f}x (target <= 1.3x); max |ppl_token / floor - 1| = {worst:.1e}")
    print(f"  mean ppl_token {sum(got) / len(got):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
