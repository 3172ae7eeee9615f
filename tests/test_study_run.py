"""`feyntune study run`, end to end on a CPU: a study of SmolLM2 on the shared arXiv sample
(two sets built from it, two adapters trained for two steps, the base and both adapters
evaluated on three documents, the leaderboard), run with `--executor local` and sequentially:
the adapters' weights and the per-document perplexities are the same. A second run finds
nothing to do, and `status` says every model is evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.ground.subtasks import PPL_TASK
from harness.runs import lmeval_outputs

# Two small sets of the sample, curated by `feyntune data build --config` rules: hep-th and
# gr-qc down-sampled before splitting, so each set has a few dozen abstracts.
SETS_CONFIG = {
    "seed": 42,
    "split": {"train_size": 0.7, "validation_test_size": 0.5},
    "categories": ["hep-th", "gr-qc"],
    "downsample": {"hep-th": 40, "gr-qc": 20},
    "sets": {"hep": {"kind": "category", "category": "hep-th"},
             "hep-gr": {"kind": "union", "parts": ["hep-th", "gr-qc"]}},
}
# two optimizer steps of batch 2 on the unquantised base, two short validation passes
SHORT = {"quant": {"method": "none"}, "max_steps": 2, "per_device_batch_size": 2,
         "per_device_eval_batch_size": 4, "evaluations": 2, "gradient_checkpointing": False}


def study_file(folder: Path, sample: Path, base: Path) -> Path:
    (folder / "sets.yaml").write_text(yaml.safe_dump(SETS_CONFIG))
    study = {
        "name": "tiny",
        "base": {"model": str(base), "dtype": "float32", "name": "SmolLM2"},
        "documents": {"set": "hep"},
        "curation": {"snapshot": str(sample), "config": "sets.yaml"},
        "evaluation": {"tasks": "perplexity", "limit": 3, "max_new_tokens": 4},
        "models": [{"name": "hep-all", "set": "hep", "lora": "all", "overrides": SHORT},
                   {"name": "mix-qkv", "set": "hep-gr", "lora": "qkv", "overrides": SHORT}],
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def perplexities(runs: Path) -> dict[str, dict[int, float]]:
    """model -> document -> ppl_token, from the lm-eval samples of the study's runs."""
    found = {}
    for run in lmeval_outputs.scan(runs).runs:
        found[run.study["study"]] = {doc.doc_id: doc.metrics["ppl_token"]
                                     for doc in run.samples[PPL_TASK]}
    return found


@pytest.mark.slow
def test_local_run_equals_sequential_run(tmp_path, capsys, sample_path, smollm2_path,
                                         minilm_path):
    pytest.importorskip("submitit")
    path = study_file(tmp_path, sample_path, smollm2_path)
    common = ["--semscore-model", str(minilm_path), "--work", str(tmp_path / "work"),
              "--batch-size", "4"]  # lm-eval's auto batch size probes for minutes on a CPU
    sequential, local = tmp_path / "sequential", tmp_path / "local"

    assert cli.main(["study", "run", str(path), "--out", str(sequential), *common]) == 0
    out = capsys.readouterr().out
    for job in ("data", "train/hep-all", "train/mix-qkv", "eval/SmolLM2", "eval/hep-all",
                "eval/mix-qkv", "report"):
        assert f"  {job} " in out, job
    # a second run does nothing, and every model is evaluated
    assert cli.main(["study", "run", str(path), "--out", str(sequential), *common]) == 0
    assert "  nothing to do" in capsys.readouterr().out
    assert cli.main(["study", "status", str(path), "--out", str(sequential)]) == 0
    status = capsys.readouterr().out
    assert status.count("  evaluated") == 3 and "sets: hep, hep-gr built" in status

    assert cli.main(["study", "run", str(path), "--out", str(local), "--executor", "local",
                     *common]) == 0
    capsys.readouterr()
    for name in ("hep-all", "mix-qkv"):
        one = adapter_weights(sequential / "adapters" / name)
        other = adapter_weights(local / "adapters" / name)
        assert one.keys() == other.keys() and len(one) > 0
        assert all((one[key] == other[key]).all() for key in one), name
    assert perplexities(sequential / "runs") == perplexities(local / "runs")
    assert set(perplexities(local / "runs")) == {"SmolLM2", "hep-all", "mix-qkv"}
    assert all(len(docs) == 3 for docs in perplexities(local / "runs").values())
    for folder in (sequential, local):
        board = (folder / "leaderboard.md").read_text()
        assert "| smollm2 + LoRA-all hep |" in board and "| smollm2 + LoRA-QKV hep-gr |" in board
        record = json.loads((folder / "jobs.json").read_text())
        assert {entry["state"] for entry in record.values()} == {"done"}
