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

from dataclasses import dataclass

import torch
from torch import nn

from mimic.methods.base import Installed, Method, Switch, output_hook, register
from mimic.models.adapters import ModelShapes, complete_for


@dataclass
class LiveConfig(ModelShapes):
    """layers: decoder layers whose MLP output is shifted (None: all). Shapes are filled in by attach."""

    layers: list[int] | None = None
    v_init_std: float = 0.01
    scale_init: float = 0.1


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
        return complete_for(config, model)

    def install(self, model, config: LiveConfig, module, verify: bool):
        from mimic.models.adapters import adapter_for

        shift = module if module is not None else LiveShift(config).to(next(model.parameters()).device)
        adapter, installed, switch = adapter_for(model), Installed(), Switch()
        for row, layer in enumerate(config.layers):
            output_hook(adapter.mlp(model, layer), lambda h, row=row: shift(row, h), installed, switch)
        installed.switches.append(switch.off)
        return shift, installed

    def counts(self, config: LiveConfig) -> dict[str, int]:
        n = len(config.layers) if config.layers is not None else config.num_layers
        return {"trainable": n * config.hidden_size + n, "fitted": 0}


register(Live())
