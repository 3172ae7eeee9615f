"""The documents of the hep-th completion benchmark: where they come from and what each holds.

Source, first found wins:
1. `hepth_data` (lm-eval `--metadata '{"hepth_data": PATH}'`): a folder written by
   `feyntune data build` (its `s1/test.jsonl`), a set folder (its `test.jsonl`), or a JSON-lines
   file whose records are all documents;
2. the environment variable FEYNTUNE_HEPTH_DATA, read the same way;
3. `hepth_hub` (metadata: "NAME" or "NAME:SPLIT"), a dataset on the hub;
4. the reference study's published test split on the hub (studies/reference.yaml, documents:
   `LLMsForHepth/hep-th_primary` split `test`).

Relative paths resolve against the user's current directory. Each document is
`{id, title, abstract, prompt, y_true}`; `prompt`/`y_true` come from the record when it has both,
else from `harness.ground.abstracts.split_prompt`. Abstracts are cleaned with `clean_abstract`
(idempotent on curated data). Records with an empty abstract are skipped, counted and reported.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.ground.abstracts import clean_abstract, split_prompt
from harness.ground.errors import FeynTuneError
from harness.ground.jsonl import read_objects
from harness.ground.reference import published_documents

ENV_VAR = "FEYNTUNE_HEPTH_DATA"


HUB_DATASET, HUB_SPLIT = published_documents()
DOC_FIELDS = ("id", "title", "abstract", "prompt", "y_true")


@dataclass(frozen=True)
class Source:
    kind: str      # "file" or "hub"
    location: str  # absolute file path, or the hub dataset name
    origin: str    # how it was chosen, for messages
    split: str = HUB_SPLIT  # hub: the split


@dataclass(frozen=True)
class Documents:
    source: Source
    docs: tuple[dict, ...]
    skipped_empty: int


def _file_in(path: Path) -> Path:
    """The JSON-lines file a user path stands for (build folder, set folder or file)."""
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "s1" / "test.jsonl", path / "test.jsonl"):
            if candidate.is_file():
                return candidate
        raise FeynTuneError(
            f"{path} is a folder without s1/test.jsonl (a `feyntune data build` output) or "
            "test.jsonl (a set folder)")
    raise FeynTuneError(f"{path} does not exist")


def user_path(value: str | os.PathLike, cwd: str | os.PathLike | None = None) -> Path:
    """A path a user gave (metadata, environment): `~` expanded, relative to their current
    directory (or `cwd`), resolved."""
    path = Path(os.path.expanduser(str(value)))
    return (path if path.is_absolute() else Path(cwd if cwd is not None else Path.cwd()) / path).resolve()


def document_id(record: dict, index: int) -> str:
    """A document's id: the record's `id`, else `#<its position in the source>`."""
    doc_id = record.get("id")
    return str(doc_id) if doc_id not in (None, "") else f"#{index}"


def resolve_source(hepth_data: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None,
                   environ: dict | None = None, hub: str | None = None) -> Source:
    """Which source the documents come from (no reading yet, except checking paths exist);
    `hub`: metadata hepth_hub, "NAME" or "NAME:SPLIT"."""
    environ = os.environ if environ is None else environ
    for value, origin in ((hepth_data, "metadata hepth_data"), (environ.get(ENV_VAR), ENV_VAR)):
        if value is None or str(value).strip() == "":
            continue
        try:
            return Source("file", str(_file_in(user_path(value, cwd))), f"{origin}={value}")
        except FeynTuneError as err:
            raise FeynTuneError(f"hep-th documents from {origin}={value!s}: {err}") from None
    if hub:
        name, _, split = str(hub).partition(":")
        return Source("hub", name, f"metadata hepth_hub={hub}", split or HUB_SPLIT)
    return Source("hub", HUB_DATASET, f"default (neither metadata hepth_data nor {ENV_VAR} set)")


def _read_hub(name: str, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(name, split=split))


def to_document(record: dict, index: int, where: str) -> dict | None:
    """One benchmark document from a record; None when its abstract is empty."""
    if "abstract" not in record:
        raise FeynTuneError(f"{where}: record {index} has no 'abstract' field")
    raw = record["abstract"]
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise FeynTuneError(f"{where}: record {index} has a non-text abstract ({type(raw).__name__})")
    abstract = clean_abstract(raw)
    if not abstract:
        return None
    prompt, y_true = record.get("prompt"), record.get("y_true")
    if not (isinstance(prompt, str) and isinstance(y_true, str) and prompt):
        prompt, y_true = split_prompt(abstract)
    return {
        "id": document_id(record, index),
        "title": clean_abstract(str(record.get("title") or "")),
        "abstract": abstract,
        "prompt": prompt,
        "y_true": y_true,
    }


def read_records(source: Source) -> tuple[list[dict], str]:
    """The raw records of a source and how to name it in messages (the fresh task reads their
    date fields, which documents do not keep)."""
    if source.kind == "file":
        return read_objects(Path(source.location)), source.location
    try:
        records = _read_hub(source.location, source.split)
    except Exception as err:  # noqa: BLE001 -- offline, missing, renamed: one clear message
        raise FeynTuneError(
            f"no hep-th documents: tried metadata hepth_data (not given), ${ENV_VAR} (not set), "
            f"then the hub dataset {source.location} split {source.split} ({err.__class__.__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}). Pass "
            "--metadata '{\"hepth_data\": \"data\"}' with a `feyntune data build` folder, a set "
            f"folder or a JSON-lines file, or set ${ENV_VAR}") from None
    return records, f"{source.location}[{source.split}]"


def load_documents(hepth_data: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None,
                   environ: dict | None = None, hub: str | None = None) -> Documents:
    source = resolve_source(hepth_data, cwd=cwd, environ=environ, hub=hub)
    records, where = read_records(source)
    return documents_from(records, where, source)


def documents_from(records: list[dict], where: str, source: Source) -> Documents:
    """The documents of already-read records (empty abstracts skipped and counted)."""
    docs, skipped = [], 0
    for i, record in enumerate(records):
        doc = to_document(record, i, where)
        if doc is None:
            skipped += 1
        else:
            docs.append(doc)
    if skipped:
        print(f"feyntune: skipped {skipped} of {len(records)} records with an empty abstract "
              f"in {where}", file=sys.stderr)
    if not docs:
        raise FeynTuneError(f"no hep-th documents in {where} ({source.origin}): "
                            f"{len(records)} records, {skipped} with an empty abstract")
    return Documents(source=source, docs=tuple(docs), skipped_empty=skipped)


# ---- the lm-eval datasets of the two subtasks (custom_dataset receives the task metadata,
# into which lm-eval merges the model_args) ---------------------------------------------------

def _dataset_dict(rows: list[dict]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def generation_dataset(metadata: dict, docs: Documents | None = None):
    """Documents (by default those of `hepth_data`) plus the resolved SemScore model, recorded in
    each sample for traceability."""
    from harness.evaluate.metrics import resolve_semscore_model

    docs = docs or load_documents(metadata.get("hepth_data"), hub=metadata.get("hepth_hub"))
    model = resolve_semscore_model(metadata.get("semscore_model"))
    return _dataset_dict([{**d, "semscore_model": model} for d in docs.docs])


def perplexity_dataset(metadata: dict, docs: Documents | None = None):
    """Documents plus `ppl_tokens`, the number of tokens the evaluated model scores for each
    abstract, counted with its own tokenizer (process_results never sees the tokenizer)."""
    from harness.evaluate import metrics

    spec = metrics.tokenizer_spec(metadata)
    if spec is None:
        raise FeynTuneError(
            "hepth_completion_ppl counts the tokens of each abstract with the evaluated model's "
            "tokenizer, but the model_args name none (no pretrained= or tokenizer=). Pass "
            "--metadata '{\"tokenizer\": NAME}'; API models can run only hepth_completion_gen")
    docs = docs or load_documents(metadata.get("hepth_data"), hub=metadata.get("hepth_hub"))
    tokenizer = metrics.load_tokenizer(spec)
    counts = metrics.scored_token_counts([d["abstract"] for d in docs.docs], tokenizer,
                                         spec["prefix_token_id"])
    rows = [{**d, "ppl_tokens": n, "tokenizer": spec["name"]}
            for d, n in zip(docs.docs, counts) if n > 0]
    if len(rows) < len(docs.docs):
        print(f"feyntune: skipped {len(docs.docs) - len(rows)} abstracts with no token to score",
              file=sys.stderr)
    return _dataset_dict(rows)


def document_seed(run_seed: int, doc_id: str) -> int:
    """The sampling seed of one document's completion: derived from the run's seed and the
    document's id, so that every document draws its own random stream (one seed for all would
    give every document the same noise) and a re-run repeats it whatever the batching."""
    digest = hashlib.sha256(f"{int(run_seed)}\0{doc_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
