"""The learned MimIC shift: per layer (and head) a vector and its query-dependent magnitude.

For head ``h`` of layer ``l`` and a query vector ``q``::

    delta = sigmoid(w[l,h].q + b[l,h] - log Z2) * v[l,h]

which approximates the demonstrations' contribution ``mu * (SA(q,K_D,V_D) - SA(q,K,V))``:
softmax attention over ``[K_D; K]`` splits exactly into ``(1 - mu) SA(q,K,V) + mu SA(q,K_D,V_D)``
with ``mu = sigmoid(log Z1 - log Z2)``, and ``w.q + b`` estimates ``log Z1``. ``log Z2`` is
computed by the attention hook under the model's own mask; this module only turns
``(q, log Z2)`` into the shift.
"""

from __future__ import annotations

import torch
from torch import nn

from mimic.shift.config import MimicConfig


class MimicShift(nn.Module):
    """Parameters of one MimIC attachment, stacked over the patched layers.

    ``v``: [L, H, d] shift vectors (per layer they are one [H*d] vector);
    ``w``: [L, H, d] weights of the linear ``log Z1`` estimate (query-dependent only);
    ``b``: [L, H] (per head) or [L, 1] (per layer) biases; with ``query_dependent=False``
    ``sigmoid(b)`` is the learned constant magnitude.
    """

    def __init__(self, config: MimicConfig, num_layers: int, num_heads: int, head_dim: int):
        super().__init__()
        self.config = config
        groups = num_heads if config.per_head else 1
        self.v = nn.Parameter(torch.randn(num_layers, num_heads, head_dim) * config.v_init_std)
        linear = config.magnitude_init == "linear"  # nn.Linear's default: U(-1/sqrt(n), 1/sqrt(n)), n inputs
        bound = (head_dim * (1 if config.per_head else num_heads)) ** -0.5
        if config.query_dependent:
            w_shape = (num_layers, num_heads, head_dim)
            w = (torch.rand(w_shape) * 2 - 1) * bound if linear else torch.randn(w_shape) * config.w_init_std
            self.w = nn.Parameter(w)
        else:
            self.register_parameter("w", None)
        self.b = nn.Parameter((torch.rand(num_layers, groups) * 2 - 1) * bound if linear
                              else torch.zeros(num_layers, groups))

    needs_scores = False  # the hook hands it (query, log Z2) only, never the [b, H, q, k] scores

    def _views(self, row: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Layer ``row``'s parameters as the hook uses them: v [H, d], w [H, 1, d] (or None), b [H or 1, 1]."""
        w = self.w[row].unsqueeze(1) if self.w is not None else None
        return self.v[row], w, self.b[row].unsqueeze(-1)

    def _layer(self, row: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """:meth:`_views`; without autograd (generation) made once per layer and reused.

        The cached views share the parameters' storage, so in-place updates show through;
        they are remade when a parameter gets new storage (``.to()``, ``.double()``).
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # autograd / a compiled graph: plain views
            return self._views(row)
        key = tuple(p.data_ptr() for p in (self.v, self.w, self.b) if p is not None)
        cache = self.__dict__.get("_cached_views")
        if cache is None or cache[0] != key:
            cache = self.__dict__["_cached_views"] = (key, {})
        views = cache[1].get(row)
        if views is None:
            views = cache[1][row] = self._views(row)
        return views

    def magnitude(self, row: int, query: torch.Tensor, log_z2: torch.Tensor) -> torch.Tensor:
        """``mu_hat`` of shape [batch, H or 1, q_len] for layer ``row``; query: [batch, H, q_len, d].

        The parameters are used where they are (``attach`` puts them on the model's device).
        """
        _, w, b = self._layer(row)
        if w is None:  # constant magnitude
            return torch.sigmoid(b).unsqueeze(0)
        if query.dtype != w.dtype:
            query = query.to(torch.promote_types(query.dtype, w.dtype))  # at least float32 under a bf16 model
        log_z1 = torch.linalg.vecdot(query, w)  # [b, H, q]: w[h] . q for every head at once
        if self.config.per_head:
            return torch.sigmoid(log_z1 + (b - log_z2))
        return torch.sigmoid(log_z1.sum(dim=1, keepdim=True) + (b - log_z2.mean(dim=1, keepdim=True)))

    def forward(self, row: int, query: torch.Tensor, log_z2: torch.Tensor, call=None) -> torch.Tensor:
        """The shift of every head at every query position, broadcastable to [batch, H, q_len, d] (float32)."""
        return self.magnitude(row, query, log_z2).unsqueeze(-1) * self._layer(row)[0].unsqueeze(1)

    def add_to(self, row: int, out: torch.Tensor, query: torch.Tensor, log_z2: torch.Tensor) -> torch.Tensor:
        """``out`` [batch, q_len, H, d] (the heads' outputs, before ``o_proj``) plus the shift, in one kernel.

        The sum is computed in the shift's precision and rounded to ``out``'s dtype once; without
        autograd (generation) it is written into ``out`` in place.
        """
        mu = self.magnitude(row, query, log_z2).transpose(1, 2).unsqueeze(-1)  # [b, q, H or 1, 1]
        v = self._layer(row)[0]
        if torch.is_grad_enabled() and (out.requires_grad or mu.requires_grad or v.requires_grad):
            return torch.addcmul(out, mu, v).to(out.dtype)
        return out.addcmul_(mu, v)


def count_shift_parameters(config: MimicConfig) -> dict[str, int]:
    """Parameters of the :class:`MimicShift` a completed config describes, without building it:
    ``{"v": ..., "magnitude": ... (w and b), "total": ...}``."""
    layers = len(config.layers) if config.layers is not None else config.num_layers
    heads, d = config.num_heads, config.head_dim
    v = layers * heads * d
    w = layers * heads * d if config.query_dependent else 0
    b = layers * (heads if config.per_head else 1)
    return {"v": v, "magnitude": w + b, "total": v + w + b}
