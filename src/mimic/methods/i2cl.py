"""I2CL (Li et al., 2024, "Implicit In-context Learning"): demonstrations condensed into context vectors.

Context vectors (fitted before training, :meth:`I2cl.prepare`): each demonstration runs through
the frozen model *alone* (image, question, answer); the outputs of every layer's attention
(after ``o_proj``) and MLP at its last token are its context vectors, fused over the
demonstrations by their mean: ``c[l, m]``, ``m`` in (attn, mlp). The demonstrations are the ``k``
of the first training query's first draw (the ICL teacher's ``k`` shots).

Injection (every layer, every position, prompt and generated tokens)::

    out[l, m] <- beta[l, m] * out[l, m] + lambda[l, m] * c[l, m]

with ``(lambda, beta) = (0.1, 1.0)`` at initialisation, as the reference code
(LzVv123456/I2CL, ``inject_method: linear``). The coefficients are trained with CE on the
answers of the training queries; while training, noise of ``noise_scale`` times each output's
norm is added (the reference's calibration noise).

Parameters: trained ``4 L`` (two coefficients for each of the two modules per layer); fitted
``2 L hidden`` (the context vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mimic.methods.base import Installed, Method, Switch, disabled, output_hook, register
from mimic.models.adapters import ModelShapes, complete_for

MODULES = ("attn", "mlp")


@dataclass
class I2clConfig(ModelShapes):
    """n_demos: demonstrations condensed (None: the teacher's k); lambda_init / beta_init: the coefficients."""

    layers: list[int] | None = None
    n_demos: int | None = None
    lambda_init: float = 0.1
    beta_init: float = 1.0
    noise_scale: float = 0.001


class I2clShift(nn.Module):
    """``context``: [L, 2, hidden] fused context vectors (fitted buffer); ``coef``: [L, 2, 2] (lambda, beta)."""

    def __init__(self, config: I2clConfig):
        super().__init__()
        self.config = config
        n = len(config.layers)
        self.register_buffer("context", torch.zeros(n, len(MODULES), config.hidden_size))
        coef = torch.tensor([config.lambda_init, config.beta_init]).expand(n, len(MODULES), 2)
        self.coef = nn.Parameter(coef.clone())

    def forward(self, row: int, which: int, out: torch.Tensor) -> torch.Tensor:
        lam, beta = self.coef[row, which]
        dtype = torch.promote_types(out.dtype, torch.float32)
        mixed = beta * out.to(dtype) + lam * self.context[row, which].to(out.device, dtype)
        if self.training and self.config.noise_scale:
            scale = mixed.detach().norm(dim=-1, keepdim=True) * self.config.noise_scale
            mixed = mixed + torch.randn_like(mixed) * scale
        return mixed.to(out.dtype)


class I2cl(Method):
    type = "i2cl"
    config_class = I2clConfig

    def complete(self, config: I2clConfig, model) -> I2clConfig:
        return complete_for(config, model)

    def install(self, model, config: I2clConfig, module, verify: bool):
        from mimic.models.adapters import adapter_for

        shift = module if module is not None else I2clShift(config).to(next(model.parameters()).device)
        adapter, installed, switch = adapter_for(model), Installed(), Switch()
        for row, layer in enumerate(config.layers):
            output_hook(adapter.attention(model, layer), lambda out, row=row: shift(row, 0, out), installed, switch)
            output_hook(adapter.mlp(model, layer), lambda out, row=row: shift(row, 1, out), installed, switch)
        installed.switches.append(switch.off)
        return shift, installed

    def counts(self, config: I2clConfig) -> dict[str, int]:
        n = len(config.layers) if config.layers is not None else config.num_layers
        return {"trainable": n * len(MODULES) * 2, "fitted": n * len(MODULES) * config.hidden_size}

    def prepare(self, loaded, data, icd: dict, module: I2clShift) -> None:
        module.context.copy_(context_vectors(loaded, data, demonstrations(icd, module.config.n_demos),
                                             module.config.layers))


def demonstrations(icd: dict, n: int | None) -> list[str]:
    """The first ``n`` (default: k) distinct demonstrations in the draws of the training queries, in order."""
    n = n or icd["shots"]
    seen: list[str] = []
    for q in sorted(icd["train"]):
        for sid in icd["train"][q][0]:
            if sid not in seen:
                seen.append(sid)
            if len(seen) == n:
                return seen
    return seen


@torch.no_grad()
def context_vectors(loaded, data, demo_ids: list[str], layers: list[int]) -> torch.Tensor:
    """[L, 2, hidden]: the mean over the demonstrations (each alone) of the attention and MLP outputs at their
    last token."""
    from mimic.models.generation import encode_prompts
    from mimic.models.hidden_states import HiddenStateRecorder

    total = None
    with disabled(loaded.model), HiddenStateRecorder(loaded.model, "attn", layers) as attn, \
            HiddenStateRecorder(loaded.model, "mlp", layers) as mlp:
        for sid in demo_ids:
            image, question, answer = data.demo(sid)
            inputs = encode_prompts(loaded, data.kind, [(image, question)], answers=[answer], role="teacher")
            attn.select(1)
            mlp.select(1)
            loaded.model(**inputs)
            states = torch.stack([attn.stacked()[:, 0, 0], mlp.stacked()[:, 0, 0]], dim=1).double()  # [L, 2, D]
            total = states if total is None else total + states
    return (total / len(demo_ids)).float()


register(I2cl())
