"""A study as a file: the YAML that declares one fine-tuning study, read into dataclasses.

Every option has a name, a type, a default (or is required) and a line of help (the field's
`help` metadata, which `docs` prints). A file is checked as a whole before anything runs, and a
wrong one is ONE line naming the file and the key: an unknown key, a missing field, a value of
the wrong type, a duplicate model name, an unknown set, a LoRA variant the preset lacks.

    name: my-study
    base: {model: Qwen/Qwen3-8B, dtype: bfloat16}
    documents: {set: s1}                 # or {data: PATH} or {hub: ID, split: test, count: N}
    curation: {snapshot: arxiv-metadata-oai-snapshot.json}   # builds the sets named below
    models:
      - {name: s1-all, set: s1, lora: all}                   # an adapter to train
      - {name: s1-qkv, set: s1, lora: qkv, preset: fast, overrides: {epochs: 2}}
      - {name: theirs, adapter: org/published-adapter, set: s1, lora: all}   # published
    evaluation: {temperature: 0.8, max_new_tokens: 1024, merge: true}

Relative paths (snapshot, sets config, data, folders of models) are read from the study file's
folder; a `model`/`adapter` that is no folder there is a hub id. The reference study is
studies/reference.yaml.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.ground.errors import FeynTuneError
from harness.ground.reference import REFERENCE_STUDY

REFERENCE_FILE = REFERENCE_STUDY
DTYPES = ("float16", "bfloat16", "float32")
TASKS = ("both", "perplexity", "generation")


@dataclass(frozen=True)
class Base:
    model: str = field(metadata={"help": "the base model: a hub id or a folder"})
    dtype: str = field(default="bfloat16", metadata={
        "help": f"weights for merging and evaluation: {', '.join(DTYPES)}"})
    name: str = field(default="Base", metadata={
        "help": "the study's name for the base model (rows, ratings files)"})
    perplexity: float | None = field(default=None, metadata={
        "help": "published perplexity of the base (a reported row)"})


@dataclass(frozen=True)
class Documents:
    set: str | None = field(default=None, metadata={
        "help": "the test split of a set this study builds (curation)"})
    data: str | None = field(default=None, metadata={
        "help": "a `feyntune data build` folder, a set folder or a JSON-lines file"})
    hub: str | None = field(default=None, metadata={"help": "a dataset on the hub (with split)"})
    split: str = field(default="test", metadata={"help": "hub: the split"})
    count: int | None = field(default=None, metadata={
        "help": "hub: documents in that split (the estimate before the run)"})


@dataclass(frozen=True)
class Curation:
    snapshot: str = field(metadata={
        "help": "the arXiv metadata snapshot `feyntune data build` reads"})
    config: str | None = field(default=None, metadata={
        "help": "a sets config (`feyntune data build --config`); default: the reference "
                "study's mixes, finetune/sets.yaml"})
    seed: int | None = field(default=None, metadata={
        "help": "the curation seed (default: the config's)"})


@dataclass(frozen=True)
class Evaluation:
    merge: bool = field(default=True, metadata={
        "help": "merge each adapter into the base before evaluating it"})
    temperature: float = field(default=0.8, metadata={
        "help": "sampling temperature of the completions"})
    max_new_tokens: int = field(default=1024, metadata={"help": "new-token limit of a completion"})
    tasks: str = field(default="both", metadata={"help": f"which subtasks: {', '.join(TASKS)}"})
    limit: int | None = field(default=None, metadata={"help": "the first N documents only"})


@dataclass(frozen=True)
class Model:
    name: str = field(metadata={"help": "the model's name in this study (folders, rows, --models)"})
    set: str = field(metadata={
        "help": "what it is (to be) trained on: a set name built by curation, or a folder"})
    lora: str = field(metadata={
        "help": "LoRA variant: a key of the preset's lora.targets (all, qkv)"})
    adapter: str | None = field(default=None, metadata={
        "help": "a published adapter (hub id or folder): evaluated, not trained"})
    preset: str = field(default="paper", metadata={"help": "training preset (finetune/presets)"})
    overrides: dict = field(default_factory=dict, metadata={
        "help": "training keys over the preset (as `feyntune train --config`)"})
    perplexity: float | None = field(default=None, metadata={
        "help": "published perplexity (a reported row)"})

    @property
    def trained_here(self) -> bool:
        return self.adapter is None


@dataclass(frozen=True)
class Human:
    papers: int | None = field(default=None, metadata={"help": "rated papers"})
    raters: int | None = field(default=None, metadata={"help": "raters"})
    criteria: list = field(default_factory=list, metadata={"help": "the rating criteria"})
    categories: dict = field(default_factory=dict, metadata={
        "help": "category of model (Base, LoRA-all, LoRA-QKV) -> published mean"})
    commercial: dict = field(default_factory=dict, metadata={
        "help": "commercial model as the study names it -> published mean"})


@dataclass(frozen=True)
class Throughput:
    """ASSUMED figures behind the time estimates, not measured by the command that prints them."""
    gpu: str = field(metadata={"help": "the card the figures below are for"})
    perplexity_tokens: float = field(metadata={
        "help": "tokens scored in perplexity_seconds (8B model, batch 64)"})
    perplexity_seconds: float = field(metadata={"help": "seconds for perplexity_tokens"})
    generation_tokens_per_second: float = field(metadata={"help": "new tokens per second with hf"})
    tokens_per_abstract: float = field(metadata={"help": "mean tokens of an abstract"})
    vllm_over_hf: float | None = field(default=None, metadata={
        "help": "vllm/hf generation ratio (the vllm estimate)"})
    vllm_ratio_measured: str = field(default="", metadata={"help": "where that ratio was measured"})
    training_abstracts_per_second: dict = field(default_factory=dict, metadata={
        "help": "preset -> abstracts trained per second on one such GPU (the training estimate)"})


@dataclass(frozen=True)
class Study:
    name: str = field(metadata={"help": "the study's name (its results folder)"})
    base: Base = field(metadata={"help": "the base model"})
    documents: Documents = field(metadata={"help": "the test documents"})
    models: list = field(metadata={"help": "the models: published adapters and adapters to train"})
    evaluation: Evaluation | None = field(default=None, metadata={
        "help": "how models are evaluated (default: Evaluation())"})
    curation: Curation | None = field(default=None, metadata={
        "help": "how the sets named by models are built"})
    source: str = field(default="", metadata={"help": "where the study comes from (free text)"})
    human: Human | None = field(default=None, metadata={"help": "published human ratings"})
    throughput: Throughput | None = field(default=None, metadata={
        "help": "ASSUMED throughput behind the time estimates (default: the reference study's)"})
    path: Path = field(default=Path(), compare=False, metadata={"help": "the file (set on load)"})
    throughput_file: Path = field(default=Path(), compare=False, metadata={
        "help": "the file the throughput comes from (set on load)"})

    def model(self, name: str) -> Model:
        for model in self.models:
            if model.name == name:
                return model
        raise FeynTuneError(f"{self.path}: no model {name!r}; its models are "
                            f"{', '.join(m.name for m in self.models)}")

    def resolve(self, value: str) -> Path:
        """A path given in the file, read from the file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path).resolve()

    def weights(self, value: str) -> str:
        """A model or adapter: a folder next to the file when there is one, else the hub id."""
        local = self.resolve(value)
        return str(local) if local.exists() else value

    @property
    def built_sets(self) -> list[str]:
        """Sets this study builds from its curation, in first-named order."""
        names = [m.set for m in self.models if m.trained_here and self._is_set_name(m.set)]
        if self.documents.set:
            names.append(self.documents.set)
        return list(dict.fromkeys(names))

    def _is_set_name(self, value: str) -> bool:
        return self.curation is not None and not self.resolve(value).is_dir()


