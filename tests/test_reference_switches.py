"""Switches that reproduce the MimIC reference code (Kamichanw/MimIC, branch main, commit 9eda50b), each
against a transcription of what the reference computes (file and line cited in each test)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mimic.shift.config import MimicConfig
from mimic.shift.module import MimicShift


@pytest.mark.parametrize("per_head", [False, True])
def test_linear_magnitude_init_is_nn_linears_default(per_head):
    """The reference's per-layer magnitude is ``nn.Linear(hidden_dim, 1)`` left at torch's default init
    (src/shift_encoder.py:600-607): weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), here fan_in = heads x
    head_dim per layer (head_dim per head)."""
    layers, heads, dim = 3, 4, 16
    torch.manual_seed(0)
    shift = MimicShift(MimicConfig(per_head=per_head, magnitude_init="linear"), layers, heads, dim)
    fan_in = dim if per_head else heads * dim
    bound = 1 / math.sqrt(fan_in)
    reference = nn.Linear(fan_in, 1)  # what torch's default gives: the same bound for weight and bias
    assert reference.weight.abs().max() <= bound and reference.bias.abs().max() <= bound
    assert shift.w.abs().max() <= bound and shift.b.abs().max() <= bound
    assert shift.w.abs().max() > 0.8 * bound  # uniform over the whole range, not a narrow normal
    assert shift.b.shape == (layers, heads if per_head else 1) and bool((shift.b != 0).all())
    assert shift.w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)  # U(-a, a) has sd a / sqrt(3)


def test_the_default_magnitude_init_is_the_per_head_reference():
    """The per-head magnitude ``MultiheadLinear``: weight ~ N(0, 0.02), bias 0 (src/shift_encoder.py:547-556);
    the shift vector ~ 1e-3 * N(0, 1) (src/shift_encoder.py:609-620)."""
    torch.manual_seed(0)
    shift = MimicShift(MimicConfig(), 4, 8, 32)
    assert bool((shift.b == 0).all())
    assert shift.w.std().item() == pytest.approx(0.02, rel=0.1)
    assert shift.v.std().item() == pytest.approx(1e-3, rel=0.1)
    with pytest.raises(ValueError, match="magnitude_init='kaiming' is not valid"):
        MimicConfig(magnitude_init="kaiming")


@pytest.mark.parametrize("family", ["idefics2", "idefics"])
def test_the_reference_training_positions_change_nothing_under_rope(family):
    """Not a switch, measured: the reference's training forward passes no position_ids (src/shift_model.py:238-243),
    so Idefics2's decoder numbers positions 0..L-1 with the left padding (transformers 4.45.2 modeling_mistral.py:787,
    cache_position), while we (and generation) count from each row's first real token. Under left padding the two
    differ by one constant per row, and rotary embeddings depend on differences of positions only: the logits of
    every real token agree to float error (docs/deviations.md)."""
    from mimic.data.batches import student_batch
    from mimic.tiny.families import tiny_family, tiny_task

    lm = tiny_family(family)
    data, icd = tiny_task("vqa", n_train=3, n_support=6, seed=1)
    inputs, _, _ = student_batch(lm, data, "train", sorted(icd["train"]))
    mask = inputs["attention_mask"]
    padded = (mask[:, 0] == 0).nonzero()[:, 0]
    assert len(padded) > 0  # rows with left padding, whose positions differ
    counted = torch.arange(mask.shape[1]).expand_as(mask)
    assert not torch.equal(inputs["position_ids"][padded], counted[padded])
    with torch.no_grad():
        ours = lm.model(**inputs).logits
        reference = lm.model(**{**inputs, "position_ids": counted}).logits
    real = mask.bool()
    assert torch.allclose(ours[real], reference[real], atol=1e-4)
