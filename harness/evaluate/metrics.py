"""Per-document metrics of the hep-th completion benchmark (docs/reference.md: Perplexity, SemScore, Word entropy).

One function per metric, imported by the lm-eval task (tasks/hepth_completion/utils.py, which
scores local models and commercial providers alike: the providers only return text), the task's
document loader (harness/evaluate/documents.py) and the leaderboard figures. Pure functions of text and numbers, except SemScore, which goes
through one cached sentence-transformers model per name (`get_embedder`) so that a run encodes
every text once, in batches.

Defined values on degenerate input (never an exception, never NaN in a sample):
- a text with no words: `word_entropy` 0.0, `completion_words` 0, `repetition` 0.0,
  `metadata_leak` 0;
- SemScore of a pair where either side is empty (an empty completion, the empty ground truth of
  a one-word abstract): 0.0, because an empty text carries no meaning to compare.
Perplexities need at least one scored token/word; the task drops documents with an empty
abstract when it loads them (a counted, reported skip), so they never reach these functions.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from harness.ground.errors import FeynTuneError

DEFAULT_SEMSCORE_MODEL = "sentence-transformers/all-mpnet-base-v2"
SEMSCORE_ENV = "FEYNTUNE_SEMSCORE_MODEL"
EMBED_BATCH_SIZE = 64

_WORD = re.compile(r"\w+")

# Fake arXiv listing metadata the base model appends, e.g.
# "From: A. Author [view email] [v1] Tue, 18 Mar 2003 12:00:00 GMT (24kb)".
_METADATA_PATTERNS = (
    re.compile(r"\bFrom:"),
    re.compile(r"\[v\d+\]"),
    re.compile(r"view email", re.IGNORECASE),
    re.compile(r"\(\s*\d+(?:\.\d+)?\s*kb\s*\)", re.IGNORECASE),
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*GMT\b"),
)


# ---- tokenizer-free text statistics ------------------------------------------------------

def words(text: str) -> list[str]:
    """Lower-cased `\\w+` words: the tokenisation of word entropy, length and repetition."""
    return _WORD.findall((text or "").lower())


def completion_words(text: str) -> int:
    return len(words(text))


def word_entropy(text: str) -> float:
    """exp(H), H the Shannon entropy (natural log) of the word-frequency distribution; 0 words: 0.0.

    exp(H) is the effective number of distinct words: n distinct words used equally often give
    n, a text repeating one word gives 1.
    """
    counts = Counter(words(text))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    p = np.fromiter(counts.values(), dtype=np.float64) / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


def repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: 1 - distinct/total (0.0 below n words)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def metadata_leak(text: str) -> int:
    """1 when the text contains fake arXiv listing metadata ("From:", "[v1]", "view email",
    a "(24kb)" size, a GMT timestamp), else 0."""
    text = text or ""
    return int(any(p.search(text) for p in _METADATA_PATTERNS))


def join_completion(prompt: str, completion: str) -> str:
    """The model's whole abstract: prompt followed by its continuation.

    Raw-text models continue the prompt with their own leading space; chat models answer
    without one, so a space is inserted only when neither side has whitespace at the seam.
    """
    if not prompt:
        return completion
    if not completion or completion[:1].isspace() or prompt[-1:].isspace():
        return prompt + completion
    return prompt + " " + completion


# ---- perplexities ------------------------------------------------------------------------

def token_perplexity(loglikelihood: float, n_tokens: int) -> float:
    """exp(-loglikelihood / n_tokens): per-document perplexity over the scored tokens."""
    if n_tokens <= 0:
        raise FeynTuneError(f"token_perplexity: {n_tokens} tokens scored; an empty text has no perplexity")
    return float(math.exp(-loglikelihood / n_tokens))


def count_whitespace_words(text: str) -> int:
    return len((text or "").split())


def word_perplexity_of(loglikelihood: float, text: str) -> float:
    """exp(-loglikelihood / number of whitespace words): comparable across vocabularies."""
    n = count_whitespace_words(text)
    if n == 0:
        raise FeynTuneError("word_perplexity_of: the text has no words; an empty text has no perplexity")
    return float(math.exp(-loglikelihood / n))


# ---- SemScore ----------------------------------------------------------------------------

def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_semscore_model(name: str | None = None) -> str:
    """Name or folder of the embedding model: `name`, else $FEYNTUNE_SEMSCORE_MODEL, else the
    default all-mpnet-base-v2. Offline (HF_HUB_OFFLINE), the default resolves to the fetched
    `mpnet` asset, which is the same model (hub revision e8c3b32e)."""
    chosen = name or os.environ.get(SEMSCORE_ENV) or DEFAULT_SEMSCORE_MODEL
    if chosen == DEFAULT_SEMSCORE_MODEL and _truthy(os.environ.get("HF_HUB_OFFLINE")):
        from harness import assets

        if assets.is_fetched("mpnet"):
            return str(assets.path("mpnet"))
    return chosen


class Embedder:
    """One sentence-transformers model with a cache of normalised embeddings by text."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._model = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def model(self):
        if self._model is None:
            self._model = _load_sentence_transformer(self.model_name)
        return self._model

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit-norm embeddings of `texts` (rows in order); texts not cached yet are encoded in
        one batched call (sentence-transformers sorts them by length itself)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(
                missing, batch_size=EMBED_BATCH_SIZE, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=progress)
            self._cache.update(zip(missing, vectors))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def clear(self) -> None:
        self._cache.clear()