# ---- reading and checking ------------------------------------------------------------------------

def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check_type(value, hint, where: str, path: Path):
    """`value` against a field's type (str, int, float, bool, dict, list, optional ones)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) \
        else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise FeynTuneError(f"{path}: {where} must not be empty")
    for option in options:
        if option is type(None):
            continue
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # an int stays one (269000 is printed as written)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool, dict, list) and isinstance(value, option):
            return value
        if dataclasses.is_dataclass(option):
            return _build(option, value, where, path)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise FeynTuneError(f"{path}: {where} must be {names}, not {value!r}")


def _build(cls, raw, where: str, path: Path):
    if not isinstance(raw, dict):
        raise FeynTuneError(f"{path}: {where or 'the file'} must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.name not in ("path", "throughput_file")}
    hints = _hints(cls)
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in fields:
            raise FeynTuneError(f"{path}: unknown key {prefix}{key} (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _check_type(raw[name], hints[name], prefix + name, path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise FeynTuneError(f"{path}: missing field {prefix}{name} ({spec.metadata['help']})")
    return cls(**values)


@functools.cache
def lora_variants() -> dict[str, tuple[str, ...]]:
    """preset -> its LoRA variants (lora.targets keys)."""
    from finetune.config import load_preset, preset_names

    return {name: tuple(load_preset(name)["lora"]["targets"]) for name in preset_names()}


def _sets_of(study: Study) -> tuple[str, ...]:
    from finetune.curate import load_config

    config = study.curation.config
    return tuple(load_config(study.resolve(config) if config else None).sets)


def parse(raw, path: Path) -> Study:
    """A study from the file's parsed YAML, checked; FeynTuneError names the file and key."""
    if not isinstance(raw, dict):
        raise FeynTuneError(f"{path}: a study file is a YAML mapping (name, base, documents, "
                            "models, ...)")
    models_raw = raw.get("models")
    if "models" in raw and (not isinstance(models_raw, list) or not models_raw):
        raise FeynTuneError(f"{path}: models must be a non-empty list")
    # the models are read one by one below, each naming its place in the list
    study_raw = {k: ([] if k == "models" else v) for k, v in raw.items()}
    study = _build(Study, study_raw, "", path)
    models = [_build(Model, m, f"models[{i}]", path) for i, m in enumerate(models_raw or [])]
    study = dataclasses.replace(
        study, models=models, path=path,
        evaluation=study.evaluation or Evaluation(), human=study.human or Human(),
        throughput=study.throughput or reference_throughput(path),
        throughput_file=path if study.throughput else REFERENCE_FILE)
    _check(study, path)
    return study


