"""LoRA (Hu et al., 2022) through ``peft``: low-rank updates of the decoder's attention projections.

Each targeted projection ``W`` of a decoder self-attention layer (q, k, v, o by default; the
vision tower and connectors are left alone) computes ``W x + (alpha / r) B A dropout(x)`` with
``A`` [r, in] (peft's Kaiming init) and ``B`` [out, r] = 0 at initialisation, so an untrained
adapter leaves the outputs unchanged. Injected by ``peft.LoraModel`` into the model in place and
unloaded by it on detach (the original ``nn.Linear`` modules come back). Trained with CE on the
answers of the same training queries as every other method.

Parameters: ``r * (in + out)`` per projection and layer: ``L * r * (4*hidden + 2*H*d + 2*KV*d)``
for q, k, v, o (13,631,488 on Idefics2-8b's Mistral decoder at r = 16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from mimic.methods.base import Installed, Method, register
from mimic.models.adapters import ModelShapes, complete_for

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER = "mimic"  # peft's adapter name


@dataclass
class LoraConfig(ModelShapes):
    """r, alpha, dropout as peft's; targets: attention projections of the decoder layers ``layers`` (None: all)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(PROJECTIONS))
    layers: list[int] | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in PROJECTIONS]
        if bad or not self.targets:
            raise ValueError(f"LoraConfig.targets {bad or self.targets} is not valid; use some of {list(PROJECTIONS)}")


class LoraWeights(nn.Module):
    """The adapter weights peft created, under stable names ``<layer>_<projection>.{A,B}``, and their dropout."""

    def __init__(self, config: LoraConfig, layers: dict[str, nn.Module]):
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleDict(
            {name: nn.ModuleDict({"A": layer.lora_A[ADAPTER], "B": layer.lora_B[ADAPTER],
                                  "dropout": layer.lora_dropout[ADAPTER]}) for name, layer in layers.items()}
        )


def projection_sizes(config) -> dict[str, tuple[int, int]]:
    """(in, out) features of each attention projection."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    h = config.hidden_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}


class Lora(Method):
    type = "lora"
    config_class = LoraConfig

    def complete(self, config: LoraConfig, model) -> LoraConfig:
        return complete_for(config, model)

    def install(self, model, config: LoraConfig, module, verify: bool):
        if module is not None:
            raise ValueError("LoRA builds its weights inside the model; load a checkpoint with mimic.load instead")
        return install_lora(model, config)

    def counts(self, config: LoraConfig) -> dict[str, int]:
        n = len(config.layers) if config.layers is not None else config.num_layers
        sizes = projection_sizes(config)
        return {"trainable": n * config.r * sum(sum(sizes[t]) for t in config.targets), "fitted": 0}


def install_lora(model, config: LoraConfig) -> tuple[LoraWeights, Installed]:
    from peft import LoraConfig as PeftLoraConfig
    from peft import LoraModel

    from mimic.models.adapters import adapter_for

    adapter = adapter_for(model)
    layers = "|".join(str(i) for i in config.layers)
    targets = "|".join(re.escape(t) for t in config.targets)
    pattern = rf"{re.escape(adapter.layers_path)}\.({layers})\.{re.escape(adapter.attn_name)}\.({targets})"
    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=pattern, bias="none")
    had_peft_config = hasattr(model, "peft_config")
    tuner = LoraModel(model, peft_config, adapter_name=ADAPTER)
    injected = {}
    for name, sub in model.named_modules():
        match = re.fullmatch(pattern, name)
        if match and hasattr(sub, "lora_A"):
            injected[f"{match.group(1)}_{match.group(2)}"] = sub
    expected = len(config.layers) * len(config.targets)
    if len(injected) != expected:
        tuner.unload()
        raise RuntimeError(f"LoRA found {len(injected)} of the {expected} projections {config.targets} in "
                           f"{adapter.layers_path}.<layer>.{adapter.attn_name}; this family names them differently")
    weights = LoraWeights(config, injected)

    def undo() -> None:
        tuner.unload()
        if had_peft_config is False and hasattr(model, "peft_config"):
            del model.peft_config

    def switch():
        return _adapters_off(list(injected.values()))

    return weights, Installed(undo=[undo], switches=[switch])


class _adapters_off:
    """Context manager: peft's adapter layers bypassed (the base projections alone), then on again."""

    def __init__(self, layers):
        self.layers = layers

    def __enter__(self):
        for layer in self.layers:
            layer.enable_adapters(False)

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.enable_adapters(True)


register(Lora())
