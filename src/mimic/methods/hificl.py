"""HiFICL (Li et al., CVPR 2026, arXiv 2603.12760): learned low-rank virtual key/value tokens per head.

Where MimIC approximates the demonstrations' term of the exact split of softmax attention,

    SA(q, [K_D; K], [V_D; V]) = (1 - mu) SA(q, K, V) + mu SA(q, K_D, V_D),   mu = sigmoid(log Z1 - log Z2),

HiFICL learns the demonstrations themselves: ``n`` virtual keys and values per head,
``K_D = A_K B_K`` and ``V_D = A_V B_V`` (rank ``r``). ``log Z1`` is the log-sum-exp of the query's
scaled scores against the virtual keys, ``log Z2`` that of its own keys under the attention's
real mask (causal, padding, sliding window, cached keys), both from the attention hook. With
``mix: exact`` (the reference code's final form) the head output is the attention over
``[virtual; real]`` keys exactly; ``mix: additive`` keeps ``SA(q, K, V)`` whole and adds
``mu SA(q, K_D, V_D)`` (the reference code's other variant), so that ``B_V = 0`` at
initialisation leaves the model's outputs unchanged. Trained with CE on the answers only.

Initialisation as the reference code: ``A ~ N(0, 1)``, ``B_K ~ N(0, 0.01)``, ``B_V = 0``.
Parameters: ``L*H*2*r*(n + d)`` (2,228,224 for 32 layers x 32 heads, d 128, n 8, r 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mimic.methods.base import Installed, Method, register
from mimic.models.adapters import ModelShapes, complete_for
from mimic.shift import install as shift_install

MIXES = ("exact", "additive")


@dataclass
class HificlConfig(ModelShapes):
    """n_virtual: virtual tokens per head; rank: of both factorisations; mix: exact | additive."""

    layers: list[int] | None = None
    n_virtual: int = 8
    rank: int = 8
    mix: str = "exact"
    a_init_std: float = 1.0
    bk_init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"HificlConfig.mix={self.mix!r} is not valid; use one of {MIXES}")


class HificlShift(nn.Module):
    """Low-rank factors of the virtual keys and values, [L, H, n, r] and [L, H, r, d]; a shift of the hook."""

    needs_output = True  # the hook hands it the head outputs and the scale of the scores (AttentionCall)

    def __init__(self, config: HificlConfig):
        super().__init__()
        self.config = config
        L, H, n, r, d = len(config.layers), config.num_heads, config.n_virtual, config.rank, config.head_dim
        self.key_a = nn.Parameter(torch.randn(L, H, n, r) * config.a_init_std)
        self.key_b = nn.Parameter(torch.randn(L, H, r, d) * config.bk_init_std)
        self.value_a = nn.Parameter(torch.randn(L, H, n, r) * config.a_init_std)
        self.value_b = nn.Parameter(torch.zeros(L, H, r, d))

    def virtual(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The virtual keys and values of layer ``row``, [H, n, d] each."""
        return self.key_a[row] @ self.key_b[row], self.value_a[row] @ self.value_b[row]

    def forward(self, row: int, query: torch.Tensor, log_z2: torch.Tensor, call) -> torch.Tensor:
        """What to add to the head outputs ``call.output`` [b, H, q, d] of layer ``row``."""
        keys, values = self.virtual(row)
        dtype = torch.promote_types(query.dtype, keys.dtype)  # at least float32
        scores = (query.to(dtype) * call.scaling) @ keys.to(query.device, dtype).transpose(-1, -2)  # [b, H, q, n]
        log_z1 = torch.logsumexp(scores, dim=-1)
        mu = torch.sigmoid(log_z1 - log_z2.to(dtype))[..., None]
        virtual = torch.softmax(scores, dim=-1) @ values.to(query.device, dtype)  # SA(q, K_D, V_D)
        if self.config.mix == "additive":
            return mu * virtual
        return mu * (virtual - call.output.to(dtype))  # (1 - mu) SA(q, K, V) + mu SA(q, K_D, V_D) in all


class Hificl(Method):
    type = "hificl"
    config_class = HificlConfig

    def complete(self, config: HificlConfig, model) -> HificlConfig:
        shift_install.check_supported(model)  # HiFICL rests on the same split of softmax attention as MimIC
        return complete_for(config, model)

    def install(self, model, config: HificlConfig, module, verify: bool):
        shift = module if module is not None else HificlShift(config).to(next(model.parameters()).device)
        shift_install.install(model, shift, config.layers, "attn", verify)
        return shift, Installed(undo=[lambda: shift_install.uninstall(model)],
                                switches=[lambda: shift_install.switched_off(model)])

    def counts(self, config: HificlConfig) -> dict[str, int]:
        n = len(config.layers) if config.layers is not None else config.num_layers
        per_head = 2 * config.rank * (config.n_virtual + config.head_dim)
        return {"trainable": n * config.num_heads * per_head, "fitted": 0}


register(Hificl())
