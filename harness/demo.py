"""`feyntune demo`: the whole study, small, offline, on a CPU.

Curate s1 and one mix from the shared arXiv sample, fine-tune a LoRA-all and a LoRA-QKV adapter
of the embedded default model (SmolLM2-135M) with the paper preset cut to a step budget, evaluate
the base model and both adapters with `hepth_completion` on the s1 test split, regenerate
`results/` and say whether each adapter beats the base on perplexity.

Each step is the same `feyntune` command a user would type, printed before it runs; a step whose
output is already on disk is skipped, so a re-run resumes where the last one stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import RESULTS_DIR, RUNS_DIR

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SNAPSHOT = REPO.parent / "shared" / "data" / "arxiv" / "arxiv-sample.jsonl"


@dataclass
class DemoConfig:
    """Sizes chosen so the demo runs in well under 15 minutes on 2 CPU cores."""

    snapshot: Path = field(default_factory=lambda: Path(
        os.environ.get("FEYNTUNE_DEMO_SNAPSHOT", DEFAULT_SNAPSHOT)))
    work: Path = REPO / "demo"                # curated data and adapters (not committed)
    runs: Path = REPO / RUNS_DIR              # lm-eval outputs (the committed leaderboard)
    results: Path = REPO / RESULTS_DIR
    sets: tuple[str, ...] = ("s1", "s3")
    train_set: str = "s1"
    max_steps: int = 20
    batch_size: int = 4
    # The paper preset, cut to fit: validation before the first and after the last step only,
    # on the first `validation_docs` abstracts of the validation split (a full pass of NF4 on
    # a CPU takes minutes), and no activation checkpointing (a 135M model needs no memory
    # saving; it costs ~30% time).
    train_overrides: dict = field(default_factory=lambda: {
        "evaluations": 2, "gradient_checkpointing": False})
    validation_docs: int = 16
    eval_docs: int = 24
    max_new_tokens: int = 48
    semscore_model: str = "minilm"            # the fast offline embedder; mpnet is the default elsewhere

    def adapters(self) -> dict[str, Path]:
        return {v: self.work / "adapters" / f"smollm2-{self.train_set}-lora-{v}" for v in ("all", "qkv")}


def _feyntune(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _run(step: str, cmd: list[str]) -> None:
    shown = " ".join(shlex.quote(c) for c in ["feyntune", *cmd[3:]])
    print(f"\n== {step}\n$ {shown}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise FeynTuneError(f"demo step '{step}' failed (exit {proc.returncode}); fix it and re-run: "
                            "finished steps are kept")
    print(f"   done in {time.monotonic() - t0:.0f} s", flush=True)


def _done(step: str, marker: Path) -> bool:
    if marker.exists():
        shown = marker.relative_to(REPO) if marker.is_relative_to(REPO) else marker
        print(f"\n== {step}: already done ({shown}), skipped", flush=True)
        return True
    return False


def _has_run(runs: Path, label: str) -> bool:
    from harness.runs.lmeval_outputs import RESULTS_PREFIX

    return any((runs / label).rglob(f"{RESULTS_PREFIX}*.json"))


def run_demo(cfg: DemoConfig) -> int:
    from harness import assets

    if not cfg.snapshot.is_file():
        raise FeynTuneError(f"snapshot {cfg.snapshot} not found (set FEYNTUNE_DEMO_SNAPSHOT)")
    base = str(assets.path("smollm2"))
    semscore = str(assets.path(cfg.semscore_model))
    data = cfg.work / "data"

    if not _done("curate", data / "manifest.json"):
        _run("curate s1 and a mix from the arXiv sample",
             _feyntune("data", "build", "--snapshot", str(cfg.snapshot), "--out", str(data),
                       "--sets", ",".join(cfg.sets)))

    overrides = cfg.work / "demo-train.yaml"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text(yaml.safe_dump({**cfg.train_overrides, "eval_documents": cfg.validation_docs},
                                        sort_keys=True))
    for variant, out in cfg.adapters().items():
        if not _done(f"train LoRA-{variant}", out / "run.json"):
            # an interrupted earlier demo left checkpoints: continue from them
            resume = ["--resume"] if any(out.glob("checkpoints/checkpoint-*")) else []
            _run(f"fine-tune LoRA-{variant} on {cfg.train_set}: the paper preset (NF4 base) cut to "
                 f"{cfg.max_steps} steps of batch {cfg.batch_size}, validation on "
                 f"{cfg.validation_docs} abstracts before and after",
                 _feyntune("train", "--base", base, "--data", str(data / cfg.train_set),
                           "--lora", variant, "--out", str(out), "--max-steps", str(cfg.max_steps),
                           "--batch-size", str(cfg.batch_size), "--config", str(overrides),
                           *resume))

    print(f"\n   evaluation: the first {cfg.eval_docs} abstracts of the s1 test split, at most "
          f"{cfg.max_new_tokens} new tokens per completion, SemScore with {cfg.semscore_model}")
    models = {"smollm2-base": f"pretrained={base}"}
    for variant, out in cfg.adapters().items():
        models[out.name] = f"pretrained={base},peft={out}"
    metadata = json.dumps({"hepth_data": str(data / "s1"), "semscore_model": semscore})
    for label, model_args in models.items():
        if _has_run(cfg.runs, label):
            print(f"\n== evaluate {label}: already done, skipped", flush=True)
            continue
        _run(f"evaluate {label}",
             _feyntune("eval", "--model", "hf", "--model_args", model_args,
                       "--tasks", "hepth_completion", "--limit", str(cfg.eval_docs),
                       "--gen_kwargs", f"max_gen_toks={cfg.max_new_tokens}",
                       "--metadata", metadata, "--seed", "42", "--batch_size", "8",
                       "--log_samples", "--output_path", str(cfg.runs / label)))

    _run("regenerate the leaderboard",
         _feyntune("leaderboard", "--runs", str(cfg.runs), "--out", str(cfg.results)))
    print((cfg.results / "leaderboard.md").read_text())
    print(verdict(cfg.runs))
    return 0


def verdict(runs_dir: Path) -> str:
    """Does each adapter beat its base model on perplexity, document by document?

    The base and the adapters score the same abstracts, so the fair comparison is paired: the
    bootstrap (harness.ground.stats) of the per-abstract differences, not two overlapping intervals.
    """
    from harness.leaderboard.compare import change_against_base, change_verdict
    from harness.review.uncertainty import ci_text
    from harness.runs import lmeval_outputs
    from harness.runs.labels import run_labels

    scanned = lmeval_outputs.scan(runs_dir).runs
    labels = run_labels(scanned)
    question = ("Does fine-tuning beat the base model on hep-th perplexity (ppl_token, arithmetic "
                "mean; paired bootstrap of the per-abstract change)?")
    lines = [question]
    for run in sorted(scanned, key=lambda r: labels[r.run_id]):
        try:
            found = change_against_base(run, scanned)
        except FeynTuneError as err:
            lines.append(f"  {labels[run.run_id]}: {err}")
            continue
        if found is None:
            continue
        _, paired = found
        diff = paired.change
        beats = change_verdict(diff.ci_low, diff.ci_high) == "lower"
        lines.append(
            f"  {labels[run.run_id]}: {'YES' if beats else 'NOT SHOWN'} -- PPL "
            f"{paired.mean:.2f} vs base {paired.reference_mean:.2f} on {paired.n} abstracts, "
            f"change {diff.mean:+.2f} {ci_text(diff.ci_low, diff.ci_high, sign=True)}")
    if len(lines) == 1:
        lines.append("  no adapter with its base model among the runs")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole study, small and offline, on a CPU",
                       description=__doc__)
    p.add_argument("--max-steps", type=int, default=DemoConfig.max_steps)
    p.add_argument("--eval-docs", type=int, default=DemoConfig.eval_docs)
    p.add_argument("--max-new-tokens", type=int, default=DemoConfig.max_new_tokens)
    p.add_argument("--validation-docs", type=int, default=DemoConfig.validation_docs,
                   help="validation abstracts scored before and after training (default "
                        f"{DemoConfig.validation_docs})")
    p.set_defaults(func=lambda a: run_demo(DemoConfig(max_steps=a.max_steps, eval_docs=a.eval_docs,
                                                      max_new_tokens=a.max_new_tokens,
                                                      validation_docs=a.validation_docs)))
