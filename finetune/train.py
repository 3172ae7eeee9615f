"""`feyntune train`: a QLoRA adapter on a curated set of abstracts, with the reference recipe.

    feyntune train --base MODEL --data data/s1 --lora all --out adapters/s1-all

The `paper` preset (docs/reference.md, "Training") is the default; `--preset fast` learns
with the same recipe in about half the time on a GPU with memory to spare; `--config run.yaml` and single flags
override it, and the resolved configuration is written to the run folder (`config.yaml`,
`run.json`). The same arguments work under a launcher for data-parallel runs:

    accelerate launch --num_processes 8 -m finetune.train --base ... --data ... --out ...

and `--num-processes P` starts such a launch itself (torch.distributed.run; gloo on CPUs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.ground.errors import FeynTuneError, first_line

CHECKPOINTS = "checkpoints"
# Changing these between an interrupted run and its resumption does not change the result
# (the checkpoint carries the data order), so they may differ.
RESUMABLE_CHANGES = {"checkpoints_kept", "dataloader_num_workers", "report_to"}


class TrainingInterrupted(FeynTuneError):
    """Stopped on request; a checkpoint was saved and `--resume` continues."""


# ---------------------------------------------------------------- configuration from arguments

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="base model: a hub name or a folder (e.g. meta-llama/Llama-3.1-8B)")
    p.add_argument("--data", help="a curated set folder holding train.jsonl and validation.jsonl")
    p.add_argument("--lora", choices=["qkv", "all"], help="LoRA-QKV (q,k,v) or LoRA-all (every projection)")
    p.add_argument("--out", required=True, help="run folder: adapter, run.json, curves, checkpoints")
    p.add_argument("--preset", default=None,
                   help="recipe preset: paper (default, the reference study) or fast (the same "
                        "recipe, length-grouped batches, checkpointing only when memory needs it)")
    p.add_argument("--config", type=Path, help="YAML overriding any preset keys (or a previous run's config.yaml)")
    p.add_argument("--quantize", choices=["nf4", "none"], help="base weights in 4-bit NF4 (QLoRA) or unquantised")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides epochs)")
    p.add_argument("--epochs", type=float, help="training epochs (paper: 4)")
    p.add_argument("--batch-size", type=int, help="per-device batch size (paper: 16)")
    p.add_argument("--num-processes", type=int, help="data-parallel processes (GPUs, or CPU processes)")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=None,
                   help="batch abstracts of similar length (less padding; off in the paper preset)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="force activation checkpointing on or off (paper: on; fast: decided by "
                        "device memory)")
    p.add_argument("--seed", type=int, help="random seed (paper: 42)")
    p.add_argument("--evaluations", type=int,
                   help="validation passes over the run, the first before the first step (paper: 10)")
    p.add_argument("--eval-documents", type=int, metavar="N",
                   help="validate on the first N abstracts of the validation split (paper: all); "
                        "for smoke runs and tests, where full passes would take most of the time")
    p.add_argument("--report-to", choices=["none", "tensorboard", "wandb", "mlflow", "trackio"],
                   help="also log the run to a tracker, through the Trainer's own integration "
                        "(default: none; curves.csv and curves.png are written either way)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out (after Ctrl-C or a crash)")


def overrides_from_args(args) -> dict:
    flags = {
        "base": args.base, "data": args.data, "out": args.out,
        "epochs": args.epochs, "max_steps": args.max_steps, "per_device_batch_size": args.batch_size,
        "num_processes": args.num_processes, "seed": args.seed,
        "evaluations": args.evaluations, "eval_documents": args.eval_documents,
        "report_to": getattr(args, "report_to", None),
        "gradient_checkpointing": args.gradient_checkpointing,
        "lora": {"variant": args.lora} if args.lora else None,
        "quant": {"method": args.quantize} if args.quantize else None,
        "data_settings": ({"group_by_length": args.group_by_length}
                          if args.group_by_length is not None else None),
    }
    return {k: v for k, v in flags.items() if v is not None}


def resolve_from_args(args):
    from finetune import config as C

    out = Path(args.out)
    config_file = args.config
    stored = out / "config.yaml"
    if args.resume and config_file is None and stored.is_file():
        config_file = stored  # resuming needs no flags but --out
    preset = args.preset
    if preset is None:
        preset = C.load_yaml(config_file).get("preset", "paper") if config_file else "paper"
    cfg = C.resolve(preset, config_file, overrides_from_args(args))
    cfg.out = str(out)
    missing = [flag for flag, value in (("--base", cfg.base), ("--data", cfg.data)) if not value]
    if missing:
        raise FeynTuneError(f"missing {' and '.join(missing)} (or a --config that sets them)")
    if not args.lora and not (config_file and "variant" in C.load_yaml(config_file).get("lora", {})):
        raise FeynTuneError("missing --lora {qkv,all} (or a --config that sets lora.variant)")
    return cfg


# ---------------------------------------------------------------- checks before any work

@dataclass
class Prepared:
    files: dict
    train_texts: list
    validation_texts: list  # the abstracts each validation pass scores (eval_documents applied)
    resume_from: str | None
    validation_split_size: int  # abstracts in validation.jsonl


def _base_config(base: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as err:
        first = first_line(err)
        raise FeynTuneError(f"cannot load base model {base!r}: {first}") from None


def check_target_modules(base: str, targets: list[str]) -> list[str]:
    """Every LoRA target names a module of the architecture (checked on the meta device: no
    weights are read); returns the architecture's linear-layer names for the message."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _base_config(base)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as err:
        raise FeynTuneError(f"{base!r} is not a causal language model: {err}") from None
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear)})
    absent = [t for t in targets if t not in linear]
    if absent:
        raise FeynTuneError(
            f"LoRA target module(s) {', '.join(absent)} do not exist in {base!r} "
            f"({config.model_type}); its linear layers are: {', '.join(linear)}")
    return linear


