"""`feyntune study run`, end to end on a CPU: a study of SmolLM2 on the shared arXiv sample
(two sets built from it, two adapters trained for two steps, the base and both adapters
evaluated on three documents, the leaderboard), run sequentially; a second run finds nothing to
do, and `status` says every model is evaluated. The same study cut to its first adapter, run
with `--executor local` (each job a submitit process, each evaluation after its training, the
report last), gives the same adapter weights and per-document perplexities."""

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
# two optimizer steps of batch 1 on the unquantised base, two validation passes of 2 abstracts
SHORT = {"quant": {"method": "none"}, "max_steps": 2, "per_device_batch_size": 1,
         "per_device_eval_batch_size": 2, "evaluations": 2, "eval_documents": 2,
         "gradient_checkpointing": False}


def study_file(folder: Path, sample: Path, base: Path, models: int = 2) -> Path:
    """The study file (with its sets file) in `folder`, with its first `models` adapters."""
    (folder / "sets.yaml").write_text(yaml.safe_dump(SETS_CONFIG))
    study = {
        "name": "tiny",
        "base": {"model": str(base), "dtype": "float32", "name": "SmolLM2"},
        "documents": {"set": "hep"},
        "curation": {"snapshot": str(sample), "config": "sets.yaml"},
        "evaluation": {"tasks": "perplexity", "limit": 3, "max_new_tokens": 4},
        "models": [{"name": "hep-all", "set": "hep", "lora": "all", "overrides": SHORT},
                   {"name": "mix-qkv", "set": "hep-gr", "lora": "qkv", "overrides": SHORT}][:models],
    }
    path = folder / f"tiny-{models}.yaml"
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

    # jobs as processes: what a second adapter's jobs would add is what the first one's test
    one = study_file(tmp_path, sample_path, smollm2_path, models=1)
    assert cli.main(["study", "run", str(one), "--out", str(local), "--executor", "local",
                     *common]) == 0
    out = capsys.readouterr().out
    for job in ("data", "train/hep-all", "eval/SmolLM2", "eval/hep-all", "report"):
        assert f"  {job} " in out, job
    one_weights = adapter_weights(sequential / "adapters" / "hep-all")
    other = adapter_weights(local / "adapters" / "hep-all")
    assert one_weights.keys() == other.keys() and len(one_weights) > 0
    assert all((one_weights[key] == other[key]).all() for key in one_weights)
    measured = perplexities(local / "runs")
    assert set(measured) == {"SmolLM2", "hep-all"}
    assert all(len(docs) == 3 for docs in measured.values())
    assert measured == {name: perplexities(sequential / "runs")[name] for name in measured}
    board = (sequential / "leaderboard.md").read_text()
    assert "| smollm2 + LoRA-all hep |" in board and "| smollm2 + LoRA-QKV hep-gr |" in board
    assert "| smollm2 + LoRA-all hep |" in (local / "leaderboard.md").read_text()
    for folder in (sequential, local):
        record = json.loads((folder / "jobs.json").read_text())
        assert {entry["state"] for entry in record.values()} == {"done"}
    logs = {entry["log"] for entry in json.loads((local / "jobs.json").read_text()).values()}
    assert len(logs) == 5 and all(Path(log).is_file() for log in logs)  # one process per job
