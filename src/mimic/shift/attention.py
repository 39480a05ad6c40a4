"""MimIC's entry into every model: a function on transformers' attention interface.

``attach`` points the text config of a model at ``mimic_sdpa`` or ``mimic_eager``. Those
names run the model's own base implementation (sdpa, or the model file's eager function)
unchanged, then, on the decoder self-attention modules that carry a MimIC target, add the
shift to the head outputs before ``o_proj`` (or hand it to the MLP hook). ``log Z2`` is
the exact log-sum-exp of the head's scaled scores under the same mask the attention used:
padding, causal (also when sdpa skipped materialising it), sliding window, cached keys
during decoding, with grouped key/value heads expanded (see :mod:`mimic.shift.log_z2`).

Where it comes from:

- sdpa: transformers' sdpa forward, step for step, with its ``F.scaled_dot_product_attention``
  call served by the very kernel sdpa would pick, whose log-sum-exp is kept (no second pass
  over the scores; :func:`_sdpa_and_log_z2`);
- eager (and sdpa under ``torch.compile`` or with a position bias): recomputed in query
  blocks from the hook's arguments (:func:`mimic.shift.log_z2.chunked_log_z2`);
- a shift with an ``edit(row, out)`` method (MTV) gets the base attention's head outputs
  [b, q, H, d] and returns them rewritten (no log Z2 is computed);
- a shift that sets ``needs_scores = True`` (the exactness oracle's capture) gets the full
  masked scores and the values in an :class:`AttentionCall`; every other shift gets ``None``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import pack_gqa, repeat_kv, sdpa_attention_forward, use_gqa_in_sdpa
from transformers.masking_utils import eager_mask, sdpa_mask

from mimic.models.adapters import sequence_output
from mimic.shift.log_z2 import NEG, chunked_log_z2, masked_scores, sdpa_with_log_z2

__all__ = ["NEG", "AttentionCall", "ShiftTarget", "mimic_attention", "register"]

PREFIX = "mimic_"
BASES = ("sdpa", "eager")


@dataclass
class AttentionCall:
    """What one attention call saw, for shifts that ask (the others get ``None``).

    ``needs_scores = True`` (the exactness oracle's capture): the masked, scaled scores [b,H,q,k]
    (float32) and the values [b,KV,k,d]; it costs a second [b,H,q,k] tensor. ``needs_output = True``
    (HiFICL, Function Vector's head capture and patch): the base attention's own head outputs
    [b,H,q,d] (before ``o_proj``) and the scale of its scores.
    """

    scores: torch.Tensor | None = None
    value: torch.Tensor | None = None
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


def _eager_for(module) -> callable:
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(f"{type(module).__name__}: its model file has no eager_attention_forward; use sdpa")
    return fn


def _sdpa_and_log_z2(module, query, key, value, attention_mask, scaling, dropout, is_causal=None, **kwargs):
    """transformers' ``sdpa_attention_forward``, step for step, plus log Z2 [b,H,q] of its sdpa call.

    The same grouped-key handling (``enable_gqa``, ``pack_gqa`` while decoding, ``repeat_kv``),
    the same ``is_causal`` decision and key cropping, then :func:`sdpa_with_log_z2`: the very
    kernel sdpa picks, on the very arguments it would get. ``attach``'s dry run (v = 0 leaves
    the logits unchanged) and the tests (its output bit-equal to transformers' sdpa forward in
    every call of a generation) hold it to that.
    """
    b, heads, q_len, _ = query.shape
    groups = getattr(module, "num_key_value_groups", 1)
    enable_gqa = False
    if groups > 1:
        if use_gqa_in_sdpa(attention_mask, key, value):
            enable_gqa = True
        elif q_len == 1:
            query, attention_mask = pack_gqa(query, groups), pack_gqa(attention_mask, groups)
        else:
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = q_len > 1 and attention_mask is None and is_causal
    if is_causal and key.shape[2] > q_len:  # an empty static cache: sdpa's flash kernel needs q = k
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    out, log_z2 = sdpa_with_log_z2(query, key, value, attention_mask, dropout, is_causal, scaling, enable_gqa)
    out = out.reshape(out.shape[0], -1, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None, log_z2.reshape(b, heads, q_len)  # undoes pack_gqa


def _replicable(query, kwargs) -> bool:
    """Whether :func:`_sdpa_and_log_z2` reproduces transformers' sdpa forward for this call."""
    special = kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
    return not (special or query.device.type == "npu" or torch.jit.is_tracing() or torch.compiler.is_compiling())


def mimic_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *, base: str, **kwargs):
    target: ShiftTarget | None = module.__dict__.get("_mimic_target")
    base_fn = sdpa_attention_forward if base == "sdpa" else _eager_for(module)
    if target is None or not target.enabled:
        return base_fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    shift = target.shift
    if target.insert == "attn" and hasattr(shift, "edit"):  # it rewrites the head outputs itself (MTV): no log Z2
        out, weights = base_fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        return shift.edit(target.row, out), weights
    needs_scores = getattr(shift, "needs_scores", False)
    call = None
    if base == "sdpa" and not needs_scores and _replicable(query, kwargs):
        out, weights, log_z2 = _sdpa_and_log_z2(module, query, key, value, attention_mask, scaling, dropout,
                                                **kwargs)
    else:
        out, weights = base_fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        is_causal = kwargs.get("is_causal")
        is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal_if_none = base == "sdpa" and is_causal and query.shape[2] > 1
        softcap = kwargs.get("softcap")
        if needs_scores:
            scores = masked_scores(query, key, attention_mask, scale, causal_if_none, softcap)
            log_z2 = torch.logsumexp(scores, dim=-1).clamp_min(NEG)
            call = AttentionCall(scores, value)
        else:
            log_z2 = chunked_log_z2(query, key, attention_mask, scale, causal_if_none, softcap)
    if getattr(shift, "needs_output", False):
        call = call or AttentionCall()
        call.output = out.transpose(1, 2)  # [b, H, q, d], a view
        call.scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    if target.insert == "attn" and call is None and hasattr(shift, "add_to"):
        return shift.add_to(target.row, out, query, log_z2), weights
    delta = shift(target.row, query, log_z2, call)
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
    out, put_back = sequence_output(output, args)
    return put_back(out + delta.reshape(*delta.shape[:2], -1))


def register() -> None:
    """Register ``mimic_sdpa`` and ``mimic_eager`` (and their mask builders) with transformers."""
    for base in BASES:
        name = PREFIX + base
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, partial(mimic_attention, base=base))
            AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)
