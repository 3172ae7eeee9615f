"""bench/gpu.py on a CPU with a tiny Llama: every code path of the GPU benchmark, in seconds,
so it never rots between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_tiny_on_cpu(sample_path, llama3_tokenizer_path, tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--json", str(out),
                           "--sample", str(sample_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = done.stdout
    for line in ("ratio", "fast / paper", "projection, one s1 epoch",
                 "projection, perplexity of the 15,808 test abstracts",
                 "projection, generation for the 15,808 test prompts"):
        assert line in printed, line
    figures = json.loads(out.read_text())
    assert figures["mode"] == "tiny"
    ppl = figures["perplexity"]
    # two independent computations of the same perplexities (lm-eval's and a direct pass),
    # both in float32: they agree to rounding
    assert ppl["scored_by_eval"] == ppl["abstracts"] == 6
    assert ppl["max_abs_rel_diff"] < 1e-4
    train = figures["training"]
    assert set(train) == {"paper/lora-all", "fast/lora-all", "paper/lora-qkv", "fast/lora-qkv"}
    assert train["paper/lora-all"]["checkpointing"] is True
    assert train["fast/lora-all"]["checkpointing"] is False and "CPU" in train["fast/lora-all"]["reason"]
    assert all(t["s_per_step"] > 0 and t["tokens_per_s"] > 0 for t in train.values())
    gen = figures["generation"]
    assert {(g["cache"].split()[0], g["batch"]) for g in gen} == {("dynamic", 1), ("dynamic", 2),
                                                                 ("static", 2)}
    assert all(g["new_tokens"] > 0 for g in gen)
    proj = figures["projections"]
    assert proj["s1_epoch_steps"] == 4_611
    assert proj["test_generation_hours_at_cap"] > proj["test_generation_hours_expected"] > 0