def latest_checkpoint(out: Path) -> Path | None:
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in (out / CHECKPOINTS).glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def preflight(cfg, resume: bool) -> Prepared:
    from finetune import collate
    from finetune import config as C

    files = collate.split_files(Path(cfg.data))
    field = cfg.data_settings.text_field
    train_texts = collate.read_texts(files["train"], field)
    validation_texts = collate.read_texts(files["validation"], field)
    split_size = len(validation_texts)
    validation_texts = first_validation_documents(validation_texts, cfg.eval_documents, files["validation"])
    check_target_modules(cfg.base, cfg.target_modules)
    out = Path(cfg.out)
    checkpoint = latest_checkpoint(out)
    if resume:
        if checkpoint is None:
            raise FeynTuneError(f"--resume: no checkpoint in {out / CHECKPOINTS} to continue from")
        stored = out / "config.yaml"
        if stored.is_file():
            before = C.resolve(C.load_yaml(stored).get("preset", "paper"), stored).to_dict()
            now = cfg.to_dict()
            changed = [k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k]]
            if changed:
                raise FeynTuneError(
                    f"--resume: the configuration differs from the interrupted run's in "
                    f"{', '.join(changed)}; resume with the same settings or start another --out")
    elif checkpoint is not None:
        raise FeynTuneError(
            f"{out} already holds checkpoints of a run; continue it with --resume, "
            "or choose another --out")
    return Prepared(files, train_texts, validation_texts, str(checkpoint) if resume else None,
                    split_size)


def first_validation_documents(texts: list, wanted: int | None, source: Path) -> list:
    """The abstracts a validation pass scores: all (`wanted` None) or the first `wanted`.
    Asking for more than the split holds is refused rather than quietly validating on fewer."""
    if wanted is None:
        return texts
    if wanted > len(texts):
        raise FeynTuneError(f"eval_documents {wanted}: {source} holds only {len(texts)} abstracts")
    return texts[:wanted]


# ---------------------------------------------------------------- the run

def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _hardware(cfg):
    """(use_cpu, bf16, compute dtype, attention implementation) for this machine."""
    import importlib.util

    import torch

    on_gpu = torch.cuda.is_available()
    bf16_ok = on_gpu and torch.cuda.is_bf16_supported()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_ok)
    compute = cfg.quant.compute_dtype
    if compute == "auto":
        compute = "bfloat16" if bf16 else "float32"
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    return (not on_gpu), bf16, getattr(torch, compute), attn


