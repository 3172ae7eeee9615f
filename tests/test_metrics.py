"""harness.evaluate.metrics: hand-computed values, defined values on bad input, SemScore against
sentence-transformers' own encode + cosine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.evaluate import metrics as m
from harness.ground.abstracts import clean_abstract, primary_category, split_prompt
from harness.ground.errors import FeynTuneError

# ---- word entropy, length, repetition, metadata ------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", 0.0),
    ("   ...  !", 0.0),                       # no \w+ words
    ("Hello", 1.0),
    ("A a. A!", 1.0),                          # case and punctuation ignored
    ("a b", 2.0),
    ("a a b b", 2.0),
    ("the cat the dog", 2 ** 1.5),             # p = (1/2, 1/4, 1/4): H = 1.5 ln 2
    ("one two three four five", 5.0),
    ("Schrödinger équation Schrödinger", math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))),
])
def test_word_entropy_hand_computed(text, expected):
    assert m.word_entropy(text) == pytest.approx(expected, rel=1e-12)


def test_word_entropy_is_low_for_repetitive_text():
    varied = "We compute the one-loop partition function of the string on a twisted torus."
    assert m.word_entropy(varied + " " + "the the the the the the the the") < m.word_entropy(varied + " " + varied.replace("the", "a"))
    assert m.word_entropy("string " * 200) == pytest.approx(1.0)


@pytest.mark.parametrize("text, n", [("", 0), ("x", 1), ("N=4 super-Yang-Mills", 5), ("α' corrections", 2)])
def test_completion_words(text, n):
    assert m.completion_words(text) == n


@pytest.mark.parametrize("text, expected", [
    ("", 0.0),
    ("a b c", 0.0),                            # fewer than 4 words: no 4-gram
    ("a b c d", 0.0),
    ("a b c d a b c d", 1 - 4 / 5),            # abcd bcda cdab dabc abcd
    ("x x x x x x", 1 - 1 / 3),                # three identical 4-grams
    ("We study. We study! We study? we STUDY", 1 - 2 / 5),
])
def test_repetition(text, expected):
    assert m.repetition(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "From: John Smith <js@example.org>",
    "Comments: 12 pages [v1] Tue, 18 Mar 2003",
    "submitted by J. Smith [view email]",
    "Tue, 18 Mar 2003 17:31:06 GMT (24kb)",
    "(12.5 KB)",
    "18 Mar 2003 17:31 GMT",
    "[v3]",
])
def test_metadata_leak_detected(text):
    assert m.metadata_leak(text) == 1


@pytest.mark.parametrize("text", [
    "", "It follows from: the Ward identity.", "Results from the LHC [1] agree.",
    "the 24 kb region of the genome", "at 12:30 we observed", "Greenwich Mean Time"])
def test_metadata_leak_not_triggered(text):
    assert m.metadata_leak(text) == 0


def test_no_real_abstract_looks_like_leaked_metadata(sample_path):
    abstracts = [clean_abstract(json.loads(line)["abstract"]) for line in sample_path.read_text(encoding="utf-8").splitlines()]
    assert len(abstracts) == 1477
    assert sum(m.metadata_leak(a) for a in abstracts) == 0


@pytest.mark.parametrize("prompt, completion, joined", [
    ("First.", " Second.", "First. Second."),  # raw-text model: its own space
    ("First.", "Second.", "First. Second."),   # chat model: no space of its own
    ("First.", "", "First."),
    ("First. ", "Second.", "First. Second."),
    ("", "Second.", "Second."),
])
def test_join_completion(prompt, completion, joined):
    assert m.join_completion(prompt, completion) == joined


# ---- perplexities ------------------------------------------------------------------------

def test_perplexities():
    assert m.token_perplexity(-math.log(10.0) * 7, 7) == pytest.approx(10.0)
    assert m.word_perplexity_of(-6.0, "three little words") == pytest.approx(math.exp(2.0))
    assert m.word_perplexity_of(-2.0, "Wort") == pytest.approx(math.exp(2.0))  # one-word abstract
    with pytest.raises(FeynTuneError):
        m.token_perplexity(-1.0, 0)
    with pytest.raises(FeynTuneError):
        m.word_perplexity_of(-1.0, "   ")


def test_scored_token_counts_follow_lm_eval(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    texts = ["We study D-branes.", "Schrödinger équation", "x"]
    plain = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert m.scored_token_counts(texts, tok) == plain
    # a text whose first token is the prefix token: that token becomes the context
    bos_text = tok.bos_token + "We study D-branes."
    assert m.scored_token_counts([bos_text], tok) == [len(tok(bos_text, add_special_tokens=False)["input_ids"]) - 1]


def test_tokenizer_spec_follows_lm_eval_model_args():
    assert m.tokenizer_spec({"pretrained": "base", "peft": "adapter"})["name"] == "base"
    spec = m.tokenizer_spec({"pretrained": "base", "tokenizer": "tok", "revision": "r1", "trust_remote_code": True})
    assert spec["name"] == "tok" and spec["kwargs"]["revision"] == "r1" and spec["kwargs"]["trust_remote_code"]
    assert m.tokenizer_spec({"model": "gpt-4o"}) is None
    assert m.tokenizer_spec({"pretrained": "b", "prefix_token_id": 5})["prefix_token_id"] == 5


# ---- SemScore ----------------------------------------------------------------------------

def _hepth_pairs(sample_path, k):
    pairs = []
    for line in sample_path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if primary_category(r["categories"]) == "hep-th":
            prompt, truth = split_prompt(clean_abstract(r["abstract"]))
            if truth:
                pairs.append((prompt, truth))
        if len(pairs) == k:
            return pairs
    return pairs


def _st_cosines(path, left, right):
    from sentence_transformers import SentenceTransformer, util

    model = SentenceTransformer(str(path), device="cpu")
    a, b = model.encode(left, convert_to_tensor=True), model.encode(right, convert_to_tensor=True)
    return [float(util.cos_sim(a[i], b[i])) for i in range(len(left))]


def test_semscore_matches_sentence_transformers_minilm(minilm_path, sample_path):
    pairs = _hepth_pairs(sample_path, 12)
    left, right = [p for p, _ in pairs], [t for _, t in pairs]
    ours = m.semscores(left, right, str(minilm_path))
    expected = _st_cosines(minilm_path, left, right)
    assert ours == pytest.approx(expected, abs=1e-5)
    assert m.semscore(left[0], left[0], str(minilm_path)) == pytest.approx(1.0, abs=1e-6)


def test_semscore_matches_sentence_transformers_mpnet(mpnet_path, sample_path, monkeypatch):
    """The default model; offline, the default hub name resolves to the fetched asset."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(m.SEMSCORE_ENV, raising=False)
    assert m.resolve_semscore_model() == str(mpnet_path)
    assert m.resolve_semscore_model(m.DEFAULT_SEMSCORE_MODEL) == str(mpnet_path)
    pairs = _hepth_pairs(sample_path, 3)
    left, right = [p for p, _ in pairs], [t for _, t in pairs]
    assert m.semscores(left, right) == pytest.approx(_st_cosines(mpnet_path, left, right), abs=1e-5)
    assert m.get_embedder(None).embed(left).shape == (3, 768)


