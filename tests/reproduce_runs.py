"""Set-up shared by the `feyntune reproduce` tests, not a pipeline step: the command line of the
offline reproduction with the session's stand-in adapters (tests/conftest.py `stand_ins`).

The hf run of it is made once per session (conftest `sequential`) and read by test_reproduce.py
and, as the reference for vLLM's figures, by test_reproduce_vllm.py.
"""

from __future__ import annotations

MAX_NEW = 4


def reproduce_argv(stand_ins, smollm2_path, minilm_path, runs, work) -> list[str]:
    adapters, docs = stand_ins
    return ["reproduce", "--base", str(smollm2_path), "--adapters", str(adapters),
            "--models", "s3,s3_qkv", "--data", str(docs), "--limit", "3",
            "--max-new-tokens", str(MAX_NEW), "--batch-size", "4", "--device", "cpu",
            "--dtype", "float32", "--semscore-model", str(minilm_path),
            "--runs", str(runs), "--work", str(work)]
