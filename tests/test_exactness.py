"""The exactness oracle: exact prefix terms in place of the learned ones reproduce ICL."""

import pytest
import torch

from mimic.shift import attention
from mimic.shift.log_z2 import chunked_log_z2
from mimic.tiny.models import random_icl_batch, tiny_idefics2
from mimic.tiny.oracle import exactness_errors


@pytest.mark.parametrize("pad", [False, True], ids=["no-padding", "left-padding"])
def test_oracle_reproduces_icl_hidden_states(tiny_model, pad):
    icl, zs, qlens = random_icl_batch(tiny_model, batch_size=3, shots=2, pad=pad, seed=1)
    if pad:
        assert (icl["attention_mask"] == 0).any() and len(set(qlens)) > 1
    oracle_err, zero_shot_err = exactness_errors(tiny_model, icl, zs, qlens)
    assert oracle_err <= 1e-4
    # The check is not vacuous: without the shift, zero-shot is far from ICL.
    assert zero_shot_err > 100 * max(oracle_err, 1e-6)


def test_oracle_fails_when_log_z2_ignores_the_padding_mask(monkeypatch):
    """The reference code computes log Z2 without the mask; the oracle catches that."""
    model = tiny_idefics2()
    icl, zs, qlens = random_icl_batch(model, pad=True, seed=1)
    real = attention.sdpa_with_log_z2

    def causal_only(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        out, _ = real(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        unmasked = chunked_log_z2(query, key, None, scale or query.shape[-1] ** -0.5, causal_if_none=True)
        return out, unmasked

    monkeypatch.setattr(attention, "sdpa_with_log_z2", causal_only)
    oracle_err, _ = exactness_errors(model, icl, zs, qlens)
    assert oracle_err > 1e-3


def test_sliding_window_changes_the_model():
    """The sliding-window case is a real one: with window 6 the outputs differ from full attention."""
    full, windowed = tiny_idefics2(), tiny_idefics2(sliding_window=6)
    _, zs, _ = random_icl_batch(full, pad=True, seed=1)
    with torch.no_grad():
        a, b = full(**zs).logits, windowed(**zs).logits
    assert (a - b).abs().max() > 1e-3