def test_semscore_model_choice(monkeypatch, minilm_path):
    monkeypatch.setenv(m.SEMSCORE_ENV, str(minilm_path))
    assert m.resolve_semscore_model() == str(minilm_path)
    assert m.resolve_semscore_model("other/model") == "other/model"  # metadata wins over the variable


def test_embedder_encodes_each_text_once_in_one_batch(minilm_path, monkeypatch):
    emb = m.Embedder(str(minilm_path))
    calls = []
    real = emb.model.encode
    monkeypatch.setattr(emb.model, "encode", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    texts = ["alpha", "beta", "alpha", "gamma"]
    v = emb.embed(texts)
    assert calls == [["alpha", "beta", "gamma"]]
    assert np.allclose(v[0], v[2]) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    emb.embed(["beta", "gamma"])
    assert len(calls) == 1  # cached


def test_semscore_unloadable_model_is_a_clear_error(tmp_path):
    with pytest.raises(FeynTuneError, match="SemScore embedding model"):
        m._load_sentence_transformer(str(tmp_path / "no-such-model"))


# ---- bad input gives defined values -------------------------------------------------------

def test_generation_metrics_on_bad_input(minilm_path):
    model = str(minilm_path)
    one_word = {"prompt": "Supersymmetry", "y_true": "", "abstract": "Supersymmetry"}
    assert split_prompt("Supersymmetry") == ("Supersymmetry", "")
    r = m.generation_metrics(one_word, " is broken at low energies.", model)
    assert r["semscore"] == 0.0                      # empty ground truth
    assert 0.0 < r["semscore_full"] <= 1.0
    doc = {"prompt": "We study branes.", "y_true": "They are stable.", "abstract": "We study branes. They are stable."}
    empty = m.generation_metrics(doc, "", model)
    assert empty == {"semscore": 0.0, "semscore_full": pytest.approx(m.semscore("We study branes.", doc["abstract"], model)),
                     "word_entropy": 0.0, "completion_words": 0, "metadata_leak": 0, "repetition": 0.0}
    non_ascii = {"prompt": "Étude des équations de Schrödinger.", "y_true": "Résultats für α→0.",
                 "abstract": "Étude des équations de Schrödinger. Résultats für α→0."}
    r = m.generation_metrics(non_ascii, " Résultats für α→0.", model)
    assert r["semscore"] == pytest.approx(1.0, abs=1e-5) and r["completion_words"] == 4
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in r.values())
