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
