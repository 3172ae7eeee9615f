"""Shared fixtures: the real arXiv sample, the offline models, an offline hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEYNTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED_DATA / "arxiv" / "arxiv-sample.jsonl"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM's CPU engines in the tests run uncompiled (tests/eager_vllm.py says why and how).
os.environ.setdefault("VLLM_CPU_CI_ENV", "1")


@pytest.fixture
def eager_vllm(monkeypatch):
    """vLLM engines started by this test (and their processes) run without dynamo."""
    from eager_vllm import EAGER_VLLM

    for name, value in EAGER_VLLM.items():
        monkeypatch.setenv(name, value)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(f"{msg} (CI=true: missing shared data is a failure)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The real 1,477-record arXiv metadata sample in ../shared/data."""
    return _need(SAMPLE, "shared arXiv sample")


def _asset(name: str) -> Path:
    from harness import assets

    try:
        return assets.path(name)
    except assets.AssetError as err:
        if IN_CI:
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder (the embedded default model)."""
    return _asset("smollm2")


@pytest.fixture(scope="session")
def mpnet_path() -> Path:
    return _asset("mpnet")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return _asset("minilm")


@pytest.fixture(scope="session")
def llama3_tokenizer_path() -> Path:
    return _asset("llama3-tokenizer")


@pytest.fixture(scope="session")
def hepth_eval_runs(tmp_path_factory, sample_path, smollm2_path, minilm_path) -> Path:
    """A real `feyntune eval` output folder (results_*.json + samples_*.jsonl, lm-eval's own
    layout): the embedded SmolLM2 on the first 4 real hep-th abstracts of the sample, --limit 3,
    8 new tokens, SemScore with MiniLM for speed. Made once per session; treat it as read-only."""
    import json

    from harness import cli
    from harness.ground.abstracts import clean_abstract, is_control, is_withdrawn, primary_category

    root = tmp_path_factory.mktemp("hepth_eval")
    docs = root / "docs.jsonl"
    with open(sample_path, encoding="utf-8") as src, open(docs, "w", encoding="utf-8") as dst:
        kept = 0
        for line in src:
            r = json.loads(line)
            if (primary_category(r["categories"]) == "hep-th" and not is_control(r["id"])
                    and not is_withdrawn(r.get("comments"), r["abstract"])):
                dst.write(json.dumps({"id": r["id"], "title": r["title"],
                                      "abstract": clean_abstract(r["abstract"])}) + "\n")
                kept += 1
                if kept == 4:
                    break
    runs = root / "runs"
    metadata = json.dumps({"hepth_data": str(docs), "semscore_model": str(minilm_path)})
    # in this process (its imports are made once per session), from the fixture's folder
    here = os.getcwd()
    os.chdir(root)
    try:
        code = cli.main(["eval", "--model", "hf",
                         "--model_args", f"pretrained={smollm2_path},dtype=float32",
                         "--tasks", "hepth_completion", "--limit", "3",
                         "--gen_kwargs", "max_gen_toks=8", "--seed", "1234",
                         "--output_path", str(runs), "--metadata", metadata])
    finally:
        os.chdir(here)
    if code != 0:
        pytest.fail(f"feyntune eval failed ({code})")
    return runs


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory, smollm2_path, sample_path):
    """Two adapters of SmolLM2 trained here by `feyntune train` (the paper recipe, LoRA r 8 /
    alpha 32, two steps of batch 2 on short real hep-th abstracts), LoRA-all as the study's s3
    and LoRA-QKV as s3_qkv, and three real hep-th abstracts to evaluate on (`feyntune
    reproduce` tests). The base is not quantised: reproduce merges into the 16/32-bit base
    whatever the adapter was trained on, and NF4 on a CPU only slows the set-up (NF4 training
    is tested in tests/test_train_run.py). Made once per session; tests read them and must not
    change them."""
    import json

    import yaml
    from sample_sets import write_short_set

    from harness import cli
    from harness.ground.abstracts import clean_abstract, primary_category

    tmp_path = tmp_path_factory.mktemp("stand_ins")
    data = write_short_set(sample_path, tmp_path / "data" / "s3", n_train=8, n_validation=4,
                           words=16)
    (data.parent / "manifest.json").write_text('{"set": "s3"}')
    # short runs: no activation checkpointing (pure overhead at this size), 2 validation
    # passes of 2 abstracts
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump({"gradient_checkpointing": False, "evaluations": 2,
                                      "eval_documents": 2, "per_device_eval_batch_size": 4,
                                      "quant": {"method": "none"}}))
    adapters = tmp_path / "adapters"
    for name, lora in (("s3", "all"), ("s3_qkv", "qkv")):
        code = cli.main(["train", "--base", str(smollm2_path), "--data", str(data), "--lora", lora,
                         "--out", str(adapters / name), "--max-steps", "2", "--batch-size", "2",
                         "--config", str(config)])
        assert code == 0, f"feyntune train ({lora}) failed"
    docs = tmp_path / "docs.jsonl"
    with open(sample_path, encoding="utf-8") as src, open(docs, "w", encoding="utf-8") as dst:
        kept = 0
        for line in src:
            record = json.loads(line)
            if primary_category(record["categories"]) == "hep-th" and kept < 3:
                dst.write(json.dumps({"id": record["id"], "title": record["title"],
                                      "abstract": clean_abstract(record["abstract"])}) + "\n")
                kept += 1
    return adapters, docs


@pytest.fixture(scope="session")
def sequential(stand_ins, smollm2_path, minilm_path, tmp_path_factory):
    """The offline reproduction through hf (`feyntune reproduce` of Base, s3 and s3_qkv on the
    stand-ins), one model after another in this process. Made once per session: the hf tests
    read it, and the vLLM test takes its figures as the reference. Tests must not change it."""
    import contextlib
    import io
    from types import SimpleNamespace

    from reproduce_runs import reproduce_argv

    from harness import cli

    root = tmp_path_factory.mktemp("sequential")
    argv = reproduce_argv(stand_ins, smollm2_path, minilm_path, root / "runs", root / "work")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(argv)
    assert code == 0
    return SimpleNamespace(argv=argv, runs=root / "runs", work=root / "work",
                           out=printed.getvalue())
