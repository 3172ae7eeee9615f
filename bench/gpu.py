"""The study at Llama-3.1-8B scale on one GPU, measured in one run (about 6 minutes on an H100/H200).

A Llama-3.1-8B with random weights is built from its configuration (same shapes, FLOPs and
memory as the real one; nothing from a hub) with the Llama-3 tokenizer asset, saved once, and
measured through the project's own code paths:

1. perplexity: `feyntune eval` (lm-eval, hepth_completion_ppl) against a direct length-sorted
   forward pass of the same abstracts: wall time ratio and per-abstract agreement;
2. QLoRA training steps (NF4, batch 16, real abstracts): paper vs fast preset, LoRA-all and
   LoRA-QKV: seconds per step, tokens/s, peak memory, and the fast preset's checkpointing
   decision;
3. generation through lm-eval's hf model (sampling, t 0.8) at a few batch sizes, with the
   dynamic and the static KV cache (static compiles the decoding step), and through vLLM
   when it is importable;
4. projections for the full study: one s1 epoch; perplexity and generation of the 15,808
   test abstracts.

    python bench/gpu.py                # on a GPU: the 8B run
    python bench/gpu.py --tiny         # on a CPU: the same code paths on a tiny Llama (seconds)

Without a GPU the script runs the tiny configuration (so `make bench` works everywhere).
`--json FILE` writes every figure. Random weights generate to the token cap (they almost never
emit EOS), so generation figures are for full-length completions.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# bench/generation.py, beside this script (its folder is sys.path[0] when run as a script)
from generation import generation_requests, timed_generation, vllm_lm

# the project's real arXiv sample, found as the tests find it
SHARED_DATA = Path(os.environ.get("FEYNTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED_DATA / "arxiv" / "arxiv-sample.jsonl"

# Llama-3.1-8B's published configuration (config.json of meta-llama/Llama-3.1-8B), as data.
LLAMA_31_8B = {
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "bos_token_id": 128000, "eos_token_id": 128001, "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False,
}
# The same architecture, small enough for a CPU test (widths multiples of 64 for NF4 blocks).
TINY = {**LLAMA_31_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}

# The study's sizes, for the projections.
S1_TRAIN_ABSTRACTS = 73_768
TEST_ABSTRACTS = 15_808
STUDY_MAX_NEW_TOKENS = 1024

SETTINGS = {
    "gpu": {"docs": 0, "words": 0, "ppl_batch": 64, "train_batch": 16, "train_steps": 4,
            "gen_batches": [16, 64, 128], "gen_tokens": 128, "static_batch": 64},
    # abstracts cut to their first words: a 128k-token vocabulary dominates a tiny model's cost
    "tiny": {"docs": 6, "words": 24, "ppl_batch": 4, "train_batch": 4, "train_steps": 1,
             "gen_batches": [1, 2], "gen_tokens": 4, "static_batch": 2},
}


def say(line: str = "") -> None:
    print(line, flush=True)


# ---------------------------------------------------------------- model and data

def build_model(spec: dict, tokenizer_dir: Path, out: Path, device: str, dtype) -> float:
    """A random-init model of `spec` saved with the tokenizer; returns the seconds taken."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    t0 = time.perf_counter()
    torch.manual_seed(0)
    config = LlamaConfig(**spec)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del model
    free_memory()
    return time.perf_counter() - t0


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_gib(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 1024 ** 3
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def sample_abstracts(sample: Path, n: int, words: int = 0) -> list[dict]:
    """Every record of the shared sample with a non-empty abstract (cleaned by the shared
    rules), in file order; the first `n` when n > 0, cut to `words` words when words > 0."""
    from harness.ground.abstracts import clean_abstract

    out = []
    if not sample.is_file():
        raise SystemExit(f"the arXiv sample is not at {sample}; pass --sample FILE")
    for line in sample.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        text = clean_abstract(r.get("abstract") or "")
        if words:
            text = " ".join(text.split()[:words])
        if text:
            out.append({"id": r["id"], "title": r.get("title") or "", "abstract": text})
        if n and len(out) == n:
            break
    return out


# ---------------------------------------------------------------- 1. perplexity

def direct_perplexity(model, tokenizer, abstracts: list[str], batch_size: int) -> list[float]:
    """Per-abstract token perplexity: BOS + tokens, length-sorted batches, one forward pass each."""
    import torch

    device = next(model.parameters()).device
    seqs = [[tokenizer.bos_token_id] + tokenizer(a, add_special_tokens=False)["input_ids"]
            for a in abstracts]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    ppl = [0.0] * len(seqs)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.eos_token_id, device=device)
            mask = torch.zeros((len(idx), width), dtype=torch.long, device=device)
            for row, i in enumerate(idx):
                ids[row, :len(seqs[i])] = torch.tensor(seqs[i], device=device)
                mask[row, :len(seqs[i])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            tok_lp = (logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]).sum(1).tolist()
            for row, i in enumerate(idx):
                ppl[i] = math.exp(-tok_lp[row] / (len(seqs[i]) - 1))
    return ppl


