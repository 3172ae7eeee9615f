"""The reference study's registry (harness/study/study.yaml): its models, published figures, settings.

Everything published lives in the YAML; this module reads it, checks it, and answers the
questions the rest of the harness asks of it: which study model a leaderboard row is (`s3`,
`s3_qkv`, `Base`, `ChatGPT-4`), what the study reported for it, how long reproducing it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from harness.ground.errors import FeynTuneError
from harness.ground.names import short_name

REGISTRY_FILE = Path(__file__).with_name("study.yaml")
BASE = "Base"


@dataclass(frozen=True)
class StudyModel:
    study: str                 # the study's name: Base, s3, s3_qkv
    hub: str                   # hub id of the base model or of the adapter
    perplexity: float | None   # published hep-th test perplexity
    mix: str | None = None     # adapters: dataset mix s1..s10
    lora: str | None = None    # adapters: LoRA-all / LoRA-QKV

    @property
    def is_base(self) -> bool:
        return self.mix is None


@dataclass(frozen=True)
class Registry:
    data: dict

    @property
    def source(self) -> str:
        return str(self.data.get("source", "reference study"))

    @property
    def base(self) -> StudyModel:
        base = self.data["base"]
        return StudyModel(str(base.get("study", BASE)), str(base["hub"]), base.get("perplexity"))

    @property
    def adapters(self) -> list[StudyModel]:
        return [StudyModel(str(a["study"]), str(a["hub"]), a.get("perplexity"), str(a["mix"]),
                           str(a["lora"])) for a in self.data["adapters"]]

    @property
    def models(self) -> list[StudyModel]:
        return [self.base, *self.adapters]

    def model(self, study: str) -> StudyModel:
        for model in self.models:
            if model.study == study:
                return model
        names = ", ".join(m.study for m in self.models)
        raise FeynTuneError(f"no study model {study!r}; the study's models are {names}")

    def name_of(self, text: str, commercial_only: bool = False) -> str | None:
        """The registry's spelling of a study model name (`s3`, `Base`, `ChatGPT-4`) given in
        any case, or None; `commercial_only`: only the commercial models the study rated."""
        names = list(self.human.get("commercial") or {})
        if not commercial_only:
            names = [m.study for m in self.models] + names
        wanted = str(text).strip().lower()
        return next((name for name in names if name.lower() == wanted), None)

    def adapter_for(self, mix: str | None, lora: str | None) -> StudyModel | None:
        for model in self.adapters:
            if (model.mix, model.lora) == (mix, lora):
                return model
        return None

    @property
    def human(self) -> dict:
        return self.data.get("human") or {}

    @property
    def settings(self) -> dict:
        return self.data["settings"]

    @property
    def documents(self) -> dict:
        return self.data["documents"]

    @property
    def throughput(self) -> dict:
        return self.data["throughput"]


def _check(data, path: Path) -> dict:
    if not isinstance(data, dict):
        raise FeynTuneError(f"{path} is not a study registry (a YAML mapping)")
    for key in ("base", "adapters", "documents", "settings", "throughput"):
        if key not in data:
            raise FeynTuneError(f"{path} lacks '{key}'")
    if not isinstance(data["adapters"], list) or not all(
            isinstance(a, dict) and {"study", "hub", "mix", "lora"} <= set(a)
            for a in data["adapters"]):
        raise FeynTuneError(f"{path}: every adapter needs study, hub, mix and lora")
    names = [str(data["base"].get("study", BASE))] + [str(a["study"]) for a in data["adapters"]]
    if len(set(names)) != len(names):
        raise FeynTuneError(f"{path}: a study model name appears twice")
    return data


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Registry:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise FeynTuneError(f"cannot read the study registry {path}: {err}") from None
    return Registry(_check(data, Path(path)))


def load(path: Path | None = None) -> Registry:
    path = Path(path or REGISTRY_FILE)
    try:
        mtime = path.stat().st_mtime
    except OSError as err:
        raise FeynTuneError(f"cannot read the study registry {path}: {err}") from None
    return _load_cached(str(path), mtime)


def study_name_of(identity, registry: Registry | None = None) -> str | None:
    """The study model a measured row is, from its identity: the registry's base model alone is
    `Base`; that base with a LoRA variant and a mix is the adapter's name (`s3`, `s3_qkv`);
    a commercial model whose name the study rated (ChatGPT-4) keeps it. Local stand-ins are
    named by `feyntune reproduce` (harness.study.marker), not here."""
    registry = registry or load()
    if identity.is_api:
        return registry.name_of(identity.model or "", commercial_only=True)
    if not identity.base or short_name(identity.base) != short_name(registry.base.hub):
        return None
    if not identity.adapter:
        return registry.base.study
    model = registry.adapter_for(identity.mix, identity.lora)
    return model.study if model else None
