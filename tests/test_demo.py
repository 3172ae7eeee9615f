"""The demo's steps at the smallest sizes, so CI keeps `make demo` working."""

from __future__ import annotations

import csv
import json

import pytest

from harness import demo


@pytest.fixture
def mini_snapshot(sample_path, tmp_path):
    """The first 40 hep-th, 10 hep-ph and 10 gr-qc records of the real sample."""
    wanted = {"hep-th": 40, "hep-ph": 10, "gr-qc": 10}
    out = tmp_path / "mini.jsonl"
    with open(sample_path, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            primary = (json.loads(line).get("categories") or "").split(" ")[0]
            if wanted.get(primary, 0) > 0:
                wanted[primary] -= 1
                dst.write(line)
    return out


@pytest.mark.slow
def test_demo_runs_every_step_and_resumes(mini_snapshot, smollm2_path, minilm_path, tmp_path, capsys):
    cfg = demo.DemoConfig(snapshot=mini_snapshot, work=tmp_path / "work", runs=tmp_path / "runs",
                          results=tmp_path / "results", max_steps=2, batch_size=2, eval_docs=2,
                          max_new_tokens=4, validation_docs=2)
    assert demo.run_demo(cfg) == 0
    out = capsys.readouterr().out
    assert (cfg.work / "data" / "s1" / "test.jsonl").is_file()
    assert (cfg.work / "data" / "s3" / "train.jsonl").is_file()
    for adapter in cfg.adapters().values():
        assert (adapter / "adapter_config.json").is_file() and (adapter / "run.json").is_file()
        run = json.loads((adapter / "run.json").read_text())
        assert run["quantization"] == "nf4"  # the paper preset, cut to a step budget
        assert (run["validation"]["documents_per_pass"], run["validation"]["passes"]) == (2, 2)
    with open(cfg.results / "leaderboard.csv", newline="", encoding="utf-8") as f:
        measured = [r for r in csv.DictReader(f) if r["source"] == "measured"]
    assert len(measured) == 3 and all(r["ppl_token_mean"] != "NA" for r in measured)
    assert all(r["documents"] == "2" for r in measured)
    assert "Does fine-tuning beat the base model" in out
    assert out.count("-- PPL ") == 2

    # a second run finds every step done and only regenerates the leaderboard
    assert demo.run_demo(cfg) == 0
    again = capsys.readouterr().out
    assert again.count("already done") == 6
    assert "$ feyntune train" not in again and "$ feyntune eval" not in again
