"""The configuration of one training run, as data.

A run is resolved in layers: the preset (`finetune/presets/<name>.yaml`, `paper` reproduces the
reference study), then an optional `--config run.yaml` (any subset of the same keys, or the
`config.yaml` a previous run wrote), then single-value command-line flags. The resolved
configuration is written to the run folder, and `trainer_arguments` turns it into the
transformers `TrainingArguments` keywords (in the newest names; finetune/compat.py renames them
for the installed release) recorded in `run.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.ground.errors import FeynTuneError

PRESETS_DIR = Path(__file__).with_name("presets")
# `report_to`: the Trainer's own tracker integrations, and the modules each needs (any one)
TRACKERS = {"none": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
            "mlflow": ("mlflow",), "trackio": ("trackio",)}


@dataclass
class LoraSettings:
    """LoRA adapter shape; `targets` maps each variant name to the projections it adapts."""

    r: int
    alpha: int
    dropout: float
    bias: str
    targets: dict[str, list[str]]
    variant: str = "all"


@dataclass
class QuantSettings:
    """How the frozen base weights are stored (QLoRA: NF4 with double quantisation)."""

    method: str  # "nf4" or "none"
    double_quant: bool
    # "auto": bf16 on a GPU that supports it, float32 elsewhere (bf16 matmuls are slow on CPUs).
    compute_dtype: str = "auto"
    # FSDP shards only floating-point storage: set to the compute dtype for FSDP + QLoRA.
    quant_storage: str = "uint8"


@dataclass
class OptimSettings:
    optimizer: str
    learning_rate: float
    betas: list[float]
    eps: float
    weight_decay: float
    warmup_fraction: float
    scheduler: str
    min_lr_rate: float
    max_grad_norm: float


@dataclass
class DataSettings:
    """Tokenisation and batching of the abstracts."""

    add_bos: bool
    add_eos: bool
    pad_to_multiple_of: int
    # Off in the reference: random order, each batch padded to its longest abstract.
    group_by_length: bool = False
    text_field: str = "abstract"


@dataclass
class TrainConfig:
    lora: LoraSettings
    quant: QuantSettings
    optim: OptimSettings
    data_settings: DataSettings
    epochs: float
    per_device_batch_size: int
    seed: int
    evaluations: int  # validation passes over the run, the first before the first step
    # Validate on the first N abstracts of the validation split (None: all of them). The paper
    # preset uses the whole split; smoke runs, tests and the demo use a few.
    eval_documents: int | None = None
    precision: str = "auto"  # "auto" (bf16 where supported), "bf16", "fp32"
    # true / false, or "auto": off when the longest batch fits in device memory without it
    # (decided at the start of the run, finetune/memory.py); the fast preset uses "auto"
    gradient_checkpointing: bool | str = True
    attn_implementation: str = "auto"  # "auto": flash_attention_2 when installed on a GPU, else sdpa
    per_device_eval_batch_size: int | None = None  # None: the training batch size
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # > 0 overrides epochs
    num_processes: int = 1
    checkpoints_kept: int = 2
    dataloader_num_workers: int = 0
    report_to: str = "none"  # a tracker of TRACKERS; curves.csv/png are written either way
    base: str = ""
    data: str = ""
    out: str = ""
    preset: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def target_modules(self) -> list[str]:
        return list(self.lora.targets[self.lora.variant])

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size or self.per_device_batch_size


_SECTIONS = {"lora": LoraSettings, "quant": QuantSettings, "optim": OptimSettings,
             "data_settings": DataSettings}


def _merge(base: dict, override: dict, where: str = "") -> dict:
    """Deep-merge `override` into a copy of `base`; unknown keys are an error, not ignored."""
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise FeynTuneError(f"unknown configuration key {where + key!r}; known: {', '.join(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict) and key != "targets":
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _from_dict(raw: dict) -> TrainConfig:
    try:
        sections = {name: cls(**raw[name]) for name, cls in _SECTIONS.items()}
        rest = {k: v for k, v in raw.items() if k not in _SECTIONS}
        return TrainConfig(**sections, **rest)
    except (KeyError, TypeError) as err:
        raise FeynTuneError(f"incomplete or malformed training configuration: {err}") from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise FeynTuneError(f"cannot read configuration {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise FeynTuneError(f"configuration {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise FeynTuneError(f"configuration {path} must be a mapping of keys to values")
    return raw


def _defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


def load_preset(name: str, _seen: tuple = ()) -> dict:
    """A preset's keys; `base_preset: NAME` starts from another preset and lists only changes."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FeynTuneError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    if name in _seen:
        raise FeynTuneError(f"presets inherit from each other in a loop: {' -> '.join(_seen + (name,))}")
    raw = load_yaml(path)
    parent = raw.pop("base_preset", None)
    if parent is not None:
        raw = _merge({**_defaults(), **load_preset(parent, _seen + (name,))}, raw, f"{name}: ")
    raw["preset"] = name
    return raw


