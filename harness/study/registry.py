"""A study's registry: its models, published figures and settings, read from its study file
(harness/study/spec.py; the reference study is studies/reference.yaml).

Nothing about any study lives here: this module answers the questions the rest of the harness
asks of a study file -- which study model a leaderboard row is (`s3`, `s3_qkv`, `Base`,
`ChatGPT-4`), what the study reported for it, how long evaluating it takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.names import short_name
from harness.runs.identity import lora_variant
from harness.study import spec

REGISTRY_FILE = spec.REFERENCE_FILE


@dataclass(frozen=True)
class StudyModel:
    study: str                 # the study's name: Base, s3, s3_qkv
    hub: str | None            # the base model or the published adapter (None: trained here)
    perplexity: float | None   # published hep-th test perplexity
    mix: str | None = None     # adapters: the set it was trained on
    lora: str | None = None    # adapters: LoRA-all / LoRA-QKV

    @property
    def is_base(self) -> bool:
        return self.mix is None


@dataclass(frozen=True)
class Registry:
    spec: spec.Study

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def source(self) -> str:
        return self.spec.source or self.spec.name

    @property
    def base(self) -> StudyModel:
        base = self.spec.base
        return StudyModel(base.name, self.spec.weights(base.model), base.perplexity)

    @property
    def adapters(self) -> list[StudyModel]:
        return [StudyModel(m.name, self.spec.weights(m.adapter) if m.adapter else None,
                           m.perplexity, m.set, lora_variant(m.lora) or m.lora)
                for m in self.spec.models]

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

    def adapter_named(self, adapter: str | None) -> StudyModel | None:
        """The study's adapter given as this hub id or folder (its name's last part)."""
        if not adapter:
            return None
        for model in self.adapters:
            if model.hub and (model.hub == adapter or short_name(model.hub) == short_name(adapter)):
                return model
        return None

    @property
    def human(self) -> dict:
        return dataclasses.asdict(self.spec.human)

    @property
    def settings(self) -> dict:
        evaluation = self.spec.evaluation
        return {"merge": evaluation.merge, "dtype": self.spec.base.dtype,
                "temperature": evaluation.temperature,
                "max_new_tokens": evaluation.max_new_tokens}

    @property
    def documents(self) -> dict:
        return dataclasses.asdict(self.spec.documents)

    @property
    def throughput(self) -> dict:
        return dataclasses.asdict(self.spec.throughput)


def load(path: Path | None = None) -> Registry:
    """The registry of a study file (default: the reference study's)."""
    return Registry(spec.load(path))


def study_name_of(identity, registry: Registry | None = None) -> str | None:
    """The study model a measured row is, from its identity: the registry's base model alone is
    `Base`; that base with one of the study's adapters (by hub id or folder name, or by the set
    and LoRA variant its run recorded) is the adapter's name (`s3`, `s3_qkv`); a commercial
    model whose name the study rated (ChatGPT-4) keeps it. Runs made by `feyntune reproduce` or
    `feyntune study run` carry their name in their marker (harness.runs.marker) instead."""
    registry = registry or load()
    if identity.is_api:
        return registry.name_of(identity.model or "", commercial_only=True)
    if not identity.base or short_name(identity.base) != short_name(registry.base.hub):
        return None
    if not identity.adapter:
        return registry.base.study
    model = registry.adapter_named(identity.adapter) or registry.adapter_for(identity.mix,
                                                                              identity.lora)
    return model.study if model else None


def with_study_facts(identity, registry: Registry):
    """A run's identity with the set and LoRA variant the study file states for its adapter,
    when the run itself recorded neither (a published adapter evaluated by its hub id)."""
    if identity.is_api or not identity.adapter or (identity.mix and identity.lora):
        return identity
    model = registry.adapter_named(identity.adapter)
    if model is None:
        return identity
    return dataclasses.replace(identity, mix=identity.mix or model.mix,
                               lora=identity.lora or model.lora)


def scan_runs(runs_dir: Path, registry: Registry | None = None):
    """The lm-eval runs under `runs_dir` (harness.runs.lmeval_outputs.scan), each published
    adapter evaluated by its hub id given the set and LoRA variant its study file states: the
    one reading that the leaderboard, the review page and the judge share, so that a run has the
    same label in all three."""
    from harness.runs.lmeval_outputs import scan

    result = scan(Path(runs_dir))
    registry = registry or load()
    for run in result.runs:
        run.identity = with_study_facts(run.identity, registry)
    return result
