"""MimIC's entry into every model: a function on transformers' attention interface.

``attach`` points the text config of a model at ``mimic_sdpa`` or ``mimic_eager``. Those
names run the model's own base implementation (sdpa, or the model file's eager function)
unchanged, then, on the decoder self-attention modules that carry a MimIC target, add the
shift to the head outputs before ``o_proj`` (or hand it to the MLP hook). ``log Z2`` is
the exact log-sum-exp of the head's scaled scores under the same mask the attention used:
padding, causal (also when sdpa skipped materialising it), sliding window, cached keys
during decoding, with grouped key/value heads expanded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import eager_mask, sdpa_mask

PREFIX = "mimic_"
BASES = ("sdpa", "eager")


@dataclass
class AttentionCall:
    """What one attention call saw: masked, scaled scores [b,H,q,k] (float32) and values [b,KV,k,d];
    the base attention's own head outputs [b,H,q,d] (before ``o_proj``) and the scale of its scores, for
    shifts that mix the head output with attention to keys of their own (HiFICL)."""

    scores: torch.Tensor
    value: torch.Tensor
    output: torch.Tensor | None = None
    scaling: float | None = None


@dataclass
class ShiftTarget:
    """Attached to a decoder self-attention module: which shift row it uses and where it goes."""

    shift: torch.nn.Module  # called as shift(row, query, log_z2, call) -> [b, H, q, d]
    row: int
    insert: str
    enabled: bool = True
    pending: torch.Tensor | None = field(default=None, repr=False)  # for insert="mlp"


NEG = torch.finfo(torch.float32).min  # finite, so fully masked rows give finite log Z2 and no NaN gradients


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None, causal_if_none: bool) -> torch.Tensor:
    """``scores`` [b,H,q,k] with the attention's mask applied, as the base implementation applied it."""
    q_len, k_len = scores.shape[-2:]
    if mask is None:
        if not causal_if_none:
            return scores
        # sdpa's is_causal is aligned to the upper left (the only case transformers skips the mask in).
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril()
        return scores.masked_fill(~allowed, NEG)
    mask = mask[..., :k_len]
    if mask.dtype == torch.bool:
        return torch.where(mask, scores, NEG)
    return scores + mask.to(scores.dtype)


def masked_scores(query, key, mask, scaling: float, causal_if_none: bool, softcap: float | None = None):
    """Scaled scores of every query head against its (shared, for GQA) key head, with the mask applied."""
    b, heads, q_len, d = query.shape
    kv_heads = key.shape[1]
    dtype = torch.promote_types(query.dtype, torch.float32)  # float32 under a bf16/fp16 model
    q = (query.to(dtype) * scaling).reshape(b, kv_heads, heads // kv_heads, q_len, d)
    scores = torch.matmul(q, key.to(dtype)[:, :, None].transpose(-1, -2)).reshape(b, heads, q_len, -1)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return apply_mask(scores, mask, causal_if_none)


def _eager_for(module) -> callable:
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(f"{type(module).__name__}: its model file has no eager_attention_forward; use sdpa")
    return fn


def mimic_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *, base: str, **kwargs):
    base_fn = sdpa_attention_forward if base == "sdpa" else _eager_for(module)
    out, weights = base_fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    target: ShiftTarget | None = module.__dict__.get("_mimic_target")
    if target is None or not target.enabled:
        return out, weights
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    is_causal = kwargs.get("is_causal", getattr(module, "is_causal", True))
    causal_if_none = base == "sdpa" and is_causal and query.shape[2] > 1
    scores = masked_scores(query, key, attention_mask, scale, causal_if_none, kwargs.get("softcap"))
    log_z2 = torch.logsumexp(scores, dim=-1)
    delta = target.shift(target.row, query, log_z2, AttentionCall(scores, value, out.transpose(1, 2), scale))
    delta = delta.transpose(1, 2).to(out.dtype)  # [b, q, H, d], the layout of `out`
    if target.insert == "attn":
        return out + delta, weights
    target.pending = delta
    return out, weights


def add_pending_shift(module, args, output):
    """Forward hook on a decoder layer's MLP for ``insert="mlp"``: add the head shifts, flattened."""
    target: ShiftTarget = module.__dict__["_mimic_target"]
    delta, target.pending = target.pending, None
    if delta is None:
        return output
    return output + delta.reshape(*delta.shape[:2], -1)


def register() -> None:
    """Register ``mimic_sdpa`` and ``mimic_eager`` (and their mask builders) with transformers."""
    for base in BASES:
        name = PREFIX + base
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, partial(mimic_attention, base=base))
            AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)
