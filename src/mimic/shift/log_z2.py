"""log Z2, the log-sum-exp of a head's scaled attention scores under the attention's own mask.

Three ways to get it, all with the same meaning (fully masked rows give ``NEG``):

- :func:`sdpa_with_log_z2` runs the very kernel ``F.scaled_dot_product_attention`` would
  pick for its arguments (``torch._fused_sdp_choice``) and takes the log-sum-exp that the
  kernel computes anyway: CPU flash attention, CUDA flash and memory-efficient attention.
  Its output is the one sdpa would return (same kernel, same arguments), and log Z2 costs
  O(b*H*q) memory. Other backends (math, cuDNN, dropout) fall back to the chunked path.
- :func:`chunked_log_z2` recomputes the scores in float32, a block of queries at a time,
  so that beyond attention itself it holds O(b*H*q) plus one block's scores.
- :func:`reference_log_z2` materialises every score at once; the tests compare against it.

The kernels' log-sum-exp carries no gradient, and a chunked forward under autograd would
keep every block's scores for backward; so whenever the queries or keys need a gradient
(training), log Z2 goes through :class:`_LogZ2`, whose backward recomputes the scores block
by block (d logsumexp / d scores = softmax).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

FLASH, EFFICIENT = int(SDPBackend.FLASH_ATTENTION), int(SDPBackend.EFFICIENT_ATTENTION)  # _fused_sdp_choice's ints
NEG = torch.finfo(torch.float32).min  # finite, so fully masked rows give finite log Z2 and no NaN gradients
CHUNK_SCORES = 2**24  # scores per query block of the chunked path (64 MiB in float32)


def mask_rows(mask: torch.Tensor, first_query: int, q_len: int, k_len: int) -> torch.Tensor:
    """The rows ``first_query .. first_query + q_len`` of ``mask`` over the first ``k_len`` keys.

    A mask with a single query row (shared by every query, as in decoding) is returned as is.
    """
    mask = mask[..., :k_len]
    return mask if mask.shape[-2] == 1 else mask[..., first_query : first_query + q_len, :]


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None, causal_if_none: bool, first_query: int = 0):
    """``scores`` [b,H,q,k] with the attention's mask applied, as the base implementation applied it.

    ``first_query`` is the index of the first query row of ``scores`` within the mask (query blocks).
    """
    q_len, k_len = scores.shape[-2:]
    if mask is None:
        if not causal_if_none:
            return scores
        # sdpa's is_causal is aligned to the upper left (the only case transformers skips the mask in).
        rows = torch.arange(first_query, first_query + q_len, device=scores.device)
        allowed = rows[:, None] >= torch.arange(k_len, device=scores.device)[None, :]
        return scores.masked_fill(~allowed, NEG)
    mask = mask_rows(mask, first_query, q_len, k_len)
    if mask.dtype == torch.bool:
        return torch.where(mask, scores, NEG)
    return scores + mask.to(scores.dtype)


def raw_scores(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """Scaled scores [b,H,q,k] in at least float32; GQA by grouping the queries (keys are not copied)."""
    b, heads, q_len, d = query.shape
    kv_heads = key.shape[1]
    dtype = torch.promote_types(query.dtype, torch.float32)  # float32 under a bf16/fp16 model
    q = (query.to(dtype) * scaling).reshape(b, kv_heads, heads // kv_heads, q_len, d)
    return torch.matmul(q, key.to(dtype)[:, :, None].transpose(-1, -2)).reshape(b, heads, q_len, -1)


def masked_scores(query, key, mask, scaling: float, causal_if_none: bool, softcap: float | None = None,
                  first_query: int = 0):
    """Scaled scores of every query head against its (shared, for GQA) key head, with the mask applied."""
    scores = raw_scores(query, key, scaling)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return apply_mask(scores, mask, causal_if_none, first_query)


def _finish(lse: torch.Tensor) -> torch.Tensor:
    return lse.clamp_min(NEG)  # -inf (a row fully masked by -inf) -> NEG, as under a boolean mask


def reference_log_z2(query, key, mask, scaling: float, causal_if_none: bool, softcap: float | None = None):
    """log Z2 [b,H,q] from the full masked score tensor [b,H,q,k] (memory O(b*H*q*k))."""
    return _finish(torch.logsumexp(masked_scores(query, key, mask, scaling, causal_if_none, softcap), dim=-1))


def _block_rows(query: torch.Tensor, key: torch.Tensor, chunk_scores: int) -> int:
    b, heads, _, _ = query.shape
    return max(1, chunk_scores // max(1, b * heads * key.shape[2]))


def _chunked_forward(query, key, mask, scaling, causal_if_none, softcap, chunk_scores):
    q_len = query.shape[2]
    rows = _block_rows(query, key, chunk_scores)
    if rows >= q_len:
        return reference_log_z2(query, key, mask, scaling, causal_if_none, softcap)
    out = []
    for start in range(0, q_len, rows):
        scores = masked_scores(query[:, :, start : start + rows], key, mask, scaling, causal_if_none, softcap, start)
        out.append(torch.logsumexp(scores, dim=-1))
    return _finish(torch.cat(out, dim=-1))


class _LogZ2(torch.autograd.Function):
    """log Z2 whose backward recomputes the scores block by block (no [b,H,q,k] kept for backward)."""

    @staticmethod
    def forward(ctx, query, key, lse, mask, scaling, causal_if_none, softcap, chunk_scores):
        ctx.save_for_backward(query, key, mask if mask is not None else torch.empty(0))
        ctx.has_mask = mask is not None
        ctx.args = (scaling, causal_if_none, softcap, chunk_scores)
        return lse.clone()

    @staticmethod
    def backward(ctx, grad):
        query, key, mask = ctx.saved_tensors
        mask = mask if ctx.has_mask else None
        scaling, causal_if_none, softcap, chunk_scores = ctx.args
        b, heads, q_len, d = query.shape
        kv_heads = key.shape[1]
        dtype = torch.promote_types(query.dtype, torch.float32)
        k = key.to(dtype)
        grad_q = torch.empty(b, heads, q_len, d, dtype=dtype, device=query.device)
        grad_k = torch.zeros(b, kv_heads, k.shape[2], d, dtype=dtype, device=key.device)
        rows = _block_rows(query, key, chunk_scores)
        for start in range(0, q_len, rows):
            q = query[:, :, start : start + rows]
            n = q.shape[2]
            raw = raw_scores(q, key, scaling)
            capped = torch.tanh(raw / softcap) if softcap is not None else None
            scores = capped * softcap if softcap is not None else raw
            masked = apply_mask(scores, mask, causal_if_none, start)
            # d logsumexp / d scores = softmax; a boolean mask blocks the gradient at masked keys
            d_scores = torch.softmax(masked, dim=-1) * grad[:, :, start : start + n, None].to(dtype)
            if mask is not None and mask.dtype == torch.bool:
                d_scores = d_scores * mask_rows(mask, start, n, k.shape[2])
            if capped is not None:
                d_scores = d_scores * (1 - capped * capped)
            d_scores = (d_scores * scaling).reshape(b, kv_heads, heads // kv_heads, n, -1)
            grad_q[:, :, start : start + n] = torch.matmul(d_scores, k[:, :, None]).reshape(b, heads, n, d)
            qg = q.to(dtype).reshape(b, kv_heads, heads // kv_heads, n, d)
            grad_k += torch.matmul(d_scores.transpose(-1, -2), qg).sum(dim=2)
        return grad_q.to(query.dtype), grad_k.to(key.dtype), None, None, None, None, None, None


def _needs_grad(query: torch.Tensor, key: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)


def chunked_log_z2(query, key, mask, scaling: float, causal_if_none: bool, softcap: float | None = None,
                   lse: torch.Tensor | None = None, chunk_scores: int = CHUNK_SCORES) -> torch.Tensor:
    """log Z2 [b,H,q] in query blocks of at most ``chunk_scores`` scores; differentiable in ``query``/``key``.

    ``lse``: the values, when a kernel already computed them (only the backward is then chunked).
    """
    if lse is None:
        with torch.no_grad():
            lse = _chunked_forward(query, key, mask, scaling, causal_if_none, softcap, chunk_scores)
    if not _needs_grad(query, key):
        return lse
    return _LogZ2.apply(query, key, lse.detach(), mask, scaling, causal_if_none, softcap, chunk_scores)


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask as sdpa converts it before calling a kernel (0 where allowed, -inf elsewhere)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device), float("-inf"))  # no negated copy


def _fully_masked(mask: torch.Tensor) -> torch.Tensor:
    """[b,1,q]: the query rows that see no key at all."""
    if mask.dtype == torch.bool:
        return ~mask.any(dim=-1)
    return torch.isneginf(mask).all(dim=-1)


@dataclass
class _MaskForms:
    source: weakref.ref
    version: int
    additive: torch.Tensor
    fully_masked: torch.Tensor | None


_MASK_FORMS: dict[tuple[int, torch.dtype], _MaskForms] = {}
CACHED_MASK_ELEMENTS = 2**22  # decoding-sized masks; a long prefill's mask is not kept alive


def mask_forms(mask: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(additive mask as sdpa hands it to a kernel, fully masked rows or None)``.

    Every layer of one forward gets the same mask tensor, so for small masks (decoding) the
    two are worked out once per mask and reused by the other layers: fewer kernels per step.
    """
    key = (id(mask), dtype)
    hit = _MASK_FORMS.get(key)
    if hit is not None and hit.source() is mask and hit.version == mask._version:
        return hit.additive, hit.fully_masked
    additive, fully = _float_mask(mask, dtype), _fully_masked(mask)
    if mask.numel() <= CACHED_MASK_ELEMENTS:
        fully = fully if bool(fully.any()) else None
        if len(_MASK_FORMS) >= 8:
            _MASK_FORMS.clear()
        _MASK_FORMS[key] = _MaskForms(weakref.ref(mask), mask._version, additive, fully)
    return additive, fully


