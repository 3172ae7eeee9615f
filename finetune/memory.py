"""Activation checkpointing decided by memory (`gradient_checkpointing: auto`, the fast preset).

Checkpointing recomputes each decoder layer in the backward pass: it saves memory and costs
about a third more compute, and it changes nothing that is learned. Whether a run needs it is
measured, not guessed: one forward and backward pass over the worst batch the run can meet
(the longest abstracts, a whole batch of them) without checkpointing, on the device, before
training starts. It stays off when that peak plus the optimizer state and a margin fits in the
device's memory. The probe takes no optimizer step, its gradients are discarded and the random
number generators are put back, so the run is the one it would have been without it.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3
# Share of the device's memory a run may plan to use; the rest absorbs allocator
# fragmentation and the evaluation passes.
USABLE_SHARE = 0.90
# AdamW keeps two moments per trainable parameter, plus the parameter and its gradient (fp32).
OPTIMIZER_BYTES_PER_TRAINABLE = 16


@dataclass
class Decision:
    on: bool
    setting: bool | str
    reason: str
    probe_peak_bytes: int | None = None
    device_total_bytes: int | None = None

    def record(self) -> dict:
        out = {"on": self.on, "setting": self.setting, "reason": self.reason}
        if self.probe_peak_bytes is not None:
            out["probe_peak_gib"] = round(self.probe_peak_bytes / GIB, 2)
        if self.device_total_bytes is not None:
            out["device_total_gib"] = round(self.device_total_bytes / GIB, 2)
        return out


def fits(peak_bytes: int, trainable_params: int, total_bytes: int,
         share: float = USABLE_SHARE) -> bool:
    """The measured peak plus the optimizer state stays within `share` of the device."""
    return peak_bytes + OPTIMIZER_BYTES_PER_TRAINABLE * trainable_params <= share * total_bytes


def decide(setting: bool | str, *, on_gpu: bool, peak_bytes: int | None = None,
           total_bytes: int | None = None, trainable_params: int = 0,
           out_of_memory: bool = False) -> Decision:
    """The rule alone, from the probe's figures (kept apart from the probe so it is testable
    without a GPU)."""
    if setting is True or setting is False:
        return Decision(bool(setting), setting, f"set to {str(setting).lower()} by the configuration")
    if not on_gpu:
        return Decision(False, setting, "auto on a CPU: activations live in host memory, no device "
                                        "limit to respect (force with --gradient-checkpointing)")
    if out_of_memory:
        return Decision(True, setting, "auto: the longest batch ran out of device memory "
                                       "without checkpointing", None, total_bytes)
    budget = f"{USABLE_SHARE:.0%} of {total_bytes / GIB:.1f} GiB"
    need = (peak_bytes + OPTIMIZER_BYTES_PER_TRAINABLE * trainable_params) / GIB
    if fits(peak_bytes, trainable_params, total_bytes):
        return Decision(False, setting, f"auto: the longest batch needs {need:.1f} GiB without "
                                        f"checkpointing, within {budget}", peak_bytes, total_bytes)
    return Decision(True, setting, f"auto: the longest batch needs {need:.1f} GiB without "
                                   f"checkpointing, more than {budget}", peak_bytes, total_bytes)


def worst_batch(dataset, batch_size: int, collator) -> dict:
    """The `batch_size` longest examples, collated: no sampler can build a larger batch."""
    lengths = dataset["length"]
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:batch_size]
    return collator([dataset[i] for i in longest])


def probe_peak(model, batch: dict) -> tuple[int | None, bool]:
    """(peak bytes allocated during one forward + backward on `batch`, ran out of memory)."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all()
    was_training = model.training
    model.train()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)), False
    except torch.cuda.OutOfMemoryError:
        return None, True
    finally:
        loss = None
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        torch.set_rng_state(cpu_rng)
        torch.cuda.set_rng_state_all(cuda_rng)
        torch.cuda.empty_cache()


def choose(setting: bool | str, model, dataset, batch_size: int, collator) -> Decision:
    """Measure when the setting is "auto" on a GPU; otherwise the rule decides alone."""
    import torch

    on_gpu = torch.cuda.is_available()
    if setting != "auto" or not on_gpu:
        return decide(setting, on_gpu=on_gpu)
    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    if device.type != "cuda":
        # FSDP / DeepSpeed place the weights after this point: nothing to measure yet
        return Decision(True, setting, "auto with the weights not yet on a GPU (FSDP/DeepSpeed): "
                                       "on, to be safe; set it, or the launcher's activation "
                                       "checkpointing, explicitly")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak, oom = probe_peak(model, worst_batch(dataset, batch_size, collator))
    total = torch.cuda.get_device_properties(device).total_memory
    return decide(setting, on_gpu=True, peak_bytes=peak, total_bytes=total,
                  trainable_params=trainable, out_of_memory=oom)