def keep_cpu_weights_trainable(model) -> int:
    """Stop bitsandbytes (0.50) from repacking NF4 weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, a `Linear4bit` called in eval mode without gradients repacks its
    weight in place for `gemv_4bit`, which has no backward; the layout stays until the next
    state_dict save, so the training steps after an evaluation (e.g. the one at step 0) get
    no gradient at all (grad_norm 0, LoRA weights unchanged). Returns the layers changed.
    """
    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_model(cfg, compute_dtype, attn: str, use_cpu: bool, checkpointing: bool | None = None):
    """The (quantised) base with fresh LoRA matrices; `checkpointing` None follows the
    configuration (off while "auto" is still to be decided)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if checkpointing is None:
        checkpointing = cfg.gradient_checkpointing is True
    quantization = None
    if cfg.quant.method == "nf4":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=cfg.quant.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=getattr(torch, cfg.quant.quant_storage))
    if use_cpu:
        device_map = {"": "cpu"}
    else:
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    # FSDP/DeepSpeed place the weights themselves
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or \
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        device_map = None
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base, quantization_config=quantization, dtype=compute_dtype,
        device_map=device_map, attn_implementation=attn)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    if quantization is not None and use_cpu:
        keep_cpu_weights_trainable(model)
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if checkpointing:
        set_checkpointing(model, True)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      bias=cfg.lora.bias, target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing on or off, before or after LoRA is added. With frozen inputs
    the recomputed layers would get no gradient, hence the input hook."""
    from finetune import compat

    if on:
        compat.enable_checkpointing(model, {"use_reentrant": False})
        model.enable_input_require_grads()
    else:
        compat.disable_checkpointing(model)


def write_config(cfg, out: Path) -> None:
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def tokenize_splits(tokenizer, prepared: Prepared, ds):
    from finetune import collate

    return tuple(collate.tokenize_dataset(tokenizer, texts, ds.add_bos, ds.add_eos,
                                          desc=f"tokenising {name}")
                 for name, texts in (("train", prepared.train_texts),
                                     ("validation", prepared.validation_texts)))


def decide_checkpointing(cfg, model, train_ds, collator):
    """Resolve `gradient_checkpointing` (measured when "auto") and apply it to the model."""
    from finetune import memory

    decision = memory.choose(cfg.gradient_checkpointing, model, train_ds,
                             cfg.per_device_batch_size, collator)
    if cfg.gradient_checkpointing == "auto" and decision.on:
        set_checkpointing(model, True)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"feyntune train: activation checkpointing {'on' if decision.on else 'off'} "
              f"({decision.reason})", file=sys.stderr)
    return decision


def train_until_done_or_stopped(trainer, stop, resume_from: str | None) -> float:
    """`trainer.train` with Ctrl-C turned into a clean stop by `stop` (the trainer's
    GracefulStop callback); returns the seconds it took."""
    started = time.time()
    stop.install()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        stop.uninstall()
    return time.time() - started


