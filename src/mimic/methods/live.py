"""LIVE (Peng et al., 2024): a learnable in-context vector and scale per layer on the MLP output.

For decoder layer ``l`` with MLP output ``m`` (every position, prompt and generated tokens)::

    m' = (m + a[l] * v[l]) / ||m + a[l] * v[l]|| * ||m||

so the shift turns the MLP output without changing its norm, as the reference code
(ForJadeForest/LIVE-Learnable-In-Context-Vector) does. ``v ~ N(0, 0.01)``, ``a = 0.1`` at
initialisation. Trained with ``kl_weight * KL(teacher || student)`` on the answer positions (the
teacher's distribution comes from the cache, top-k) plus ``ce_weight * CE(answer)``.

Parameters: ``L*hidden + L`` (131,104 on a 32-layer, 4096-wide text stack).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from mimic.methods.base import ConfigMixin, Installed, Method, Switch, output_hook, register


@dataclass
class LiveConfig(ConfigMixin):
    """layers: decoder layers whose MLP output is shifted (None: all). Shapes are filled in by attach."""

    layers: list[int] | None = None
    v_init_std: float = 0.01
    scale_init: float = 0.1
    base_model: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    extra: dict = field(default_factory=dict)


class LiveShift(nn.Module):
    """``v``: [L, hidden] vectors; ``scale``: [L] their learned scales."""

    def __init__(self, config: LiveConfig):
        super().__init__()
        self.config = config
        n = len(config.layers)
        self.v = nn.Parameter(torch.randn(n, config.hidden_size) * config.v_init_std)
        self.scale = nn.Parameter(torch.full((n,), float(config.scale_init)))

    def forward(self, row: int, hidden: torch.Tensor) -> torch.Tensor:
        """The MLP output ``hidden`` [..., hidden] of layer ``row``, turned towards ``v`` at its own norm."""
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        h = hidden.to(dtype)
        shifted = h + self.scale[row].to(dtype) * self.v[row].to(h.device, dtype)
        norm = shifted.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        return (shifted / norm * h.norm(dim=-1, keepdim=True)).to(hidden.dtype)


class Live(Method):
    type = "live"
    config_class = LiveConfig

    def complete(self, config: LiveConfig, model) -> LiveConfig:
        shapes = layer_shapes(model, config.layers, "LiveConfig")
        return replace(config, layers=shapes["layers"], base_model=config.base_model or shapes["base_model"],
                       model_type=model.config.model_type, num_layers=shapes["num_layers"],
                       hidden_size=shapes["hidden_size"])

    def install(self, model, config: LiveConfig, module, verify: bool):
        from mimic.adapters import adapter_for

        shift = module if module is not None else LiveShift(config).to(next(model.parameters()).device)
        adapter, installed, switch = adapter_for(model), Installed(), Switch()
        for row, layer in enumerate(config.layers):
            output_hook(adapter.mlp(model, layer), lambda h, row=row: shift(row, h), installed, switch)
        installed.switches.append(switch.off)
        return shift, installed

    def counts(self, config: LiveConfig) -> dict[str, int]:
        n = len(config.layers) if config.layers is not None else config.num_layers
        return {"trainable": n * config.hidden_size + n, "fitted": 0}


def layer_shapes(model, layers, name: str) -> dict:
    """The text stack's shapes, and ``layers`` checked and completed (None: all decoder layers)."""
    from mimic.adapters import adapter_for

    shapes = adapter_for(model).shapes(model)
    layers = sorted({int(i) for i in layers}) if layers is not None else list(range(shapes["num_layers"]))
    bad = [i for i in layers if not 0 <= i < shapes["num_layers"]]
    if bad:
        raise ValueError(f"{name}.layers {bad} out of range: the model has {shapes['num_layers']} decoder layers")
    base = getattr(model.config, "_name_or_path", None) or None
    return {**shapes, "layers": layers, "base_model": base}


register(Live())