def _efficient_bias(mask: torch.Tensor, query, key) -> torch.Tensor:
    """sdpa's preprocessing of a mask for the memory-efficient kernel: expanded, last dim 16-aligned."""
    b, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    mask = mask.expand(b, heads, q_len, k_len)
    pad = -k_len % 16
    if pad == 0:
        return mask
    return F.pad(mask, (0, pad))[..., :k_len]


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``(output, log-sum-exp or None)`` from the kernel sdpa picks for these arguments.

    The output is what ``F.scaled_dot_product_attention`` returns (the same kernel on the
    same arguments); the log-sum-exp is None where that kernel does not give one. Rows that
    see no key get ``NEG``, as on the other paths (the kernels return 0 there).
    """
    backend = torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                      enable_gqa=enable_gqa)
    device = query.device.type
    fused = (backend == FLASH and device == "cpu") or (backend == EFFICIENT and device == "cuda") or (
        backend == FLASH and device == "cuda" and query.shape[-1] % 8 == 0)
    if not fused:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                             is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        return out, None
    additive, fully = mask_forms(attn_mask, query.dtype) if attn_mask is not None else (None, None)
    if device == "cpu":
        out, lse = torch._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=additive, scale=scale)
    elif backend == FLASH:  # sdpa's CUDA flash path takes no mask
        out, lse = torch._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                                      scale=scale)[:2]
    else:
        bias = None if additive is None else _efficient_bias(additive, query, key)
        out, lse = torch._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout_p,
                                                                          is_causal, scale=scale)[:2]
        lse = lse[..., : query.shape[2]]  # padded to a multiple of 32 queries
    if fully is not None:
        lse = torch.where(fully, NEG, lse)
    return out, lse


def sdpa_with_log_z2(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sdpa's output, log Z2 [b,H,q])`` for one call of ``F.scaled_dot_product_attention``.

    log Z2 comes from the kernel where it gives one, otherwise from :func:`chunked_log_z2`
    on the same arguments; either way under exactly the mask (or ``is_causal``) sdpa used.
    """
    scaling = scale if scale is not None else query.shape[-1] ** -0.5
    out, lse = fused_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return out, chunked_log_z2(query, key, attn_mask, scaling, is_causal, lse=lse)