def resolve(preset: str = "paper", config_file: Path | None = None,
            overrides: dict | None = None) -> TrainConfig:
    """Preset, then the run file, then flags (nested keys as dicts); validated."""
    # every field must exist in the merged dict so that _merge can reject unknown keys
    defaults = _defaults()
    raw = {**defaults, **load_preset(preset)}
    if config_file is not None:
        from_file = load_yaml(config_file)
        if "preset" in from_file and from_file["preset"] != preset:
            raw = {**defaults, **load_preset(from_file["preset"])}
        raw = _merge(raw, from_file)
    raw = _merge(raw, overrides or {})
    cfg = _from_dict(raw)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if cfg.lora.variant not in cfg.lora.targets:
        raise FeynTuneError(
            f"unknown LoRA variant {cfg.lora.variant!r}; known: {', '.join(cfg.lora.targets)}")
    if cfg.quant.method not in ("nf4", "none"):
        raise FeynTuneError(f"unknown quantisation {cfg.quant.method!r}; use nf4 or none")
    if not (isinstance(cfg.gradient_checkpointing, bool) or cfg.gradient_checkpointing == "auto"):
        raise FeynTuneError(f"gradient_checkpointing must be true, false or auto, not "
                            f"{cfg.gradient_checkpointing!r}")
    if cfg.report_to not in TRACKERS:
        raise FeynTuneError(f"unknown tracker {cfg.report_to!r}; use {', '.join(TRACKERS)}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise FeynTuneError(f"unknown precision {cfg.precision!r}; use auto, bf16 or fp32")
    checks = [
        (cfg.per_device_batch_size >= 1, "the batch size must be at least 1"),
        (cfg.epochs > 0 or cfg.max_steps > 0, "epochs or max_steps must be positive"),
        (_is_count(cfg.evaluations),
         "evaluations must be a whole number of at least 1 (the one before the first step)"),
        (cfg.eval_documents is None or _is_count(cfg.eval_documents),
         "eval_documents must be a whole number of at least 1, or null for the whole validation split"),
        (cfg.num_processes >= 1, "num_processes must be at least 1"),
        (cfg.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1"),
        (0 <= cfg.optim.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
        (cfg.data_settings.pad_to_multiple_of >= 1, "pad_to_multiple_of must be at least 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise FeynTuneError(message)


def _is_count(value) -> bool:
    # bool is an int subclass: `eval_documents: true` in a YAML file is a mistake, not 1
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_tracker(name: str) -> None:
    """The tracker's package is installed: one line saying what to install, before any work
    (the Trainer would fail only when it builds its callbacks, after the model loaded)."""
    import importlib.util

    modules = TRACKERS[name]
    if modules and not any(importlib.util.find_spec(module) for module in modules):
        raise FeynTuneError(f"--report-to {name}: {modules[0]} is not installed; "
                            f"pip install {modules[0]}")


def evaluation_steps(total_steps: int, evaluations: int) -> list[int]:
    """`evaluations` optimizer steps spread evenly from 0 (before training) to the last step."""
    if evaluations == 1 or total_steps == 0:
        return [0]
    steps = {round(i * total_steps / (evaluations - 1)) for i in range(evaluations)}
    return sorted(steps)


def steps_per_epoch(n_train: int, cfg: TrainConfig, world_size: int) -> int:
    # Trainer keeps the last short batch (dataloader_drop_last is False).
    batches = math.ceil(n_train / (cfg.per_device_batch_size * world_size))
    return max(batches // cfg.gradient_accumulation_steps, 1)


def total_steps(n_train: int, cfg: TrainConfig, world_size: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return math.ceil(cfg.epochs * steps_per_epoch(n_train, cfg, world_size))


def trainer_arguments(cfg: TrainConfig, output_dir: str, *, bf16: bool, use_cpu: bool,
                      world_size: int = 1, evaluate_first: bool = True,
                      checkpointing: bool | None = None) -> dict[str, Any]:
    """The `transformers.TrainingArguments` keywords (newest transformers names) for this run.

    `checkpointing` is the resolved activation-checkpointing decision (needed when the
    configuration says "auto"; see finetune/memory.py).

    The evaluation at step 0 is the Trainer's `eval_on_start` (off when resuming, where it was
    already made); the later ones and the checkpoints follow `evaluation_steps` through a
    callback, because the Trainer's own schedules cannot place exactly N evaluations.
    """
    o = cfg.optim
    if checkpointing is None:
        checkpointing = cfg.gradient_checkpointing is True
    return {
        "output_dir": output_dir,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_batch_size,
        "per_device_eval_batch_size": cfg.eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "optim": o.optimizer,
        "learning_rate": o.learning_rate,
        "adam_beta1": o.betas[0],
        "adam_beta2": o.betas[1],
        "adam_epsilon": o.eps,
        "weight_decay": o.weight_decay,
        # transformers 5: a fraction below 1 is the share of all steps (warmup_ratio is gone)
        "warmup_steps": o.warmup_fraction,
        "lr_scheduler_type": o.scheduler,
        "lr_scheduler_kwargs": {"min_lr_rate": o.min_lr_rate},
        "max_grad_norm": o.max_grad_norm,
        "bf16": bf16,
        "use_cpu": use_cpu,
        "seed": cfg.seed,
        "activation_checkpointing": checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        # transformers 5: group_by_length became a sampling strategy
        "train_sampling_strategy": "group_by_length" if cfg.data_settings.group_by_length else "random",
        "length_column_name": "length",
        "eval_strategy": "no",
        "eval_on_start": evaluate_first,
        "save_strategy": "no",
        "save_total_limit": cfg.checkpoints_kept,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "include_num_input_tokens_seen": "non_padding",
        "prediction_loss_only": True,
        "remove_unused_columns": False,
        "dataloader_drop_last": False,
        "dataloader_num_workers": cfg.dataloader_num_workers,
        "ddp_find_unused_parameters": False if world_size > 1 else None,
        "disable_tqdm": True,  # our progress bar shows tokens/s
        "report_to": cfg.report_to,
        # the run's name in the tracker (by default the Trainer names it after output_dir,
        # which is every run's `checkpoints`)
        "run_name": Path(cfg.out).name if cfg.out else None,
    }
