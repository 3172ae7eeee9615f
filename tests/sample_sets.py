"""Set-up for tests and benchmarks, not a pipeline step: small s1-like training sets cut from
the shared arXiv sample, and tiny random Llamas with a real tokenizer.

Tests import it by name (pytest puts tests/ on the path); bench scripts add tests/ themselves.

Real curated sets come from `feyntune data build` (finetune/curate.py), which owns the
reference's split rules; this only needs hep-th abstracts selected and cleaned by the shared
rules of harness/ground/abstracts.py, shuffled with a fixed seed and cut 70/15/15.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.ground.abstracts import (
    clean_abstract,
    in_category,
    is_control,
    is_withdrawn,
    primary_category,
)


def hepth_abstracts(sample_path: Path) -> list[dict]:
    records = []
    with open(sample_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if not in_category(primary_category(r.get("categories", "")), "hep-th"):
                continue
            if is_control(r.get("id", "")) or is_withdrawn(r.get("comments"), r.get("abstract")):
                continue
            records.append({"id": r["id"], "abstract": clean_abstract(r["abstract"])})
    return records


def write_s1_like(sample_path: Path, out_dir: Path, seed: int = 42,
                  limit: dict[str, int] | None = None) -> dict[str, int]:
    """Write train/validation/test.jsonl under `out_dir`; `limit` caps a split's size."""
    records = hepth_abstracts(sample_path)
    random.Random(seed).shuffle(records)
    n_train = int(0.7 * len(records))
    n_val = (len(records) - n_train) // 2
    splits = {"train": records[:n_train], "validation": records[n_train:n_train + n_val],
              "test": records[n_train + n_val:]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, rows in splits.items():
        rows = rows[: (limit or {}).get(name, len(rows))]
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        sizes[name] = len(rows)
    return sizes


def write_short_set(sample_path: Path, out_dir: Path, n_train: int = 8, n_validation: int = 4,
                    words: int = 16) -> Path:
    """Real hep-th abstracts cut to their first `words` words: short sequences keep CPU test
    runs to seconds while the text stays real."""
    records = hepth_abstracts(sample_path)
    random.Random(0).shuffle(records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", records[:n_train]),
                       ("validation", records[n_train:n_train + n_validation])):
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": row["id"],
                                    "abstract": " ".join(row["abstract"].split()[:words])}) + "\n" for row in rows)
    return out_dir


def build_tiny_llama(tokenizer_dir: Path, out_dir: Path, seed: int = 0, layers: int = 2,
                     hidden: int = 64) -> Path:
    """A random Llama (2 layers by default) with a real tokenizer and the Llama projection
    names, saved as a model folder; its widths are multiples of 64 so NF4 blocks fit."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
