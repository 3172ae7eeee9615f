"""Which model a run evaluated, from what lm-eval recorded about it.

lm-eval keeps the model class (`config.model`: hf, vllm, provider, ...) and its arguments
(`config.model_args`, a dict from the CLI or a "k=v,k=v" string from the Python API). From those:
a local model is a base (`pretrained`) plus an optional adapter (`peft`), whose training set
and LoRA variant come from the adapter's `run.json` when the folder is at hand; a commercial model
is a provider and a model name. A run made by `feyntune reproduce` or `feyntune study run` says
what it stands for in its marker (harness.runs.marker). Nothing here knows any study's names: a
published adapter evaluated by hub id gets its set and variant from the study file that lists it
(harness.study.registry.with_study_facts).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from harness.ground.names import short_name
from harness.runs.marker import study_marker

LORA_ALL = "LoRA-all"
LORA_QKV = "LoRA-QKV"

# API model classes of lm-eval itself, for runs that did not go through our `provider` model.
_API_MODEL_CLASSES = {
    "openai-completions", "openai-chat-completions", "local-completions", "local-chat-completions",
    "anthropic-completions", "anthropic-chat", "anthropic-chat-completions", "gemini",
    "textsynth", "watsonx_llm",
}


# lm-eval model_args keys that name the evaluated weights: a local model's (hf, vllm), then an
# API model's. The base model, not an adapter, is what was pre-trained.
LOCAL_MODEL_KEYS = ("pretrained", "path")
API_MODEL_KEYS = ("model", "engine", "model_name")


@dataclass(frozen=True)
class ModelIdentity:
    """What the leaderboard says about a model; `key` groups runs of the same model."""

    base: str | None = None       # base model as given (hub id or local folder name)
    adapter: str | None = None    # adapter as given (hub id or local folder name)
    mix: str | None = None        # dataset mix s1..s10, when known
    lora: str | None = None       # LoRA-all / LoRA-QKV, when known
    provider: str | None = None   # commercial provider (anthropic, openai, ...)
    model: str | None = None      # the provider's model name
    study: str | None = None      # the reference study's model it stands for (reproduce marker)

    @property
    def is_api(self) -> bool:
        return self.provider is not None

    @property
    def label(self) -> str:
        if self.is_api:
            return f"{self.provider}/{self.model}" if self.model else str(self.provider)
        base = short_name(self.base) if self.base else "unknown model"
        if not self.adapter:
            return base
        if self.lora or self.mix:
            what = " ".join(part for part in (self.lora or "LoRA", self.mix) if part)
            return f"{base} + {what}"
        return f"{base} + {short_name(self.adapter)}"

    @property
    def key(self) -> tuple:
        return (self.base, self.adapter, self.mix, self.lora, self.provider, self.model)


def parse_model_args(model_args) -> dict:
    """lm-eval's model_args as a dict, whether it was recorded as a dict or a "k=v,k=v" string."""
    if isinstance(model_args, dict):
        return {str(k): v for k, v in model_args.items()}
    if not isinstance(model_args, str):
        return {}
    parsed = {}
    for part in model_args.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            parsed[key.strip()] = value.strip()
    return parsed


def model_name(args: dict, keys: tuple[str, ...] = LOCAL_MODEL_KEYS + API_MODEL_KEYS) -> str | None:
    """The first of `keys` that model_args (parsed) gives a non-empty text for."""
    for key in keys:
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def display_name(name: str | None) -> str | None:
    """Hub ids stay whole; local paths shrink to their folder name (no machine paths in tables)."""
    if not name:
        return name
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
    return short_name(name.replace("\\", "/")) if looks_local else name


@functools.cache
def _preset_targets() -> tuple[frozenset, frozenset]:
    """The projections of LoRA-QKV and of LoRA-all, as the paper preset trains them."""
    from finetune.config import load_preset

    targets = load_preset("paper")["lora"]["targets"]
    return frozenset(targets["qkv"]), frozenset(targets["all"])