def _load_sentence_transformer(name: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name)
    except Exception as err:  # any failure to load (offline, missing, corrupt) gets one message
        if name == DEFAULT_SEMSCORE_MODEL:
            from harness import assets

            if assets.is_fetched("mpnet"):
                print(f"feyntune: could not load {name} ({err.__class__.__name__}); "
                      "using the fetched mpnet asset, the same model", file=sys.stderr)
                return SentenceTransformer(str(assets.path("mpnet")))
        raise FeynTuneError(
            f"cannot load the SemScore embedding model {name!r}: {err}. Give another with "
            f"--metadata '{{\"semscore_model\": ...}}' or ${SEMSCORE_ENV}, or run "
            "`feyntune assets fetch mpnet` for the default offline") from err


def get_embedder(model_name: str | None = None) -> Embedder:
    """The process-wide embedder of a model (loaded once, on first use), keyed by the resolved
    name so that the default and its explicit spelling share one model."""
    return _embedder(resolve_semscore_model(model_name))


@lru_cache(maxsize=4)
def _embedder(resolved_name: str) -> Embedder:
    return Embedder(resolved_name)


def semscores(a_texts: Sequence[str], b_texts: Sequence[str], model_name: str | None = None,
              progress: bool = False) -> list[float]:
    """Cosine similarity of each pair (a_i, b_i); 0.0 where either text is empty."""
    if len(a_texts) != len(b_texts):
        raise FeynTuneError(f"semscores: {len(a_texts)} texts against {len(b_texts)}")
    a_texts = [(t or "").strip() for t in a_texts]
    b_texts = [(t or "").strip() for t in b_texts]
    live = [i for i, (a, b) in enumerate(zip(a_texts, b_texts)) if a and b]
    out = [0.0] * len(a_texts)
    if live:
        emb = get_embedder(model_name)
        vectors = emb.embed([a_texts[i] for i in live] + [b_texts[i] for i in live], progress=progress)
        a_vec, b_vec = vectors[:len(live)], vectors[len(live):]
        sims = np.einsum("ij,ij->i", a_vec.astype(np.float64), b_vec.astype(np.float64))
        for i, s in zip(live, sims):
            out[i] = float(s)
    return out


def semscore(a: str, b: str, model_name: str | None = None) -> float:
    return semscores([a], [b], model_name)[0]


# ---- the evaluated model's tokenizer (denominator of ppl_token) ---------------------------

