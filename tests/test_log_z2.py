"""log Z2 three ways: from sdpa's own kernel (fused), in query blocks (chunked), from the full scores (reference).

On direct inputs (padding, grouped keys, sliding window, a single decoding query, fully masked
rows, boolean / -inf / finfo.min masks, bf16) the three agree, the fused output is bit for bit
sdpa's, and the chunked gradient equals autograd through the full scores. Through the hook on
tiny models the sdpa route, the eager route and the full-scores route (a shift that asks for
the scores) see the same log Z2 at every layer of a prefill and of every cached decoding step.
"""

import pytest
import torch
import torch.nn.functional as F

import mimic
from mimic.shift.log_z2 import NEG, chunked_log_z2, fused_sdpa, reference_log_z2, sdpa_with_log_z2
from mimic.tiny.models import random_icl_batch, tiny_idefics2


def qkv(b=2, heads=4, kv_heads=2, q_len=7, k_len=9, d=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda h, n: (torch.randn(b, h, n, d, generator=g) * 2).to(dtype)  # noqa: E731
    return make(heads, q_len), make(kv_heads, k_len), make(kv_heads, k_len)


def padded_causal(b, q_len, k_len, pads, window=None):
    """Boolean [b,1,q,k]: causal aligned to the end (cached keys before the queries), left padding, a window."""
    rows = torch.arange(k_len - q_len, k_len)[:, None]
    cols = torch.arange(k_len)[None, :]
    allowed = cols <= rows
    if window is not None:
        allowed &= cols > rows - window
    mask = allowed[None, None].repeat(b, 1, 1, 1)
    for i, p in enumerate(pads):
        mask[i, :, :, :p] = False
    return mask


CASES = {
    # name: (q_len, k_len, pads, window); padding of 4 with q = k fully masks the first rows of row 0
    "padded": (7, 7, [4, 0], None),
    "sliding-window": (7, 7, [2, 0], 3),
    "cached-prefix": (3, 9, [1, 0], None),
    "decoding": (1, 9, [3, 0], None),
    "decoding-window": (1, 9, [0, 2], 4),
}


def _expanded(key, heads):
    return key.repeat_interleave(heads // key.shape[1], dim=1)


@pytest.mark.parametrize("gqa", ["enable_gqa", "repeated", "mha"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_chunked_and_reference_agree(name, gqa):
    q_len, k_len, pads, window = CASES[name]
    query, key, value = qkv(q_len=q_len, k_len=k_len, kv_heads=4 if gqa == "mha" else 2)
    if gqa == "repeated":
        key, value = _expanded(key, 4), _expanded(value, 4)
    mask = padded_causal(2, q_len, k_len, pads, window)
    fully = ~mask.any(-1)
    scale = 8**-0.5
    want = reference_log_z2(query, key, mask, scale, causal_if_none=False)
    assert torch.equal(want[fully.expand_as(want)], torch.full_like(want[fully.expand_as(want)], NEG))
    out, lse = fused_sdpa(query, key, value, mask, enable_gqa=gqa == "enable_gqa")
    assert lse is not None  # CPU flash attention took it: the kernel's own log-sum-exp
    sdpa = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=gqa == "enable_gqa")
    assert torch.equal(out, sdpa)
    fused_out, fused = sdpa_with_log_z2(query, key, value, mask, enable_gqa=gqa == "enable_gqa")
    assert torch.equal(fused_out, sdpa)
    chunked = chunked_log_z2(query, key, mask, scale, causal_if_none=False, chunk_scores=2 * 4 * k_len)  # 1-row blocks
    torch.testing.assert_close(chunked, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-5)
    if name == "padded":
        assert fully.sum() == 4  # the fully masked rows are really there, and get NEG on every path
        assert torch.equal(fused[fully.expand_as(fused)], want[fully.expand_as(want)])


def test_is_causal_without_a_mask_is_aligned_to_the_upper_left():
    query, key, value = qkv(q_len=5, k_len=8)
    out, fused = sdpa_with_log_z2(query, key, value, is_causal=True, enable_gqa=True)
    assert torch.equal(out, F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True))
    allowed = torch.ones(5, 8, dtype=torch.bool).tril()[None, None]
    want = reference_log_z2(query, key, allowed, 8**-0.5, causal_if_none=False)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked_log_z2(query, key, None, 8**-0.5, True, chunk_scores=8 * 8), want,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("fill", ["-inf", "finfo.min"])
def test_additive_float_masks(fill):
    """A -inf mask (sdpa's conversion of a boolean one) and eager's finfo.min mask give the same log Z2."""
    query, key, value = qkv(q_len=7, k_len=7)
    allowed = padded_causal(2, 7, 7, [4, 0])
    value_fill = float("-inf") if fill == "-inf" else torch.finfo(torch.float32).min
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, value_fill)
    want = reference_log_z2(query, key, allowed, 8**-0.5, causal_if_none=False)
    chunked = chunked_log_z2(query, key, mask, 8**-0.5, causal_if_none=False, chunk_scores=16)
    torch.testing.assert_close(chunked, want, rtol=0, atol=1e-5)
    out, fused = sdpa_with_log_z2(query, key, value, mask, enable_gqa=True)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-5)