def run_training(cfg, resume: bool = False, extra_callbacks=()) -> Path:
    """Train one adapter; returns the run folder. Raises TrainingInterrupted after a clean stop."""
    from transformers import AutoTokenizer, PrinterCallback, Trainer, set_seed

    from finetune import collate, compat, train_outputs
    from finetune import config as C
    from finetune.train_callbacks import EvaluationSchedule, GracefulStop, TokenProgress

    # 1. check everything that can be wrong, then record the configuration
    prepared = preflight(cfg, resume)
    out = Path(cfg.out)
    ws = world_size()
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        write_config(cfg, out)

    # 2. data: pad = EOS as in the reference
    use_cpu, bf16, compute_dtype, attn = _hardware(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    tokenizer.pad_token = tokenizer.eos_token
    train_ds, val_ds = tokenize_splits(tokenizer, prepared, cfg.data_settings)
    collator = collate.PaddingCollator(tokenizer.eos_token_id, cfg.data_settings.pad_to_multiple_of)
    n_total = C.total_steps(len(train_ds), cfg, ws)
    eval_steps = C.evaluation_steps(n_total, cfg.evaluations)

    # 3. model: the LoRA matrices are initialised before the Trainer seeds
    set_seed(cfg.seed)
    model = load_model(cfg, compute_dtype, attn, use_cpu)
    checkpointing = decide_checkpointing(cfg, model, train_ds, collator)

    # 4. trainer, with the arguments named as the installed transformers names them
    TrainingArguments = compat.training_arguments_class()
    targs = compat.for_installed(C.trainer_arguments(
        cfg, str(out / CHECKPOINTS), bf16=bf16, use_cpu=use_cpu, world_size=ws,
        evaluate_first=not resume, checkpointing=checkpointing.on), TrainingArguments)
    stop = GracefulStop()
    trainer = Trainer(
        model=model, args=TrainingArguments(**targs), train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=collator, processing_class=tokenizer,
        callbacks=[EvaluationSchedule(eval_steps, n_total), *extra_callbacks, stop,
                   TokenProgress(len(val_ds))])
    trainer.remove_callback(PrinterCallback)

    # 5. train; curves are written even when stopped early
    elapsed = train_until_done_or_stopped(trainer, stop, prepared.resume_from)
    rows = train_outputs.curve_rows(trainer.state.log_history)
    per_epoch = C.steps_per_epoch(len(train_ds), cfg, ws)
    if main_process:
        title = f"{Path(cfg.base).name} LoRA-{cfg.lora.variant} on {Path(cfg.data).name}"
        train_outputs.write_curves(out, rows, per_epoch, title)
    if stop.stopped_at is not None and stop.stopped_at < n_total:
        raise TrainingInterrupted(
            f"stopped at step {stop.stopped_at} of {n_total}; checkpoint saved in "
            f"{out / CHECKPOINTS}; continue with: feyntune train --out {out} --resume")

    # 6. the adapter, its tokenizer and run.json
    trainer.save_model(str(out))  # the PEFT adapter (adapter_config.json + weights)
    if main_process:
        tokenizer.save_pretrained(out)
        train_outputs.write_run_json(out / "run.json", train_outputs.run_record(
            cfg, prepared.files, train_ds, val_ds, trainer, targs, rows,
            steps={"total_steps": n_total, "steps_per_epoch": per_epoch,
                   "evaluation_steps": eval_steps},
            validation_split_size=prepared.validation_split_size,
            world_size=ws, use_cpu=use_cpu, compute_dtype=compute_dtype, attn=attn,
            resumed=resume, elapsed=elapsed, checkpointing=checkpointing.record()))
    return out


# ---------------------------------------------------------------- launching

def launch_data_parallel(cfg, resume: bool) -> int:
    """Re-run this module under torch.distributed.run with `num_processes` workers."""
    import yaml

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    launch_cfg = out / "config.yaml" if not resume else out / ".launch-config.yaml"
    launch_cfg.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={cfg.num_processes}", "-m", "finetune.train",
           "--config", str(launch_cfg), "--out", str(out)]
    if resume:
        cmd.append("--resume")
    print(f"feyntune train: launching {cfg.num_processes} processes: {' '.join(cmd)}", file=sys.stderr)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.num_processes)))
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:  # the workers got the signal too and save their checkpoint
        return 130


def cmd_train(args) -> int:
    from finetune import config as C

    cfg = resolve_from_args(args)
    C.check_tracker(cfg.report_to)
    if cfg.num_processes > 1 and "WORLD_SIZE" not in os.environ:
        preflight(cfg, args.resume)  # fail fast, before starting workers
        rc = launch_data_parallel(cfg, args.resume)
        if rc == 130:
            raise TrainingInterrupted(
                f"interrupted; continue with: feyntune train --out {cfg.out} --resume")
        if rc != 0:
            raise FeynTuneError(f"data-parallel training failed (exit status {rc}); see the messages above")
        return 0
    out = run_training(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"adapter, run.json and curves written to {out}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a QLoRA adapter on a curated set (reference recipe)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_train)


def main(argv=None) -> int:
    """Entry point for launchers: `accelerate launch -m finetune.train ...`."""
    parser = argparse.ArgumentParser(prog="finetune.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_train(args)
    except TrainingInterrupted as err:
        print(f"finetune.train: {err}", file=sys.stderr)
        return 130
    except FeynTuneError as err:
        print(f"finetune.train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