def tokenizer_spec(metadata: dict) -> dict | None:
    """How lm-eval loads the evaluated model's tokenizer, from its model_args (merged into the
    task metadata): `tokenizer=` when given, else `pretrained`, with the same revision,
    trust_remote_code, use_fast_tokenizer, gguf_file and subfolder. None when no name is known
    (a model object passed through the Python API: give metadata `tokenizer`)."""
    name = metadata.get("tokenizer") or metadata.get("pretrained")
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        return None
    kwargs = {
        "revision": str(metadata.get("revision") or "main"),
        "trust_remote_code": bool(metadata.get("trust_remote_code", False)),
    }
    if metadata.get("gguf_file") and not metadata.get("tokenizer"):
        kwargs["gguf_file"] = str(metadata["gguf_file"])
    else:
        kwargs["use_fast"] = bool(metadata.get("use_fast_tokenizer", True))
    if metadata.get("subfolder"):
        kwargs["subfolder"] = str(metadata["subfolder"])
    prefix = metadata.get("prefix_token_id")
    return {"name": str(name), "kwargs": kwargs,
            "prefix_token_id": int(prefix) if prefix not in (None, "") else None}


@lru_cache(maxsize=4)
def _load_tokenizer(name: str, kwargs_items: tuple):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, **dict(kwargs_items))
    except Exception as err:
        raise FeynTuneError(f"cannot load the tokenizer {name!r} to count the tokens of ppl_token: {err}") from err


def load_tokenizer(spec: dict):
    """The tokenizer of a spec from `tokenizer_spec`, loaded once per process."""
    return _load_tokenizer(spec["name"], tuple(sorted(spec["kwargs"].items())))


def scored_token_counts(texts: Sequence[str], tokenizer, prefix_token_id: int | None = None) -> list[int]:
    """Tokens lm-eval scores for a loglikelihood request ("", text): the text encoded without
    special tokens after a prefix token (BOS, else EOS); when the text's first token already is
    that prefix, it becomes the context and is not scored (lm-eval's TemplateLM rule)."""
    if prefix_token_id is None:
        prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(ids) - (1 if ids and ids[0] == prefix_token_id else 0) for ids in encoded]


# ---- one document's metrics, as the task writes them into the samples --------------------

def semscore_pairs(doc: dict, completion: str) -> tuple[list[str], list[str]]:
    """(left texts, right texts) of semscore and semscore_full for one document."""
    return ([completion, join_completion(doc["prompt"], completion)], [doc["y_true"], doc["abstract"]])


def generation_metrics(doc: dict, completion: str, model_name: str | None = None) -> dict:
    completion = completion or ""
    left, right = semscore_pairs(doc, completion)
    sem, sem_full = semscores(left, right, model_name)
    return {
        "semscore": sem,
        "semscore_full": sem_full,
        "word_entropy": word_entropy(completion),
        "completion_words": completion_words(completion),
        "metadata_leak": metadata_leak(completion),
        "repetition": repetition(completion),
    }


def perplexity_metrics(doc: dict, loglikelihood: float, n_tokens: int) -> dict:
    text = doc["abstract"]
    n_words = count_whitespace_words(text)
    n_bytes = len(text.encode("utf-8"))
    return {
        "ppl_token": token_perplexity(loglikelihood, n_tokens),
        "ppl_word": word_perplexity_of(loglikelihood, text),
        # lm-eval's corpus-level figures (weighted_perplexity / bits_per_byte aggregations)
        "word_perplexity": (loglikelihood, n_words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }


def warm_semscores(docs: Sequence[dict], completions: Sequence[str]) -> None:
    """Embed every text SemScore will need for these documents in one batched pass per model,
    so the per-document calls that follow only read the cache."""
    by_model: dict[str | None, tuple[list[str], list[str]]] = {}
    for doc, completion in zip(docs, completions):
        left, right = semscore_pairs(doc, completion or "")
        lists = by_model.setdefault(doc.get("semscore_model"), ([], []))
        lists[0].extend(left)
        lists[1].extend(right)
    for model_name, (left, right) in by_model.items():
        semscores(left, right, model_name, progress=True)
