"""Training throughput: the reference's batching (random order, each batch padded to its longest
abstract) against length-grouped batching (`--group-by-length`), in the same run.

Data: s1-like hep-th abstracts of the shared sample (about 260 for training), cleaned by the
shared rules. Model: the embedded SmolLM2-135M with the paper recipe (NF4, LoRA-all, batch 16,
activation checkpointing). Both batch orders come from the Trainer's own samplers.

Padding share is counted over one whole epoch of each sampler. A full epoch of QLoRA steps
takes too long on a 2-core CPU, so tokens/s is timed on `--batches` batches drawn at random
(seeded) from each sampler's epoch, alternating the two samplers so that a busy machine slows
both alike; the epoch time is extrapolated from the measured padded-token rate.

    .venv/bin/python bench/train.py [--batches 3] [--batch-size 16] [--lora all]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # sample_sets: test and bench set-up

SAMPLE = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-sample.jsonl"

# The Trainer's own epoch order, as the GPU benchmark takes it.
from gpu import epoch_batches


def padding_stats(batches):
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return real, total


def full_scale_padding(lengths, batch_size, seed, n=73_768):
    """Padding of both orders at the size of the real s1 train split, lengths resampled from the
    sample: the Trainer's grouping sorts mega-batches of min(n // (4 * batch), 50) batches,
    so on ~260 abstracts it sorts only within 4 mega-batches and understates the gain."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(seed)
    big = [rng.choice(lengths) for _ in range(n)]

    def padded(order):
        total = 0
        for i in range(0, n, batch_size):
            width = max(big[j] for j in order[i:i + batch_size])
            total += -(-width // 8) * 8 * len(order[i:i + batch_size])
        return total

    g = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(n, generator=g).tolist()
    grouped = get_length_grouped_indices(big, batch_size, generator=g)
    real = sum(big)
    pr, pg = padded(shuffled), padded(grouped)
    print(f"  at the real s1 size ({n:,} abstracts, lengths resampled): padding share random "
          f"{1 - real / pr:.1%}, grouped {1 - real / pg:.1%}; padded-token ratio {pr / pg:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=3, help="timed batches per sampler")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lora", default="all", choices=["qkv", "all"])
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    opts = ap.parse_args()

    import torch
    from sample_sets import write_s1_like
    from transformers import AutoTokenizer, set_seed

    from finetune import collate
    from finetune import config as C
    from finetune.train import _hardware, load_model
    from harness import assets

    base = str(assets.path("smollm2"))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = write_s1_like(opts.sample, Path(tmp) / "s1")
        texts = collate.read_texts(Path(tmp) / "s1" / "train.jsonl")
    cfg = C.resolve("paper", None, {"base": base, "lora": {"variant": opts.lora},
                                    "per_device_batch_size": opts.batch_size})
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    train_ds = collate.tokenize_dataset(tokenizer, texts)
    collator = collate.PaddingCollator(tokenizer.eos_token_id, cfg.data_settings.pad_to_multiple_of)
    use_cpu, _, compute_dtype, attn = _hardware(cfg)

    orders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, grouped in (("random (reference)", False), ("length-grouped", True)):
            cfg.data_settings.group_by_length = grouped
            orders[name] = epoch_batches(cfg, train_ds, collator, tokenizer, Path(tmp))

    print(f"s1-like train split of the shared sample: {sizes['train']} abstracts, "
          f"{sum(train_ds['length']):,} tokens; batch {opts.batch_size}, "
          f"{len(next(iter(orders.values())))} batches per epoch; SmolLM2-135M NF4 LoRA-{opts.lora}, "
          f"{'CPU' if use_cpu else 'GPU'}, activation checkpointing on")
    padded = {}
    for name, batches in orders.items():
        real, total = padding_stats(batches)
        padded[name] = total
        print(f"  {name:20s} epoch: {total:,} padded tokens, padding share {1 - real / total:.1%}")
    # a step costs about its padded tokens, so this is the speed-up grouping can give at most
    print(f"  padded-token ratio random / grouped: "
          f"{padded['random (reference)'] / padded['length-grouped']:.2f}x (machine-independent bound)")
    full_scale_padding(train_ds["length"], opts.batch_size, cfg.seed)

    set_seed(cfg.seed)
    model = load_model(cfg, compute_dtype, attn, use_cpu)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.optim.learning_rate)
    device = next(model.parameters()).device

    def step(batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rng = random.Random(cfg.seed)
    picks = {name: rng.sample(range(len(b)), min(opts.batches, len(b))) for name, b in orders.items()}
    step(orders["random (reference)"][0])  # warm-up: first-call allocations and kernel setup
    timed = {name: {"seconds": 0.0, "real": 0, "padded": 0} for name in orders}
    for i in range(opts.batches):
        for name, batches in orders.items():
            if i >= len(picks[name]):
                continue
            batch = batches[picks[name][i]]
            seconds = step(batch)
            t = timed[name]
            t["seconds"] += seconds
            t["real"] += int(batch["attention_mask"].sum())
            t["padded"] += batch["attention_mask"].numel()
            print(f"  {name:20s} batch {i + 1}/{opts.batches}: {tuple(batch['input_ids'].shape)}, "
                  f"{seconds:.1f} s", flush=True)

    rates, timed_rates = {}, {}
    print(f"\nthroughput from {opts.batches} timed batches per sampler (drawn at random from its epoch);"
          " epoch figures extrapolate the padded-token rate to the whole epoch:")
    for name, t in timed.items():
        real, total = padding_stats(orders[name])
        epoch_seconds = total / (t["padded"] / t["seconds"])
        rates[name] = real / epoch_seconds
        timed_rates[name] = t["real"] / t["seconds"]
        print(f"  {name:20s} epoch: {rates[name]:7.1f} tokens/s (non-padding), projected "
              f"{epoch_seconds / 60:5.1f} min, padding share {1 - real / total:.1%}; "
              f"timed batches alone: {timed_rates[name]:7.1f} tokens/s")
    ratio = rates["length-grouped"] / rates["random (reference)"]
    direct = timed_rates["length-grouped"] / timed_rates["random (reference)"]
    print(f"\nlength-grouped / random: {ratio:.2f}x tokens/s over the epoch "
          f"({direct:.2f}x on the timed batches alone; target >= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
