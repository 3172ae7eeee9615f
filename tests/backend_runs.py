"""One lm-eval model (hf or vllm) built once, then the hep-th task run on it several times:
perplexity with greedy generation, and sampled generation twice with the same seed. Run as a
script by tests/test_vllm_backend.py (vLLM's engine is a spawned process: it needs a `__main__`
and a process of its own), writing each run's per-document samples to OUT/<run>.json.

    python tests/backend_runs.py BACKEND MODEL DOCS SEMSCORE_MODEL MAX_NEW OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 1234


def _first(response):
    """A generation's text (lm-eval logs the filtered responses as a one-element list)."""
    return response[0] if isinstance(response, list) and len(response) == 1 else response


def main(backend: str, model: str, docs: str, semscore_model: str, max_new: int,
         out: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from harness.evaluate import backends
    from harness.evaluate.command import register_project_models
    from harness.ground.subtasks import GEN_TASK, PPL_TASK, TASK_DIR

    register_project_models()  # lm-eval's models, and vLLM's CPU build made visible to lm-eval
    engine = backends.Engine(backend, "float32", SEED, max_model_len=1 + 1024 + max_new,
                             memory_share=0.1 if backend == "vllm" else None)
    lm = get_model(backend).create_from_arg_string(
        engine.model_args(model), {"batch_size": 4, "device": "cpu"})
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False, metadata={
        "pretrained": model, "hepth_data": docs, "semscore_model": semscore_model})
    sampled = engine.gen_kwargs(0.8, max_new)
    runs = {"greedy": ([PPL_TASK, GEN_TASK], f"do_sample=False,max_gen_toks={max_new}"),
            "sampled_a": ([GEN_TASK], sampled), "sampled_b": ([GEN_TASK], sampled)}
    out.mkdir(parents=True, exist_ok=True)
    for name, (tasks, gen_kwargs) in runs.items():
        result = simple_evaluate(model=lm, tasks=tasks, gen_kwargs=gen_kwargs, log_samples=True,
                                 task_manager=manager, random_seed=SEED, numpy_random_seed=SEED,
                                 torch_random_seed=SEED)
        samples = {task: [{"id": row["doc"]["id"], "resps": _first(row["filtered_resps"]),
                           **{k: row[k] for k in row if k not in {"doc", "arguments", "resps",
                                                                  "filtered_resps", "target"}}}
                          for row in rows]
                   for task, rows in result["samples"].items()}
        (out / f"{name}.json").write_text(json.dumps(samples, default=str), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), Path(sys.argv[6]))
