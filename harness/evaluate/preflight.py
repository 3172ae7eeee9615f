"""Checks of the models a run will evaluate, made before any model is loaded or merged: each
problem is one line naming the model and what is wrong, instead of a traceback from lm-eval or
transformers minutes (or GPU hours) into the run.

Only small things are read: a base model's config.json (the architecture transformers must
recognise), an adapter's adapter_config.json and the shapes in its weights file's header (never
the weights); for a hub id they come from the hub or its cache. An adapter made for a base of
another size fails here, not with a size mismatch after other models were evaluated.
"""

from __future__ import annotations

from harness.ground.errors import FeynTuneError, first_line


def check_base(base: str):
    """The base model's configuration loads and names an architecture transformers knows; it is
    returned."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError, KeyError) as err:
        raise FeynTuneError(f"base model {base} cannot be loaded: {first_line(err)}") from None


def check_adapter(name: str, source: str) -> None:
    """The adapter's configuration loads as a PEFT adapter."""
    from peft import PeftConfig

    try:
        PeftConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FeynTuneError(f"adapter {name} ({source}) cannot be loaded: {first_line(err)}") \
            from None


def base_layers(config) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of every linear layer of the base model, by module name, from its
    configuration alone: the model is built on the meta device, so nothing is allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = {}
    for name, module in model.named_modules():
        if hasattr(module, "in_features") and hasattr(module, "out_features"):
            layers[name] = (module.in_features, module.out_features)
        elif hasattr(module, "nf") and getattr(module, "weight", None) is not None:
            layers[name] = (module.weight.shape[0], module.nf)  # GPT-2's Conv1D: (in, out)
    return layers


def adapter_shapes(source: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of an adapter's weights, read from the safetensors header."""
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / "adapter_model.safetensors"
        if not path.is_file():
            return {}  # a .bin adapter: no header to read without loading it
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(source, "adapter_model.safetensors")
        except Exception:  # noqa: BLE001 -- no safetensors on the hub: the merge will say more
            return {}
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 -- safe_open has no __iter__


def check_adapter_fits(name: str, source: str, base: str, layers: dict) -> None:
    """Each LoRA matrix of the adapter matches the base layer it adapts: lora_A takes the
    layer's inputs, lora_B gives its outputs."""
    for key, shape in adapter_shapes(source).items():
        for part, side in ((".lora_A.", 0), (".lora_B.", 1)):
            if part not in key or len(shape) != 2:
                continue
            module = key.split(part)[0].removeprefix("base_model.model.")
            if module not in layers:
                raise FeynTuneError(f"adapter {name} ({source}) adapts {module}, which base model "
                                    f"{base} does not have: an adapter of another base?")
            inputs, outputs = layers[module]
            want, have, what = ((inputs, shape[1], "inputs") if side == 0
                                else (outputs, shape[0], "outputs"))
            if want != have:
                raise FeynTuneError(f"adapter {name} ({source}) does not fit base model {base}: "
                                    f"its {module} has {have} {what}, the base's {want} (an "
                                    "adapter of a base of another size?)")


def check_models(base: str, adapters: dict[str, str]) -> None:
    """The base and every adapter (study name -> folder or hub id), in that order, and each
    adapter's shapes against the base's layers."""
    config = check_base(base)
    for name, source in adapters.items():
        check_adapter(name, source)
    if adapters:
        layers = base_layers(config)
        for name, source in adapters.items():
            check_adapter_fits(name, source, base, layers)
