"""`feyntune merge`: fold a LoRA adapter into its base model and save a 16-bit model.

The reference study evaluated merged models. The adapter is merged into the base weights in
their unquantised form (the NF4 base of training is an approximation of them, as in the
reference), in float32, then saved in bf16 by default, and checked: the per-token
log-likelihoods of a few abstracts under the saved model must match base + adapter
(unmerged, float32) within what rounding to the saved dtype explains.

    feyntune merge --base meta-llama/Llama-3.1-8B --adapter adapters/s1-all --out merged/s1-all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.ground.errors import FeynTuneError, first_line

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}
# Texts of the verification, written for it: what the evaluation scores is the log-likelihood
# of each token of an abstract, so that is what is compared.
PROBE_TEXTS = (
    "We study the holographic dual of a strongly coupled gauge theory at finite temperature.",
    "Anomalies constrain the low-energy dynamics of supersymmetric theories in four dimensions.",
    ("The entanglement entropy of a region in the boundary theory is computed by a minimal "
     "surface in the bulk, and we find its first quantum correction."),
    ("We construct new black hole solutions of five-dimensional supergravity with scalar hair "
     "and discuss their thermodynamics and stability."),
)
# Rounding the merged weights to the saved dtype moves the log-likelihoods by about as much as
# rounding the base alone does; a merge is accepted within this multiple of the base's own
# rounding shift ...
NOISE_MULTIPLE = 3.0
# ... plus what float32 itself leaves: W + BA sums in another order than Wx + B(Ax), a few
# dozen float32 units of relative error over the depth (relative to the log-likelihoods' size).
FLOAT32_REORDERING = 64 * 2.0 ** -23


def _load_base(base: str, dtype):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as err:
        first = first_line(err)
        raise FeynTuneError(f"cannot load base model {base!r}: {first}") from None


def token_logprobs(model, tokenizer, texts=PROBE_TEXTS):
    """The log-probability of every next token of every probe text (float32, one tensor)."""
    import torch

    device = next(model.parameters()).device
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"].to(device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[0, :-1], dim=-1)
        out.append(logp.gather(1, ids[0, 1:, None])[:, 0].cpu())
    return torch.cat(out)


def logprob_shift(a, b) -> float:
    """Mean |difference| of per-token log-likelihoods: the size of the change in what a
    perplexity evaluation sums (always >= |log ppl_a - log ppl_b|)."""
    return float((a - b).abs().mean())


def tolerance(base_rounding_shift: float, logprob_scale: float) -> float:
    """The accepted shift: NOISE_MULTIPLE x the shift that rounding the base to the saved
    dtype causes (measured, so it follows the dtype and the depth), plus float32's reordering
    error on log-likelihoods of size `logprob_scale` (their mean magnitude)."""
    return NOISE_MULTIPLE * base_rounding_shift + FLOAT32_REORDERING * max(logprob_scale, 1.0)


def merge_adapter(base: str, adapter: Path, out: Path, dtype: str = "bfloat16",
                  verify: bool = True) -> dict:
    """Merge in float32, cast to `dtype`, verify and save; returns the verification figures.

    The merge is done in float32 so that W + BA is rounded once, when cast to the saved
    dtype. The check compares the per-token log-likelihoods of the probe texts under the
    saved model with those of base + adapter unmerged in float32 (the exact reference), and
    accepts the merge when the shift is within a few times the shift that casting the base
    alone to `dtype` causes: that is the rounding any 16-bit evaluation of this model pays.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    dtype = DTYPES.get(dtype)
    if dtype is None:
        raise FeynTuneError(f"unknown dtype; use one of {', '.join(sorted(set(DTYPES.values())))}")
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FeynTuneError(f"{adapter} holds no PEFT adapter (adapter_config.json is missing)")
    tok_source = adapter if (adapter / "tokenizer_config.json").is_file() else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    except (OSError, ValueError) as err:
        first = first_line(err)
        raise FeynTuneError(f"cannot load base model {base!r} (its tokenizer): {first}") from None

    print(f"merging {adapter} into {base} (in float32, saved as {dtype})", file=sys.stderr)
    report = {"dtype": dtype, "verified": False}
    if verify:
        # The rounding shift of the base alone. The 16-bit copy is scored and dropped before
        # the float32 one is loaded, so the two never sit in memory together (48 GB at 8B).
        rounded = _load_base(base, getattr(torch, dtype)).eval()
        base16 = token_logprobs(rounded, tokenizer)
        del rounded
    model = _load_base(base, torch.float32).eval()
    if verify:
        base32 = token_logprobs(model, tokenizer)
        base_shift = logprob_shift(base16, base32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    reference = token_logprobs(model, tokenizer) if verify else None
    merged = model.merge_and_unload().to(getattr(torch, dtype)).eval()

    if verify:
        got = token_logprobs(merged, tokenizer)
        shift = logprob_shift(got, reference)
        limit = tolerance(base_shift, float(reference.abs().mean()))
        report.update(
            logprob_shift=shift, tolerance=limit, base_rounding_shift=base_shift,
            adapter_effect=logprob_shift(reference, base32), probe_tokens=int(got.numel()),
            perplexity_merged=float(torch.exp(-got.mean())),
            perplexity_unmerged_float32=float(torch.exp(-reference.mean())))
        if not shift <= limit:
            raise FeynTuneError(
                f"the merged model's per-token log-likelihoods differ from base + adapter "
                f"(float32) by {shift:.4g} on average (> {limit:.4g}, derived from the "
                f"{base_shift:.3g} that rounding the base to {dtype} causes); not saved")
        report["verified"] = True
        print(f"verified on {got.numel()} probe tokens: mean |log-likelihood shift| {shift:.3g} "
              f"(tolerance {limit:.3g}); perplexity merged {report['perplexity_merged']:.4g}, "
              f"unmerged float32 {report['perplexity_unmerged_float32']:.4g}", file=sys.stderr)
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
                   help="skip the log-likelihood check against base + adapter (saves "
                        "loading a 16-bit copy of the base first)")
    p.set_defaults(func=cmd_merge)
