"""Record per-layer hidden states at chosen positions, for the teacher and the student.

Hooks gather the selected positions as soon as each layer produces its output, so only
[batch, n_positions, hidden] per layer is kept, never the whole sequence of every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from mimic.models.adapters import adapter_for, sequence_output

RECORD_TARGETS = ("mlp", "layer", "attn")  # what the alignment loss can compare, per decoder layer


class HiddenStateRecorder:
    """Context manager recording ``target`` states of decoder ``layers`` at ``positions``.

    target: ``mlp`` (each layer's MLP output, what MimIC aligns by default), ``layer``
        (the decoder layer output) or ``attn`` (the self-attention output after ``o_proj``).
    positions: set with :meth:`select` before each forward: a LongTensor [batch, n] of
        sequence indices, or an int ``n`` for the last ``n`` positions (left padding).
    keep_graph: keep the autograd graph (the student); otherwise states are detached.
    """

    def __init__(self, model: nn.Module, target: str = "mlp", layers=None, keep_graph: bool = False):
        if target not in RECORD_TARGETS:
            raise ValueError(f"recording target {target!r} is not valid; use one of {RECORD_TARGETS}")
        self.adapter = adapter_for(model)
        self.model = model
        self.target = target
        n = len(self.adapter.decoder_layers(model))
        self.layers = list(range(n)) if layers is None else list(layers)
        self.keep_graph = keep_graph
        self.positions: torch.Tensor | int | None = None
        self.states: dict[int, torch.Tensor] = {}
        self._hooks = []

    def _module(self, layer: int) -> nn.Module:
        if self.target == "layer":
            return self.adapter.decoder_layers(self.model)[layer]
        if self.target == "mlp":
            return self.adapter.mlp(self.model, layer)
        return self.adapter.attention(self.model, layer)

    def select(self, positions: torch.Tensor | int) -> HiddenStateRecorder:
        self.positions = positions
        self.states = {}
        return self

    def _hook(self, layer: int):
        def hook(module, args, output):
            hidden, _ = sequence_output(output, args)
            if self.positions is None:
                raise RuntimeError("HiddenStateRecorder: call select(positions) before the forward pass")
            if isinstance(self.positions, int):
                picked = hidden[:, hidden.shape[1] - self.positions :]
            else:
                index = self.positions.to(hidden.device)[..., None].expand(-1, -1, hidden.shape[-1])
                picked = hidden.gather(1, index)
            self.states[layer] = picked if self.keep_graph else picked.detach()

        return hook

    def __enter__(self) -> HiddenStateRecorder:
        # Appended after MimIC's own MLP hook, so the student's recorded MLP output includes its shift.
        self._hooks = [self._module(i).register_forward_hook(self._hook(i)) for i in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def stacked(self) -> torch.Tensor:
        """[n_layers, batch, n_positions, hidden] in the order of ``layers``."""
        return torch.stack([self.states[i] for i in self.layers])