def test_bf16_log_z2_is_float32_and_matches_the_float32_reference():
    query, key, value = qkv(q_len=7, k_len=7, dtype=torch.bfloat16)
    mask = padded_causal(2, 7, 7, [2, 0], window=4)
    out, fused = sdpa_with_log_z2(query, key, value, mask, enable_gqa=True)
    assert fused.dtype == torch.float32
    assert torch.equal(out, F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True))
    want = reference_log_z2(query.float(), key.float(), mask, 8**-0.5, causal_if_none=False)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(chunked_log_z2(query, key, mask, 8**-0.5, False, chunk_scores=40), want,
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("name", ["padded", "decoding-window"])
def test_chunked_gradient_equals_autograd_through_the_full_scores(name, softcap):
    q_len, k_len, pads, window = CASES[name]
    query, key, _ = qkv(q_len=q_len, k_len=k_len, dtype=torch.float64)
    mask = padded_causal(2, q_len, k_len, pads, window)
    weights = torch.randn(2, 4, q_len, dtype=torch.float64)

    def grads(fn):
        q, k = query.clone().requires_grad_(), key.clone().requires_grad_()
        (fn(q, k) * weights).sum().backward()
        return q.grad, k.grad

    want = grads(lambda q, k: reference_log_z2(q, k, mask, 0.3, False, softcap))
    got = grads(lambda q, k: chunked_log_z2(q, k, mask, 0.3, False, softcap, chunk_scores=2 * 4 * k_len))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert want[1].abs().max() > 0.01  # the keys' gradient is there (GQA: summed over the group)
    # the kernel's log-sum-exp carries no gradient; through sdpa_with_log_z2 it gets the chunked backward
    if softcap is None:
        fused = grads(lambda q, k: sdpa_with_log_z2(q, k, k, mask, scale=0.3, enable_gqa=True)[1])
        for a, b in zip(fused, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- through the hook on real models --------------------------------------------------------------


class Recorder(torch.nn.Module):
    """A zero shift that records the log Z2 the hook hands it (optionally asking for the full scores)."""

    def __init__(self, needs_scores: bool):
        super().__init__()
        self.needs_scores = needs_scores
        self.seen = []

    def forward(self, row, query, log_z2, call=None):
        assert (call is not None) == self.needs_scores
        self.seen.append((row, log_z2.clone()))
        return torch.zeros_like(query, dtype=torch.float32)


def _routes(model, inputs, new_tokens):
    """The log Z2 every call saw, on the sdpa (kernel), eager (chunked) and full-scores routes."""
    seen, sequences = {}, {}
    for route in ("sdpa", "eager", "scores"):
        model.set_attn_implementation("eager" if route == "eager" else "sdpa")
        recorder = Recorder(needs_scores=route == "scores")
        mimic.attach(model, shift=recorder, freeze_base=False, verify=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 suppress_tokens=[model.config.image_token_id])
        mimic.detach(model)
        seen[route], sequences[route] = recorder.seen, out
    model.set_attn_implementation("sdpa")
    return seen, sequences


@pytest.mark.parametrize("window", [None, 6], ids=["full", "sliding-window"])
def test_every_route_of_the_hook_sees_the_same_log_z2_in_prefill_and_cached_decoding(window):
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, sliding_window=window)
    _, zs, _ = random_icl_batch(model, pad=True, seed=3)
    seen, sequences = _routes(model, zs, new_tokens=3)
    assert torch.equal(sequences["sdpa"], sequences["scores"])
    assert len(seen["sdpa"]) == len(seen["scores"]) == len(seen["eager"]) == 2 * 3  # 2 layers x (prefill + 2 steps)
    q_lens = [z.shape[-1] for _, z in seen["sdpa"]]
    assert q_lens[:2] == [zs["input_ids"].shape[1]] * 2 and q_lens[2:] == [1] * 4
    fully_masked = 0
    for (row_a, a), (row_b, b), (_, c) in zip(seen["sdpa"], seen["scores"], seen["eager"], strict=True):
        assert row_a == row_b and a.shape == b.shape == c.shape
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
        torch.testing.assert_close(c, b, rtol=0, atol=2e-5)
        fully_masked += int((b == NEG).sum())
    assert fully_masked > 0  # left padding: the padding queries see no key at all
