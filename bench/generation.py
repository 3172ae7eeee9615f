"""Generation throughput of the two backends of `feyntune reproduce`, measured in one run on the
same prompts: lm-eval's `hf` model (HF generate, static batches) against lm-eval's `vllm` model
(continuous batching), with the study's sampling settings (temperature 0.8, stop at EOS only).

Prompts are the first halves of the shared sample's hep-th abstracts (the task's prompt split);
new tokens are counted with the model's tokenizer. Each engine's start-up is excluded: one
`generate_until` call over all prompts is timed.

    python bench/generation.py                      # SmolLM2 (offline asset), CPU: 32 x 128
    python bench/generation.py --model DIR --prompts 512 --max-new 128 --dtype bfloat16

Prints new tokens/s of each backend and the vllm/hf ratio. vLLM's engine is a spawned process,
hence the `__main__` guard.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-sample.jsonl"


def hepth_records(sample: Path, n: int) -> list[dict]:
    from harness.ground.abstracts import clean_abstract, primary_category

    records = []
    with open(sample, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if primary_category(record["categories"]) == "hep-th":
                records.append({"id": record["id"], "abstract": clean_abstract(record["abstract"])})
                if len(records) == n:
                    break
    return records


def generation_requests(records: list[dict], n: int, max_new: int, extra: dict):
    """lm-eval generate_until requests with the study's sampling settings."""
    from lm_eval.api.instance import Instance

    from harness.ground.abstracts import split_prompt
    from harness.study import registry as study

    kwargs = {"until": [], "do_sample": True,
              "temperature": float(study.load().settings["temperature"]),
              "max_gen_toks": max_new, **extra}
    out = []
    for i, r in enumerate(records[:n]):
        prompt, _ = split_prompt(r["abstract"])
        out.append(Instance(request_type="generate_until", doc=r, arguments=(prompt, dict(kwargs)),
                            idx=0, doc_id=i))
    return out


def timed_generation(lm, tokenizer, requests) -> dict:
    """One generate_until call over all requests: new tokens, seconds, new tokens/s."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outputs = lm.generate_until(requests, disable_tqdm=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    new_tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
    return {"prompts": len(requests), "new_tokens": new_tokens, "seconds": round(seconds, 2),
            "tokens_per_s": new_tokens / seconds}


def vllm_lm(model: str, dtype: str, max_model_len: int, memory_share: float | None, seed: int):
    """lm-eval's vllm model with the settings `feyntune reproduce --backend vllm` gives it."""
    from lm_eval.api.registry import get_model

    from harness.evaluate import backends

    backends.require("vllm")
    backends.allow_vllm_cpu()
    share = memory_share or backends.default_memory_share()
    backends.check_memory_share(share)
    engine = backends.Engine("vllm", dtype, seed, max_model_len, share)
    return get_model("vllm").create_from_arg_string(engine.model_args(model),
                                                    {"batch_size": "auto"})


def compare(model: str, records: list[dict], max_new: int, dtype: str, hf_batch: int,
            memory_share: float | None, seed: int, device: str) -> dict:
    import gc

    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from harness.evaluate import backends

    tokenizer = AutoTokenizer.from_pretrained(model)
    n = len(records)
    hf = HFLM(pretrained=model, device=device, dtype=dtype, batch_size=hf_batch)
    hf_row = timed_generation(hf, tokenizer, generation_requests(records, n, max_new, {}))
    del hf
    gc.collect()
    print(f"hf   (batch {hf_batch}): {hf_row['new_tokens']} new tokens in {hf_row['seconds']} s = "
          f"{hf_row['tokens_per_s']:,.1f} new tokens/s", flush=True)
    longest = max(len(tokenizer(r["abstract"])["input_ids"]) for r in records)
    vllm = vllm_lm(model, dtype, longest + 1 + max_new, memory_share, seed)
    vllm_row = timed_generation(vllm, tokenizer, generation_requests(
        records, n, max_new, {"seed": seed}))
    print(f"vllm (continuous batching): {vllm_row['new_tokens']} new tokens in "
          f"{vllm_row['seconds']} s = {vllm_row['tokens_per_s']:,.1f} new tokens/s", flush=True)
    ratio = vllm_row["tokens_per_s"] / hf_row["tokens_per_s"]
    print(f"vllm/hf new tokens/s ratio: {ratio:.2f} ({n} prompts x at most {max_new} new "
          f"tokens, temperature 0.8, {dtype}, {'CUDA' if backends.on_cuda() else 'CPU'})")
    return {"hf": hf_row, "vllm": vllm_row, "ratio": ratio}


def main() -> int:
    from harness import assets

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the SmolLM2 asset)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--hf-batch", type=int, default=32, help="hf batch size (default: 32)")
    ap.add_argument("--memory-share", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", type=Path, help="write the figures here")
    opts = ap.parse_args()
    import torch

    model = opts.model or str(assets.path("smollm2"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    figures = compare(model, hepth_records(SAMPLE, opts.prompts), opts.max_new, opts.dtype,
                      opts.hf_batch, opts.memory_share, opts.seed, device)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
