"""Abstracts in, training batches out: reading a curated set, tokenising, padding.

The reference tokenised each abstract without truncation or padding, with BOS and EOS around
it, and padded each batch to its longest abstract (rounded up to a multiple of 8) with EOS as
the pad token; padded positions carry label -100. Because pad == EOS, the labels are masked by
the attention mask, never by comparing ids, so the real EOS of every abstract is still learnt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.jsonl import iter_objects

SPLITS = ("train", "validation")
IGNORE_INDEX = -100


def split_files(data_dir: Path) -> dict[str, Path]:
    """`train.jsonl` and `validation.jsonl` of a curated set folder, checked to exist."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FeynTuneError(f"data folder {data_dir} does not exist (make one with: feyntune data build)")
    files = {split: data_dir / f"{split}.jsonl" for split in SPLITS}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise FeynTuneError(
            f"data folder {data_dir} lacks {' and '.join(missing)}; a curated set holds "
            "train.jsonl and validation.jsonl (JSON lines with an 'abstract' field)")
    return files


def read_texts(path: Path, field: str = "abstract") -> list[str]:
    """The `field` of every JSON line; a malformed line or an empty file is an error."""
    texts = []
    for lineno, record in iter_objects(path):
        text = record.get(field)
        if not isinstance(text, str) or not text.strip():
            raise FeynTuneError(f"{path}:{lineno}: no non-empty {field!r} field")
        texts.append(text)
    if not texts:
        raise FeynTuneError(f"{path} holds no abstracts")
    return texts


def special_ids(tokenizer) -> tuple[int | None, int]:
    """(BOS id or None, EOS id); a tokenizer without EOS cannot mark where an abstract ends."""
    if tokenizer.eos_token_id is None:
        raise FeynTuneError(f"the tokenizer of {tokenizer.name_or_path} has no EOS token")
    return tokenizer.bos_token_id, tokenizer.eos_token_id


def tokenize_abstract(tokenizer, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
    """BOS + tokens + EOS, added here by hand: tokenizers disagree on what they add themselves
    (Llama-3's adds BOS, SmolLM2's adds nothing), so the tokenizer is asked for none."""
    bos, eos = special_ids(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos and bos is not None:
        ids = [bos] + ids
    if add_eos:
        ids = ids + [eos]
    return ids


def tokenize_dataset(tokenizer, texts: list[str], add_bos: bool = True, add_eos: bool = True,
                     desc: str = "tokenising"):
    """A `datasets.Dataset` with `input_ids` and `length` (for length-grouped sampling)."""
    from datasets import Dataset

    def encode(batch):
        ids = [tokenize_abstract(tokenizer, t, add_bos, add_eos) for t in batch["text"]]
        return {"input_ids": ids, "length": [len(x) for x in ids]}

    ds = Dataset.from_dict({"text": texts})
    return ds.map(encode, batched=True, remove_columns=["text"], desc=desc,
                  load_from_cache_file=False, keep_in_memory=True)


@dataclass
class PaddingCollator:
    """Right-pads a batch to its longest sequence, rounded up to `pad_to_multiple_of`."""

    pad_token_id: int
    pad_to_multiple_of: int = 8

    def __call__(self, features: list[dict]):
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        m = self.pad_to_multiple_of
        width = -(-width // m) * m
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, (f, n) in enumerate(zip(features, lengths)):
            input_ids[row, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
