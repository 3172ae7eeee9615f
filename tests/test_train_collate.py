"""Tokenisation and batching of real abstracts: BOS+EOS, no truncation, pad = EOS, labels."""

from __future__ import annotations

import json

import pytest
from sample_sets import hepth_abstracts

from finetune import collate
from harness.ground.errors import FeynTuneError


@pytest.fixture(scope="module")
def abstracts(sample_path):
    return [r["abstract"] for r in hepth_abstracts(sample_path)]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="module")
def llama3_tokenizer(llama3_tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama3_tokenizer_path)


def test_hepth_abstracts_of_the_sample_are_cleaned(abstracts):
    assert len(abstracts) > 300
    assert all("\n" not in a and a == a.strip() for a in abstracts)


@pytest.mark.parametrize("tok_fixture,bos,eos", [("smollm2_tokenizer", 1, 2),
                                                 ("llama3_tokenizer", 128000, 128001)])
def test_each_abstract_gets_exactly_one_bos_and_one_eos(request, abstracts, tok_fixture, bos, eos):
    tok = request.getfixturevalue(tok_fixture)
    for text in abstracts[:50]:
        ids = collate.tokenize_abstract(tok, text)
        body = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == [bos] + body + [eos]
        assert ids.count(bos) == 1


def test_no_truncation_of_the_longest_abstract(abstracts, smollm2_tokenizer):
    longest = max(abstracts, key=len)
    ids = collate.tokenize_abstract(smollm2_tokenizer, longest)
    assert len(ids) > 300  # longer than any default max_length a truncating tokenizer would apply
    assert smollm2_tokenizer.decode(ids[1:-1]) == longest


def test_dataset_records_lengths(abstracts, smollm2_tokenizer):
    ds = collate.tokenize_dataset(smollm2_tokenizer, abstracts[:20])
    assert ds["length"] == [len(x) for x in ds["input_ids"]]
    assert ds[0]["input_ids"] == collate.tokenize_abstract(smollm2_tokenizer, abstracts[0])


def test_collator_pads_to_multiple_of_8_and_masks_by_attention(abstracts, smollm2_tokenizer):
    eos = smollm2_tokenizer.eos_token_id
    feats = [{"input_ids": collate.tokenize_abstract(smollm2_tokenizer, t)} for t in abstracts[:5]]
    lengths = [len(f["input_ids"]) for f in feats]
    batch = collate.PaddingCollator(pad_token_id=eos, pad_to_multiple_of=8)(feats)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and max(lengths) <= width < max(lengths) + 8
    for row, n in enumerate(lengths):
        assert batch["input_ids"][row, :n].tolist() == feats[row]["input_ids"]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][row, n:] == eos).all()  # pad = EOS
        assert (batch["labels"][row, n:] == -100).all()
        # the abstract's own EOS is a real target although it has the pad id
        assert batch["labels"][row, n - 1].item() == eos
        assert batch["labels"][row, :n].tolist() == feats[row]["input_ids"]


def test_collator_exact_multiple_needs_no_extra_padding():
    batch = collate.PaddingCollator(pad_token_id=0, pad_to_multiple_of=8)(
        [{"input_ids": list(range(1, 9))}, {"input_ids": [5, 6, 7]}])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"][1].tolist() == [5, 6, 7] + [-100] * 5


def test_bad_data_folders_are_clear_errors(tmp_path):
    with pytest.raises(FeynTuneError, match="does not exist"):
        collate.split_files(tmp_path / "nope")
    (tmp_path / "train.jsonl").write_text(json.dumps({"abstract": "x"}) + "\n")
    with pytest.raises(FeynTuneError, match="validation.jsonl"):
        collate.split_files(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(FeynTuneError, match="no abstracts"):
        collate.read_texts(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"abstract": "ok"}) + "\n" + json.dumps({"title": "no abstract"}) + "\n")
    with pytest.raises(FeynTuneError, match=r"bad.jsonl:2"):
        collate.read_texts(bad)
    bad.write_text("{not json\n")
    with pytest.raises(FeynTuneError, match="not a JSON object"):
        collate.read_texts(bad)