def lora_variant(value) -> str | None:
    """Normalise a run.json variant ("all", "qkv", "LoRA-QKV", a target-module list)."""
    if isinstance(value, (list, tuple)):
        modules = {str(m) for m in value}
        qkv, every = _preset_targets()
        if modules and modules <= qkv:
            return LORA_QKV
        return LORA_ALL if every - qkv <= modules else None
    if not isinstance(value, str) or not value:
        return None
    text = value.lower().replace("_", "-")
    if "qkv" in text:
        return LORA_QKV
    if text in {"all", "lora-all"}:
        return LORA_ALL
    return None


def read_run_manifest(folder: str | None) -> dict:
    """The training run's run.json in an adapter (or merged model) folder, {} when absent/bad."""
    if not folder:
        return {}
    path = Path(folder).expanduser() / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_str(mapping: dict, *keys: str) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _manifest_facts(manifest: dict) -> dict:
    """Base model, mix and variant from a run.json, tolerant of nesting under "config"."""
    if isinstance(manifest.get("config"), dict):
        manifest = {**manifest["config"], **{k: v for k, v in manifest.items() if k != "config"}}
    lora = manifest.get("lora")
    lora_block = lora if isinstance(lora, dict) else {}
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    base = _first_str(manifest, "base_model", "base", "model_name_or_path", "pretrained")
    variant = (
        lora_variant(lora) if not isinstance(lora, dict) else None
    ) or lora_variant(lora_block.get("variant")) or lora_variant(lora_block.get("target_modules")) \
        or lora_variant(manifest.get("variant")) or lora_variant(manifest.get("lora_variant"))
    dataset = _first_str(manifest, "mix", "dataset", "data_set", "set") or _first_str(
        data, "name", "set", "folder", "path", "dir"
    )
    if dataset is None and isinstance(manifest.get("data"), str):
        dataset = manifest["data"]
    # a training set is named by its folder (data/s3 and data/s3/train.jsonl -> s3)
    dataset = dataset.replace("\\", "/") if dataset else None
    if dataset and dataset.endswith(".jsonl") and "/" in dataset.rstrip("/"):
        dataset = dataset.rstrip("/").rsplit("/", 1)[0]
    mix = short_name(dataset) if dataset else None
    return {"base": base, "lora": variant, "mix": mix}


def identify(config: dict, general: dict | None = None) -> ModelIdentity:
    """The model of one lm-eval results file (`config` block; `general` = the file's top level)."""
    general = general or {}
    block = study_marker(general)
    if block:
        # A reproduced model is named by what it stands for (base + adapter as given), not by
        # the temporary merged folder lm-eval loaded.
        return ModelIdentity(
            base=display_name(block.get("base")),
            adapter=display_name(block.get("adapter")) if block.get("adapter") else None,
            mix=block.get("mix"), lora=block.get("lora"), study=block["study"])
    model_class = str(config.get("model") or general.get("model_source") or "")
    args = parse_model_args(config.get("model_args"))

    provider = args.get("provider")
    if provider or model_class == "provider" or model_class in _API_MODEL_CLASSES:
        name = model_name(args, API_MODEL_KEYS) or general.get("model_name")
        return ModelIdentity(
            provider=str(provider or model_class), model=str(name) if name else None
        )

    pretrained = model_name(args, LOCAL_MODEL_KEYS)
    if not pretrained:
        # Python API with a model object: lm-eval records its _name_or_path as `config.model`.
        pretrained = model_class or general.get("model_name")
    adapter = args.get("peft") or args.get("delta")
    adapter = adapter if isinstance(adapter, str) and adapter else None

    facts = {"base": None, "lora": None, "mix": None}
    for folder in (adapter, pretrained):  # an adapter's run.json, or a merged model's
        manifest = read_run_manifest(folder)
        if manifest:
            facts = _manifest_facts(manifest)
            break
    named = adapter or (pretrained if facts["lora"] or facts["mix"] else None)
    mix, lora = facts["mix"], facts["lora"]
    base = pretrained
    if not adapter and (facts["lora"] or facts["mix"]):
        # A merged model: its run.json names the base it was trained from.
        base = facts["base"] or pretrained
        named = pretrained
    return ModelIdentity(
        base=display_name(base),
        adapter=display_name(named) if named else None,
        mix=mix,
        lora=lora,
    )
