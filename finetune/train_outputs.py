"""What a training run leaves besides the adapter: run.json, curves.csv, curves.png."""

from __future__ import annotations

import csv
import json
import math
import platform
from importlib import metadata
from pathlib import Path

from harness.ground.digest import sha256_file

PACKAGES = ("feyntune", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes",
            "flash-attn")
CURVE_COLUMNS = ("step", "epoch", "learning_rate", "train_loss", "val_loss", "val_perplexity")


def data_provenance(data_dir: Path, files: dict[str, Path]) -> dict:
    """Hashes of the split files and of the curation manifest (`<data>/../manifest.json`, or
    `<data>/manifest.json`) when there is one."""
    data_dir = Path(data_dir)
    out = {"folder": str(data_dir.resolve()),
           "files": {split: {"path": str(p), "sha256": sha256_file(p)} for split, p in files.items()},
           "manifest": None}
    for candidate in (data_dir.parent / "manifest.json", data_dir / "manifest.json"):
        if candidate.is_file():
            out["manifest"] = {"path": str(candidate.resolve()), "sha256": sha256_file(candidate)}
            break
    return out


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_record(cfg, files: dict, train_ds, val_ds, trainer, targs: dict, rows: list[dict], *,
               steps: dict, world_size: int, use_cpu: bool, compute_dtype, attn: str,
               resumed: bool, elapsed: float, checkpointing: dict,
               validation_split_size: int) -> dict:
    """Everything needed to tell what a run did and to repeat it: data hashes, versions, the
    resolved recipe, the Trainer's own arguments and the decisions made at run time. `steps`:
    total_steps, steps_per_epoch and evaluation_steps as the run computed them."""
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    return {
        "base_model": cfg.base,
        "preset": cfg.preset,
        "lora_variant": cfg.lora.variant,
        "target_modules": cfg.target_modules,
        "data": data_provenance(Path(cfg.data), files),
        "examples": {"train": len(train_ds), "validation": len(val_ds)},
        "train_tokens_per_epoch": int(sum(train_ds["length"])),
        "packages": package_versions(),
        "world_size": world_size,
        "device": "cpu" if use_cpu else "cuda",
        "quantization": cfg.quant.method,
        "compute_dtype": str(compute_dtype).replace("torch.", ""),
        "attn_implementation": attn,
        "gradient_checkpointing": checkpointing,
        "total_steps": steps["total_steps"],
        "steps_per_epoch": steps["steps_per_epoch"],
        "warmup_steps_resolved": trainer.args.get_warmup_steps(steps["total_steps"]),
        "evaluation_steps": steps["evaluation_steps"],
        "validation": validation_record(trainer.state.log_history, len(val_ds),
                                        validation_split_size),
        "resumed": resumed,
        "training_args": targs,
        "config": cfg.to_dict(),
        "final": {
            "global_step": trainer.state.global_step,
            "val_loss_first": val[0] if val else None,
            "val_loss_last": val[-1] if val else None,
            "wall_seconds_this_session": round(elapsed, 1),
            "input_tokens_seen": trainer.state.num_input_tokens_seen,
        },
    }


def validation_record(log_history: list[dict], documents: int, split_size: int) -> dict:
    """What the validation passes did: abstracts scored per pass (and the split's size), and the
    passes actually made, read from the Trainer's log (a resumed run's log holds the earlier
    session's passes too)."""
    steps = [e["step"] for e in log_history if "eval_loss" in e]
    return {"documents_per_pass": documents, "split_documents": split_size,
            "passes": len(steps), "pass_steps": steps}


def write_run_json(path: Path, record: dict) -> None:
    Path(path).write_text(json.dumps(_jsonable(record), indent=2) + "\n")


def curve_rows(log_history: list[dict]) -> list[dict]:
    """One row per logged step: the Trainer logs train loss and eval loss as separate entries."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None or not ("loss" in entry or "eval_loss" in entry):
            continue
        row = rows.setdefault(step, {c: None for c in CURVE_COLUMNS} | {"step": step})
        if entry.get("epoch") is not None:
            row["epoch"] = entry["epoch"]
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
            row["learning_rate"] = entry.get("learning_rate")
        if "eval_loss" in entry:
            row["val_loss"] = entry["eval_loss"]
            row["val_perplexity"] = math.exp(entry["eval_loss"])
    return [rows[s] for s in sorted(rows)]


def write_curves(out: Path, rows: list[dict], steps_per_epoch: int, title: str) -> None:
    write_curves_csv(Path(out) / "curves.csv", rows)
    plot_curves(Path(out) / "curves.png", rows, steps_per_epoch, title)


def write_curves_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def plot_curves(path: Path, rows: list[dict], steps_per_epoch: int, title: str) -> None:
    """Loss against steps with each epoch boundary marked: the reference saw LoRA-all's
    training loss drop like a step function at every new epoch (memorisation of abstracts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    train = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    if train:
        ax.plot(*zip(*train), lw=1, color="tab:blue", label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", label="validation loss")
    last = max((r["step"] for r in rows), default=0)
    for k in range(1, last // max(steps_per_epoch, 1) + 1):
        step = k * steps_per_epoch
        ax.axvline(step, color="grey", ls="--", lw=0.8,
                   label="epoch boundary" if k == 1 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean token cross-entropy, nats)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
