"""Trainer callbacks of `feyntune train`: evaluation schedule, clean stop on Ctrl-C, progress bar."""

from __future__ import annotations

import math
import signal
import sys
import time

from transformers import TrainerCallback


class EvaluationSchedule(TrainerCallback):
    """Evaluate and checkpoint at the given optimizer steps (step 0 is the Trainer's
    `eval_on_start`); the last step is always checkpointed so a finished run can be resumed
    into a longer one."""

    def __init__(self, eval_steps: list[int], last_step: int):
        self.eval_steps = {s for s in eval_steps if s > 0}
        self.last_step = last_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.eval_steps:
            control.should_evaluate = True
            control.should_save = True
        if state.global_step == self.last_step:
            control.should_save = True
        return control


class GracefulStop(TrainerCallback):
    """First Ctrl-C (or SIGTERM): finish the current optimizer step, save a checkpoint, stop.

    Stopping between steps keeps the checkpoint exact (model, optimizer, scheduler and RNG all
    at the same step), so `--resume` reproduces the uninterrupted run. A second Ctrl-C aborts.
    In data-parallel runs every process stops at the same step (the flag is all-reduced).
    """

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nfeyntune train: stopping after this step and saving a checkpoint "
              "(Ctrl-C again to abort without one)", file=sys.stderr)

    def _any_rank_requested(self) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        import torch

        flag = torch.tensor([1 if self.requested else 0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested():
            self.requested = True
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


class TokenProgress(TrainerCallback):
    """A tqdm bar over optimizer steps showing loss, learning rate, tokens/s and time left.

    While a validation pass runs, the bar's label says so and counts the pass's abstracts and
    batches (`validating 12/56 docs, batch 3/14`): a full pass can take as long as many steps.
    """

    def __init__(self, validation_documents: int | None = None):
        self.bar = None
        self.postfix: dict[str, str] = {}
        self.validation_documents = validation_documents
        self._batches_done: int | None = None  # None: no validation pass running

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step",
                        desc="training", dynamic_ncols=True, file=sys.stderr)
        self._t0 = time.perf_counter()
        self._tokens0 = state.num_input_tokens_seen
        if args.eval_on_start:  # the pass before the first step starts right after this
            self._validation_started(args)

    def _validation_started(self, args, batches: int | None = None) -> None:
        self._batches_done = 0
        self._show_validation(args, batches)

    def _show_validation(self, args, batches: int | None) -> None:
        total = self.validation_documents
        per_batch = args.per_device_eval_batch_size * args.world_size
        label = "validating"
        if total is not None:
            label += f" {min(self._batches_done * per_batch, total)}/{total} docs"
        if batches is not None:
            label += f", batch {self._batches_done}/{batches}"
        self.bar.set_description_str(label)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.bar is None:
            return
        if self._batches_done is None:  # a pass no schedule announced (e.g. trainer.evaluate())
            self._batches_done = 0
        self._batches_done += 1
        batches = len(eval_dataloader) if eval_dataloader is not None else None
        self._show_validation(args, batches)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self._batches_done = None
        self.bar.set_description_str("training")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        elapsed = time.perf_counter() - self._t0
        tokens = state.num_input_tokens_seen - self._tokens0
        if elapsed > 0 and tokens > 0:
            self.postfix["tok/s"] = f"{tokens / elapsed:,.0f}"
        self.postfix["epoch"] = f"{state.epoch:.2f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)
        if control.should_evaluate:  # set by EvaluationSchedule, which runs before this callback
            self._validation_started(args)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.3f}"
        if "learning_rate" in logs:
            self.postfix["lr"] = f"{logs['learning_rate']:.2e}"
        if "eval_loss" in logs:
            self.postfix["val_ppl"] = f"{math.exp(min(logs['eval_loss'], 50)):.2f}"
            self.bar.write(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}, "
                           f"perplexity {math.exp(min(logs['eval_loss'], 50)):.3f}")
        self.bar.set_postfix(self.postfix)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
