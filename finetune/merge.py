"""`feyntune merge`: fold a LoRA adapter into its base model and save a 16-bit model.

The reference study evaluated merged models. The adapter is merged into the base weights in
their unquantised form (the NF4 base of training is an approximation of them, as in the
reference), saved in bf16 by default, and checked: the merged model's logits on a few
abstracts must equal those of base + adapter (unmerged) in the same dtype.

    feyntune merge --base meta-llama/Llama-3.1-8B --adapter adapters/s1-all --out merged/s1-all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import FeynTuneError

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}
# Largest allowed |merged - unmerged| logit difference, relative to the logits' largest
# magnitude: merging reorders the low-precision sums, nothing more.
RELATIVE_TOLERANCE = {"bfloat16": 2e-2, "float16": 2e-3, "float32": 1e-4}
PROBE_TEXTS = (
    "We study the holographic dual of a strongly coupled gauge theory at finite temperature.",
    "Anomalies constrain the low-energy dynamics of supersymmetric theories in four dimensions.",
)


def _load_base(base: str, dtype):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FeynTuneError(f"cannot load base model {base!r}: {first}") from None


def max_logit_difference(model_a, model_b, tokenizer, texts=PROBE_TEXTS) -> tuple[float, float]:
    """(max |logits_a - logits_b|, max |logits_a|) over the probe texts."""
    import torch

    diff, scale = 0.0, 0.0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            a = model_a(input_ids=ids).logits.float()
            b = model_b(input_ids=ids).logits.float()
        diff = max(diff, float((a - b).abs().max()))
        scale = max(scale, float(a.abs().max()))
    return diff, scale


def merge_adapter(base: str, adapter: Path, out: Path, dtype: str = "bfloat16",
                  verify: bool = True) -> dict:
    """Merge, verify and save; returns the verification figures."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    dtype = DTYPES.get(dtype)
    if dtype is None:
        raise FeynTuneError(f"unknown dtype; use one of {', '.join(sorted(set(DTYPES.values())))}")
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FeynTuneError(f"{adapter} holds no PEFT adapter (adapter_config.json is missing)")
    torch_dtype = getattr(torch, dtype)
    tok_source = adapter if (adapter / "tokenizer_config.json").is_file() else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FeynTuneError(f"cannot load base model {base!r} (its tokenizer): {first}") from None

    print(f"merging {adapter} into {base} ({dtype})", file=sys.stderr)
    unmerged = PeftModel.from_pretrained(_load_base(base, torch_dtype), adapter).eval()
    reference = _load_base(base, torch_dtype).eval() if verify else None
    if reference is not None:
        # a second copy keeps the unmerged model intact: merge_and_unload mutates in place
        reference = PeftModel.from_pretrained(reference, adapter).eval()
    merged = unmerged.merge_and_unload().eval()

    report = {"dtype": dtype, "verified": False}
    if reference is not None:
        diff, scale = max_logit_difference(merged, reference, tokenizer)
        limit = RELATIVE_TOLERANCE[dtype] * max(scale, 1.0)
        report.update(max_abs_logit_difference=diff, logit_scale=scale, tolerance=limit)
        if not diff <= limit:
            raise FeynTuneError(
                f"merged logits differ from base + adapter by {diff:.4g} (> {limit:.4g}); not saved")
        report["verified"] = True
        print(f"verified: max |merged - unmerged| logit difference {diff:.3g} "
              f"(tolerance {limit:.3g})", file=sys.stderr)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return report


def cmd_merge(args) -> int:
    report = merge_adapter(args.base, args.adapter, args.out, args.dtype, verify=not args.no_verify)
    print(f"merged model written to {args.out} ({report['dtype']})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into its base model (16-bit)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the base model the adapter was trained on")
    p.add_argument("--adapter", required=True, type=Path, help="run folder of feyntune train")
    p.add_argument("--out", required=True, type=Path, help="folder for the merged model")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES),
                   help="weights of the merged model (default bfloat16)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the logit check against base + adapter (halves the memory)")
    p.set_defaults(func=cmd_merge)