def eval_perplexity(model_dir: Path, docs: Path, out: Path, device: str, dtype: str,
                    batch_size: int) -> dict[str, float]:
    """`feyntune eval --tasks hepth_completion_ppl`, in this process; ppl_token by document id."""
    from harness.evaluate.command import run_lm_eval

    code = run_lm_eval(["run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype={dtype}",
                        "--tasks", "hepth_completion_ppl", "--device", device,
                        "--batch_size", str(batch_size),
                        "--metadata", json.dumps({"hepth_data": str(docs)}),
                        "--log_samples", "--output_path", str(out)])
    if code:
        raise SystemExit(f"feyntune eval exited with {code}")
    (path,) = list(out.rglob("samples_hepth_completion_ppl_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["doc"]["id"]: r["ppl_token"] for r in rows}


def bench_perplexity(model_dir: Path, records: list[dict], work: Path, device: str, dtype,
                     batch_size: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    docs = work / "docs.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in records))
    dtype_name = str(dtype).replace("torch.", "")

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=device).eval()
    if device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    direct = direct_perplexity(model, tok, [r["abstract"] for r in records], batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    score_s = time.perf_counter() - t0
    n_tokens = sum(len(tok(r["abstract"], add_special_tokens=False)["input_ids"]) for r in records)
    del model
    free_memory()

    logging.disable(logging.INFO)
    t0 = time.perf_counter()
    through = eval_perplexity(model_dir, docs, work / "eval", device, dtype_name, batch_size)
    eval_s = time.perf_counter() - t0
    logging.disable(logging.NOTSET)
    free_memory()

    ratios = [through[r["id"]] / p - 1 for r, p in zip(records, direct) if r["id"] in through]
    return {
        "abstracts": len(records), "scored_by_eval": len(through), "tokens": n_tokens,
        "direct_load_s": round(load_s, 2), "direct_score_s": round(score_s, 2),
        "eval_total_s": round(eval_s, 2),
        "ratio_eval_to_direct": round(eval_s / (load_s + score_s), 3),
        "median_abs_rel_diff": statistics.median(abs(x) for x in ratios),
        "max_abs_rel_diff": max(abs(x) for x in ratios),
        "seconds_per_abstract_eval": eval_s / len(records),
        "seconds_per_abstract_direct": score_s / len(records),
    }


# ---------------------------------------------------------------- 2. training

def epoch_batches(cfg, train_ds, collator, tokenizer, work: Path):
    """One epoch of batches in the order the Trainer's own sampler gives for this config."""
    import torch
    from transformers import Trainer

    from finetune import compat
    from finetune import config as C

    args = compat.training_arguments_class()(**compat.for_installed(
        C.trainer_arguments(cfg, str(work), bf16=False, use_cpu=not torch.cuda.is_available())))
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=train_ds,
                      data_collator=collator, processing_class=tokenizer)
    return list(trainer.get_train_dataloader())


def time_steps(model, batches: list, steps: int, seed: int) -> dict:
    """Optimizer steps on `steps` batches drawn at random from the epoch (after one warm-up)."""
    import torch

    device = next(p.device for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4,
                                  betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    model.train()
    picks = random.Random(seed).sample(range(len(batches)), min(steps + 1, len(batches)))

    def step(batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[picks[0]])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, real, padded = 0.0, 0, 0
    for i in picks[1:]:
        t0 = time.perf_counter()
        step(batches[i])
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        real += int(batches[i]["attention_mask"].sum())
        padded += batches[i]["attention_mask"].numel()
    n = max(len(picks) - 1, 1)
    return {"steps": len(picks) - 1, "s_per_step": seconds / n, "tokens_per_s": real / seconds,
            "padding_share": 1 - real / padded, "peak_gib": peak_gib()}


def bench_training(model_dir: Path, records: list[dict], work: Path, batch_size: int,
                   steps: int) -> dict:
    from transformers import AutoTokenizer

    from finetune import collate, memory
    from finetune import config as C
    from finetune.train import _hardware, load_model, set_checkpointing

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.eos_token
    train_ds = collate.tokenize_dataset(tok, [r["abstract"] for r in records], desc="tokenising")
    collator = collate.PaddingCollator(tok.eos_token_id, 8)
    results = {}
    for variant in ("all", "qkv"):
        presets = {name: C.resolve(name, None, {"base": str(model_dir), "lora": {"variant": variant},
                                                "per_device_batch_size": batch_size})
                   for name in ("paper", "fast")}
        use_cpu, _, compute_dtype, attn = _hardware(presets["paper"])
        t0 = time.perf_counter()
        model = load_model(presets["paper"], compute_dtype, attn, use_cpu, checkpointing=False)
        load_s = time.perf_counter() - t0
        for name, cfg in presets.items():
            set_checkpointing(model, False)  # the probe measures the peak without it
            decision = memory.choose(cfg.gradient_checkpointing, model, train_ds, batch_size, collator)
            set_checkpointing(model, decision.on)
            batches = epoch_batches(cfg, train_ds, collator, tok, work / f"{variant}-{name}")
            figures = time_steps(model, batches, steps, cfg.seed)
            figures.update(checkpointing=decision.on, reason=decision.reason,
                           nf4_load_s=round(load_s, 1))
            results[f"{name}/lora-{variant}"] = figures
            say(f"  {name:5s} LoRA-{variant:3s}: {figures['s_per_step']:.3f} s/step, "
                f"{figures['tokens_per_s']:,.0f} tokens/s, padding {figures['padding_share']:.0%}, "
                f"checkpointing {'on' if decision.on else 'off'}, peak "
                f"{figures['peak_gib'] if figures['peak_gib'] is not None else 'n/a'} GiB")
        del model
        free_memory()
    return results


# ---------------------------------------------------------------- 3. generation

def time_generation(lm, tokenizer, records: list[dict], batch: int, max_new: int,
                    extra: dict) -> dict:
    lm.batch_size_per_gpu = batch
    # the warm-up runs the same prompts: a static cache compiles once per shape
    lm.generate_until(generation_requests(records, 2 * batch, max_new, extra), disable_tqdm=True)
    row = timed_generation(lm, tokenizer, generation_requests(records, 2 * batch, max_new, extra))
    return {"batch": batch, **row}


def bench_generation(model_dir: Path, records: list[dict], device: str, dtype, batches: list[int],
                     max_new: int, static_batch: int) -> list[dict]:
    import importlib.util

    from lm_eval.models.huggingface import HFLM

    attns = ["sdpa"] + (["flash_attention_2"] if device == "cuda"
                        and importlib.util.find_spec("flash_attn") else [])
    rows = []
    for attn in attns:
        lm = HFLM(pretrained=str(model_dir), device=device, dtype=dtype, batch_size=batches[0],
                  attn_implementation=attn)
        for batch in batches:
            row = time_generation(lm, lm.tokenizer, records, batch, max_new, {})
            rows.append({"attn": attn, "cache": "dynamic", **row})
            say(f"  hf {attn:17s} dynamic cache batch {batch:4d}: {row['tokens_per_s']:8,.0f} new tokens/s")
        # the static cache makes transformers compile the decoding step (one compile per shape)
        if static_batch:
            row = time_generation(lm, lm.tokenizer, records, static_batch, max_new,
                                  {"cache_implementation": "static"})
            rows.append({"attn": attn, "cache": "static (compiled on CUDA)", **row})
            say(f"  hf {attn:17s} static cache  batch {static_batch:4d}: "
                f"{row['tokens_per_s']:8,.0f} new tokens/s")
        del lm
        free_memory()
    if device == "cuda" and importlib.util.find_spec("vllm"):
        row = bench_vllm(model_dir, records, max_new)
        best_hf = max(r["tokens_per_s"] for r in rows)
        row["vllm_over_best_hf"] = row["tokens_per_s"] / best_hf
        say(f"  vllm/hf new tokens/s ratio (against the fastest hf setting): "
            f"{row['vllm_over_best_hf']:.2f}")
        rows.append(row)
    return rows


def bench_vllm(model_dir: Path, records: list[dict], max_new: int) -> dict:
    """lm-eval's vllm model with the settings of `feyntune reproduce --backend vllm`
    (bench/generation.py builds it), on 512 prompts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    longest = max(len(tok(r["abstract"])["input_ids"]) for r in records)
    lm = vllm_lm(str(model_dir), "bfloat16", longest + 1 + max_new, 0.85, 1234)
    row = timed_generation(lm, tok, generation_requests(records, 512, max_new, {"seed": 1234}))
    say(f"  vLLM (lm-eval vllm model), {row['prompts']} prompts: {row['tokens_per_s']:,.0f} "
        "new tokens/s")
    return {"attn": "vllm", "cache": "paged", "batch": "auto", **row}


# ---------------------------------------------------------------- 4. projections

def projections(ppl: dict, train: dict, gen: list[dict], records: list[dict], tokenizer) -> dict:
    from finetune import config as C
    from harness.evaluate.documents import split_prompt

    steps = C.steps_per_epoch(S1_TRAIN_ABSTRACTS, C.resolve("paper"), 1)
    epoch_min = {k: v["s_per_step"] * steps / 60 for k, v in train.items()}
    completions = [len(tokenizer(split_prompt(r["abstract"])[1], add_special_tokens=False)["input_ids"])
                   for r in records]
    expected_new = statistics.mean(completions)
    best = max(gen, key=lambda r: r["tokens_per_s"])
    return {
        "s1_epoch_steps": steps,
        "s1_epoch_minutes": epoch_min,
        "test_ppl_minutes_eval": ppl["seconds_per_abstract_eval"] * TEST_ABSTRACTS / 60,
        "test_ppl_minutes_direct": ppl["seconds_per_abstract_direct"] * TEST_ABSTRACTS / 60,
        "expected_new_tokens_per_abstract": expected_new,
        "best_generation": best,
        "test_generation_hours_expected": TEST_ABSTRACTS * expected_new / best["tokens_per_s"] / 3600,
        "test_generation_hours_at_cap": TEST_ABSTRACTS * STUDY_MAX_NEW_TOKENS / best["tokens_per_s"] / 3600,
    }


def report(figures: dict) -> None:
    ppl, train, proj = figures["perplexity"], figures["training"], figures["projections"]
    say("\n== summary")
    say(f"perplexity, {ppl['abstracts']} abstracts ({ppl['tokens']:,} tokens): feyntune eval "
        f"{ppl['eval_total_s']:.1f} s vs direct {ppl['direct_load_s'] + ppl['direct_score_s']:.1f} s "
        f"(load {ppl['direct_load_s']:.1f} + score {ppl['direct_score_s']:.1f}): ratio "
        f"{ppl['ratio_eval_to_direct']:.2f}x (target <= 1.3x); per-abstract ppl differ by "
        f"{ppl['median_abs_rel_diff']:.2g} (median, relative), {ppl['max_abs_rel_diff']:.2g} (max)")
    for variant in ("all", "qkv"):
        paper, fast = train[f"paper/lora-{variant}"], train[f"fast/lora-{variant}"]
        say(f"training LoRA-{variant}: fast / paper = {fast['tokens_per_s'] / paper['tokens_per_s']:.2f}x "
            f"tokens/s ({paper['s_per_step']:.3f} -> {fast['s_per_step']:.3f} s/step; target >= 1.8x "
            f"for LoRA-all)")
    say(f"projection, one s1 epoch ({proj['s1_epoch_steps']:,} steps): " + ", ".join(
        f"{k} {v:.0f} min" for k, v in proj["s1_epoch_minutes"].items()))
    say(f"projection, perplexity of the {TEST_ABSTRACTS:,} test abstracts: "
        f"{proj['test_ppl_minutes_eval']:.1f} min through feyntune eval "
        f"(direct {proj['test_ppl_minutes_direct']:.1f} min), plus model load")
    best = proj["best_generation"]
    say(f"projection, generation for the {TEST_ABSTRACTS:,} test prompts with the fastest setting "
        f"({best['attn']}, {best['cache']} cache, batch {best['batch']}: {best['tokens_per_s']:,.0f} "
        f"new tokens/s): {proj['test_generation_hours_expected']:.1f} h at the reference "
        f"completions' mean length ({proj['expected_new_tokens_per_abstract']:.0f} tokens), "
        f"{proj['test_generation_hours_at_cap']:.1f} h if every completion ran to "
        f"{STUDY_MAX_NEW_TOKENS} tokens")
    peaks = figures["peak_gib"]
    say("peak GPU memory: " + ("n/a (CPU)" if all(v is None for v in peaks.values()) else
                               ", ".join(f"{k} {v} GiB" for k, v in peaks.items()))
        + f"; whole run {figures['wall_s']:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny Llama on the CPU (the test suite's run)")
    ap.add_argument("--docs", type=int, help="abstracts for perplexity and training batches "
                                             "(default: all of the sample on a GPU)")
    ap.add_argument("--train-steps", type=int, help="timed optimizer steps per configuration")
    ap.add_argument("--gen-batches", help="generation batch sizes, comma-separated (GPU: 16,64,128)")
    ap.add_argument("--gen-tokens", type=int, help="new tokens per generation (GPU: 128)")
    ap.add_argument("--static-batch", type=int,
                    help="batch size of the static-cache run, 0 to skip it (GPU: 64)")
    ap.add_argument("--sample", type=Path, default=SAMPLE,
                    help=f"arXiv metadata as JSON lines (default {SAMPLE})")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    opts = ap.parse_args()

    started = time.perf_counter()
    import lm_eval.evaluator  # noqa: F401 -- imports warmed outside the timings
    import torch
    import transformers

    from harness import assets

    on_gpu = torch.cuda.is_available() and not opts.tiny
    if not on_gpu and not opts.tiny:
        say("no GPU: running the tiny CPU configuration (the 8B run needs a GPU)")
    mode = "gpu" if on_gpu else "tiny"
    s = dict(SETTINGS[mode])
    if opts.docs:
        s["docs"] = opts.docs
    if opts.train_steps:
        s["train_steps"] = opts.train_steps
    if opts.gen_batches:
        s["gen_batches"] = [int(b) for b in opts.gen_batches.split(",")]
    if opts.gen_tokens:
        s["gen_tokens"] = opts.gen_tokens
    if opts.static_batch is not None:
        s["static_batch"] = opts.static_batch
    device = "cuda" if on_gpu else "cpu"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    spec = LLAMA_31_8B if on_gpu else TINY
    records = sample_abstracts(opts.sample, s["docs"], s["words"])
    card = torch.cuda.get_device_name() if on_gpu else "CPU"
    say(f"== {'Llama-3.1-8B' if on_gpu else 'tiny Llama'} (random weights) on {card}, "
        f"{str(dtype).replace('torch.', '')}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; {len(records)} abstracts of the shared sample")

    figures = {"mode": mode, "device": card, "settings": s}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        figures["build_s"] = build_model(spec, assets.path("llama3-tokenizer"), model_dir, device, dtype)
        say(f"model built and saved in {figures['build_s']:.0f} s")
        peak_gib(reset=True)

        say("\n== 1. perplexity: feyntune eval vs a direct length-sorted forward pass")
        figures["perplexity"] = bench_perplexity(model_dir, records, work, device, dtype, s["ppl_batch"])
        say(f"  {json.dumps(figures['perplexity'])}")
        peaks = {"perplexity": peak_gib(reset=True)}

        say(f"\n== 2. QLoRA steps, batch {s['train_batch']}: paper vs fast")
        figures["training"] = bench_training(model_dir, records, work, s["train_batch"], s["train_steps"])
        # each configuration's timed steps reset the counter; the phase's peak is their largest
        peaks["training"] = max((t["peak_gib"] for t in figures["training"].values()
                                 if t["peak_gib"] is not None), default=None)
        peak_gib(reset=True)

        say(f"\n== 3. generation through lm-eval's hf model ({s['gen_tokens']} new tokens, t 0.8)")
        figures["generation"] = bench_generation(model_dir, records, device, dtype, s["gen_batches"],
                                                 s["gen_tokens"], s["static_batch"])
        peaks["generation"] = peak_gib()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        figures["projections"] = projections(figures["perplexity"], figures["training"],
                                             figures["generation"], records, tok)
    figures["peak_gib"] = peaks
    figures["wall_s"] = time.perf_counter() - started
    report(figures)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
