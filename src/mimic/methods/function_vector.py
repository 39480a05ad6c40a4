"""Function Vector (Todd et al., 2024): the summed mean outputs of the heads with the largest causal effect.

Fit (no gradient), through the attention interface:

1. the mean output of every attention head (before ``o_proj``) at the last token of the ICL
   prompts of the fit queries: ``a[l, h]``;
2. the causal indirect effect of each head: on ICL prompts whose demonstrations' answers are
   shuffled among them (so the prompt no longer shows the task), the head's output at the last
   token is replaced by ``a[l, h]``; its effect is the mean rise in the probability of the
   query's first answer token;
3. the function vector is the sum over the ``top_heads`` heads of their mean outputs projected
   by their layer's ``o_proj`` (each head's share of the residual stream, without a bias);
4. it is added to the output of decoder layer ``L`` at the last prompt token; ``L`` is chosen
   on the held-out training queries by answer cross-entropy (Todd et al. sweep it too).

Fitted numbers: ``hidden`` (one vector; the heads are in the config); trained: 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
from torch import nn

from mimic.methods.base import Method, register
from mimic.methods.vectors import LayerVector, choose_layer, chunks, icl_inputs, install_layer_vector, split_dev
from mimic.models.adapters import ModelShapes, complete_for

FIT_DEFAULTS = {"batch_size": 16, "dev_fraction": 0.25, "seed": 0}


@dataclass
class FunctionVectorConfig(ModelShapes):
    """top_heads: heads summed; cie_prompts: corrupted prompts that rank the heads (None: every fit query);
    layer: where the vector is added (None: chosen by the fit among ``layers``, the candidates; None: all)."""

    top_heads: int = 10
    cie_prompts: int | None = 32
    layer: int | None = None
    layers: list[int] | None = None
    heads: list[list[int]] | None = None  # the chosen (layer, head) pairs, set by the fit


class _HeadMeans(nn.Module):
    """A shift that adds nothing and sums each head's output at the last position."""

    needs_output = True

    def __init__(self, layers: int, heads: int, head_dim: int):
        super().__init__()
        self.sums = torch.zeros(layers, heads, head_dim, dtype=torch.float64)

    def forward(self, row, query, log_z2, call):
        self.sums[row] += call.output[:, :, -1].double().sum(dim=0).cpu()
        return torch.zeros_like(query, dtype=torch.float32)


class _HeadPatch(nn.Module):
    """A shift that sets one head's output at the last position to a given value (None: adds nothing)."""

    needs_output = True

    def __init__(self, means: torch.Tensor):
        super().__init__()
        self.means = means  # [L, H, d]
        self.head: tuple[int, int] | None = None

    def forward(self, row, query, log_z2, call):
        delta = torch.zeros_like(call.output, dtype=torch.float32)
        if self.head is not None and self.head[0] == row:
            h = self.head[1]
            mean = self.means[row, h].to(delta.device)
            delta[:, h, -1] = mean - call.output[:, h, -1].float()
        return delta


def first_answer_tokens(loaded, data, qids: list[str]) -> torch.Tensor:
    """The first token of each query's teacher-forced answer, as it follows the prompt."""
    from mimic.data.batches import student_batch

    inputs, _, answer_lengths = student_batch(loaded, data, "train", qids)
    n = inputs["input_ids"].shape[1]
    return torch.stack([inputs["input_ids"][i, n - a] for i, a in enumerate(answer_lengths)])


