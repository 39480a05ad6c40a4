"""What Task Vector and Function Vector share: one vector at one layer's output, the last prompt token,
and the choice of that layer on held-out training queries.

The vector enters at the output of decoder layer ``layer`` (its residual stream), at the last
prompt token only: during generation that is the last position of the prompt's forward pass
(the prefill); the tokens generated afterwards are left alone and see the patched state through
the attention cache. ``mode`` says whether the vector replaces the state (Task Vector) or is
added to it (Function Vector). To score a teacher-forced answer, ``positions`` names the last
prompt token of each row instead.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from mimic.data.icd import train_demos
from mimic.methods.base import Installed, Switch, output_hook

MODES = ("replace", "add")


class LayerVector(nn.Module):
    """``vector`` [hidden] (a fitted buffer) at the output of one decoder layer, at the last prompt token."""

    def __init__(self, config, hidden_size: int):
        super().__init__()
        self.config = config
        self.register_buffer("vector", torch.zeros(hidden_size))
        self.positions: torch.Tensor | None = None  # per-row index of the last prompt token (teacher forcing)

    def forward(self, hidden: torch.Tensor, mode: str) -> torch.Tensor:
        b, n = hidden.shape[:2]
        if self.positions is None:
            if n == 1:  # a decoding step after the prompt: nothing to patch
                return hidden
            positions = torch.full((b,), n - 1, device=hidden.device)
        else:
            positions = self.positions.to(hidden.device)
        rows = torch.arange(b, device=hidden.device)
        vector = self.vector.to(hidden.device, hidden.dtype)
        out = hidden.clone()
        out[rows, positions] = vector if mode == "replace" else out[rows, positions] + vector
        return out


def install_layer_vector(model, module: LayerVector, layer: int, mode: str) -> Installed:
    from mimic.models.adapters import adapter_for

    installed, switch = Installed(), Switch()
    target = adapter_for(model).decoder_layers(model)[layer]
    output_hook(target, lambda hidden: module(hidden, mode), installed, switch)
    installed.switches.append(switch.off)
    return installed


def split_dev(qids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit, dev): a seeded ``fraction`` of the training queries held out to choose the layer (at least one)."""
    order = random.Random(seed).sample(sorted(qids), len(qids))
    n_dev = min(len(order) - 1, max(1, round(fraction * len(order))))
    return sorted(order[n_dev:]), sorted(order[:n_dev])


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def icl_inputs(loaded, data, qids: list[str], icd: dict, draw: int = 0, corrupt: random.Random | None = None,
               n_shots: int | None = None):
    """ICL prompts (the query's demonstrations of ``draw``, then the query without its answer).

    ``n_shots``: the first ``n_shots`` demonstrations of the draw (None: all of them).

    ``corrupt``: the demonstrations' answers shuffled among them (Function Vector's corrupted
    prompts), by a rotation so that no demonstration keeps its own answer.
    """
    from mimic.models.generation import encode_prompts

    queries = [data.query("train", q) for q in qids]
    demos = []
    for q in qids:
        shots = [data.demo(s) for s in train_demos(icd, q, draw, n_shots)]
        if corrupt is not None and len(shots) > 1:
            offset = corrupt.randrange(1, len(shots))
            answers = [a for _, _, a in shots]
            shots = [(img, question, answers[(i + offset) % len(shots)]) for i, (img, question, _) in enumerate(shots)]
        demos.append(shots)
    return encode_prompts(loaded, data.kind, queries, demos=demos, role="teacher")


@torch.no_grad()
def dev_answer_loss(loaded, data, qids: list[str], batch_size: int, module: LayerVector | None = None) -> float:
    """Mean cross-entropy of the teacher-forced answer tokens of ``qids`` (zero-shot prompts), with
    ``module`` patching the last prompt token of each row."""
    from mimic.data.batches import student_batch

    total, count = 0.0, 0
    try:
        for chunk in chunks(qids, batch_size):
            inputs, labels, answer_lengths = student_batch(loaded, data, "train", chunk)
            n = inputs["input_ids"].shape[1]
            if module is not None:
                module.positions = torch.tensor([n - a - 1 for a in answer_lengths])
            logits = loaded.model(**inputs).logits[:, :-1].float()
            target = labels[:, 1:]
            keep = target != -100
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    finally:
        if module is not None:
            module.positions = None
    return total / max(1, count)


def choose_layer(loaded, data, dev: list[str], batch_size: int, candidates: list[int], vectors: torch.Tensor,
                 config, mode: str) -> tuple[int, dict[int, float]]:
    """The candidate layer whose vector gives the lowest dev answer loss, and the loss of every candidate."""
    from mimic.methods.base import attach, detach

    losses = {}
    for layer in candidates:
        config.layer = layer
        module = LayerVector(config, vectors.shape[-1]).to(loaded.device)
        module.vector.copy_(vectors[layer])
        attach(loaded.model, config, shift=module)
        try:
            losses[layer] = dev_answer_loss(loaded, data, dev, batch_size, module)
        finally:
            detach(loaded.model)
    best = min(losses, key=lambda k: (losses[k], k))
    config.layer = best
    return best, losses