def _check(study: Study, path: Path) -> None:
    names = [study.base.name]
    variants = lora_variants()
    if study.base.dtype not in DTYPES:
        raise FeynTuneError(f"{path}: base.dtype {study.base.dtype!r}: use one of "
                            f"{', '.join(DTYPES)}")
    if study.evaluation.tasks not in TASKS:
        raise FeynTuneError(f"{path}: evaluation.tasks {study.evaluation.tasks!r}: use one of "
                            f"{', '.join(TASKS)}")
    if study.evaluation.limit is not None and study.evaluation.limit < 1:
        raise FeynTuneError(f"{path}: evaluation.limit must be at least 1")
    chosen = [key for key in ("set", "data", "hub") if getattr(study.documents, key)]
    if len(chosen) != 1:
        raise FeynTuneError(f"{path}: documents needs exactly one of set, data, hub "
                            f"(given: {', '.join(chosen) or 'none'})")
    known_sets = _sets_of(study) if study.curation else ()
    for i, model in enumerate(study.models):
        where = f"models[{i}]"
        if not model.name.strip() or "/" in model.name or model.name.startswith("."):
            raise FeynTuneError(f"{path}: {where}.name {model.name!r} cannot name a folder")
        if model.name in names:
            raise FeynTuneError(f"{path}: {where}.name: duplicate model name {model.name!r}")
        names.append(model.name)
        if model.preset not in variants:
            raise FeynTuneError(f"{path}: {where}.preset: unknown preset {model.preset!r} "
                                f"(known: {', '.join(variants)})")
        if model.lora not in variants[model.preset]:
            raise FeynTuneError(f"{path}: {where}.lora: bad LoRA variant {model.lora!r} (the "
                                f"{model.preset} preset has {', '.join(variants[model.preset])})")
        if model.trained_here:
            _check_set(study, model.set, f"{where}.set", known_sets, path)
            _check_overrides(model, f"{where}.overrides", path)
        elif model.overrides or model.preset != "paper":
            raise FeynTuneError(f"{path}: {where}: a published adapter is not trained here; "
                                "preset and overrides belong to models without adapter")
    if study.documents.set:
        _check_set(study, study.documents.set, "documents.set", known_sets, path)
    if study.documents.data and not study.resolve(study.documents.data).exists():
        raise FeynTuneError(f"{path}: documents.data: {study.resolve(study.documents.data)} does "
                            "not exist")


def _check_overrides(model: Model, where: str, path: Path) -> None:
    """The training configuration the preset and overrides make is one `feyntune train`
    accepts (unknown keys, bad values), checked now rather than in the training job."""
    from finetune.config import resolve

    lora = model.overrides.get("lora") if isinstance(model.overrides.get("lora"), dict) else {}
    try:
        resolve(model.preset, None, {**model.overrides, "lora": {**lora, "variant": model.lora}})
    except FeynTuneError as err:
        raise FeynTuneError(f"{path}: {where}: {err}") from None


def _check_set(study: Study, value: str, where: str, known: tuple, path: Path) -> None:
    if study.resolve(value).is_dir():
        return
    if study.curation is None:
        raise FeynTuneError(f"{path}: {where}: unknown set {value!r}: no folder of that name and "
                            "no curation section to build it")
    if value not in known:
        raise FeynTuneError(f"{path}: {where}: unknown set {value!r} (the sets config has "
                            f"{', '.join(known)})")


def reference_throughput(path: Path) -> Throughput:
    """The reference study's assumed figures: the default of a study that states none."""
    if Path(path).resolve() == REFERENCE_FILE:
        raise FeynTuneError(f"{path}: missing field throughput (the figures every study's "
                            "estimate assumes by default)")
    return load(REFERENCE_FILE).throughput


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime: float) -> Study:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise FeynTuneError(f"cannot read the study file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FeynTuneError(f"{path}: not valid YAML: {first}") from None
    return parse(raw, Path(path))


def load(path: str | Path | None = None) -> Study:
    """The study file (default: the reference study), read and checked once per version."""
    path = Path(path or REFERENCE_FILE).expanduser().resolve()
    try:
        mtime = path.stat().st_mtime
    except OSError as err:
        raise FeynTuneError(f"cannot read the study file {path}: {err.strerror}") from None
    return _load_cached(str(path), mtime)