class FunctionVector(Method):
    type = "function-vector"
    config_class = FunctionVectorConfig

    def complete(self, config: FunctionVectorConfig, model) -> FunctionVectorConfig:
        config = complete_for(config, model)
        if config.layer is not None and not 0 <= config.layer < config.num_layers:
            raise ValueError(f"FunctionVectorConfig.layer {config.layer} out of range: the model has "
                             f"{config.num_layers} decoder layers")
        return config

    def install(self, model, config: FunctionVectorConfig, module, verify: bool):
        if config.layer is None:
            raise ValueError("FunctionVectorConfig.layer is not set: fit the function vector first (mimic train)")
        module = module if module is not None else LayerVector(config, config.hidden_size)
        module.config = config
        module.to(next(model.parameters()).device)
        return module, install_layer_vector(model, module, config.layer, "add")

    def counts(self, config: FunctionVectorConfig) -> dict[str, int]:
        return {"trainable": 0, "fitted": config.hidden_size}

    def fit(self, loaded, data, icd: dict, config: FunctionVectorConfig, hp: dict):
        hp = {**FIT_DEFAULTS, **hp}
        config = self.complete(config, loaded.model)
        fit_ids, dev_ids = split_dev(sorted(icd["train"]), hp["dev_fraction"], hp["seed"])
        means = mean_head_outputs(loaded, data, icd, fit_ids, config, hp["batch_size"])
        cie_ids = fit_ids if config.cie_prompts is None else fit_ids[: config.cie_prompts]
        effects = causal_effects(loaded, data, icd, cie_ids, means, hp)
        k = min(config.top_heads, effects.numel())
        top = torch.topk(effects.flatten(), k).indices
        heads = [[int(i) // config.num_heads, int(i) % config.num_heads] for i in top]
        vector = head_vector(loaded.model, means, heads)
        vectors = vector.expand(config.num_layers, -1)
        candidates = [config.layer] if config.layer is not None else config.layers
        layer, losses = choose_layer(loaded, data, dev_ids, hp["batch_size"], candidates, vectors, config, "add")
        config = replace(config, layer=layer, heads=heads,
                         extra={**config.extra, "dev_answer_loss_by_layer": losses,
                                "head_effects": [round(float(effects[h][i]), 6) for h, i in heads]})
        module = LayerVector(config, config.hidden_size)
        module.vector.copy_(vector)
        summary = {"fit_queries": len(fit_ids), "cie_prompts": len(cie_ids), "dev_queries": len(dev_ids),
                   "layer": layer, "heads": heads,
                   "dev_answer_loss_by_layer": {str(k): round(v, 6) for k, v in losses.items()}}
        return module, summary


@torch.no_grad()
def mean_head_outputs(loaded, data, icd, qids, config, batch_size: int, draws: list[int] | None = None,
                      n_shots: int | None = None) -> torch.Tensor:
    """``a[l, h]``: each head's output at the last token, averaged over the ICL prompts of ``qids``, [L, H, d].

    ``draws``: the demonstration draw of each prompt (None: draw 0 for all; a query may come back with
    another draw); ``n_shots``: the first ``n_shots`` demonstrations of each draw (None: all).
    """
    from mimic.shift.install import installed

    draws = [0] * len(qids) if draws is None else draws
    capture = _HeadMeans(config.num_layers, config.num_heads, config.head_dim)
    with installed(loaded.model, capture, verify=False):
        for draw in sorted(set(draws)):
            ids = [q for q, d in zip(qids, draws, strict=True) if d == draw]
            for chunk in chunks(ids, batch_size):
                loaded.model(**icl_inputs(loaded, data, chunk, icd, draw=draw, n_shots=n_shots))
    return (capture.sums / len(qids)).float()


@torch.no_grad()
def causal_effects(loaded, data, icd, qids, means: torch.Tensor, hp: dict) -> torch.Tensor:
    """Mean rise of the first answer token's probability on corrupted ICL prompts when one head's
    output at the last token is set to its mean, [L, H]."""
    from mimic.shift.install import installed

    layers, heads = means.shape[:2]
    effects = torch.zeros(layers, heads, dtype=torch.float64)
    patch = _HeadPatch(means)
    rng = random.Random(hp["seed"])
    with installed(loaded.model, patch, verify=False):
        for chunk in chunks(qids, hp["batch_size"]):
            inputs = icl_inputs(loaded, data, chunk, icd, corrupt=rng)
            target = first_answer_tokens(loaded, data, chunk).to(loaded.device)

            patch.head = None
            base = _answer_probability(loaded, inputs, target)
            for layer in range(layers):
                for head in range(heads):
                    patch.head = (layer, head)
                    effects[layer, head] += (_answer_probability(loaded, inputs, target) - base).sum()
            patch.head = None
    return effects / len(qids)


def _answer_probability(loaded, inputs: dict, target: torch.Tensor) -> torch.Tensor:
    """Per row, the next-token probability of ``target`` after the prompt."""
    logits = loaded.model(**inputs, logits_to_keep=1).logits[:, -1].float()
    return torch.softmax(logits, dim=-1).gather(1, target[:, None])[:, 0].double().cpu()


@torch.no_grad()
def head_vector(model, means: torch.Tensor, heads: list[list[int]]) -> torch.Tensor:
    """Sum over ``heads`` of each head's mean output through its layer's ``o_proj`` (its slice of the weight)."""
    from mimic.models.adapters import adapter_for

    adapter = adapter_for(model)
    d = means.shape[-1]
    total = None
    for layer, head in heads:
        weight = adapter.attention(model, layer).o_proj.weight  # [hidden, H*d]
        part = weight[:, head * d : (head + 1) * d].float() @ means[layer, head].to(weight.device)
        total = part if total is None else total + part
    return total.cpu()


register(FunctionVector())
