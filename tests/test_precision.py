"""MimIC on a bfloat16 model: the shift's parameters and arithmetic stay float32, the result matches fp32."""

import torch

import mimic
from mimic import MimicConfig
from mimic.tiny.models import random_icl_batch, tiny_idefics2
from mimic.training.loop import objective


def _pair():
    fp32 = tiny_idefics2(layers=2)
    bf16 = tiny_idefics2(layers=2).to(torch.bfloat16)
    _, inputs, qlens = random_icl_batch(fp32, pad=True, seed=8)
    low = {**inputs, "pixel_values": inputs["pixel_values"].to(torch.bfloat16)}
    return fp32, bf16, inputs, low, qlens


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits.float()


def test_bf16_zero_shift_is_the_identity_and_the_shift_matches_fp32():
    fp32, bf16, inputs, low, _ = _pair()
    before32, before16 = _logits(fp32, inputs), _logits(bf16, low)
    s32, s16 = mimic.attach(fp32), mimic.attach(bf16)
    assert all(p.dtype == torch.float32 for p in s16.parameters())  # float32 master weights
    with torch.no_grad():
        s16.v.zero_()
    assert torch.equal(_logits(bf16, low), before16)
    with torch.no_grad():
        for a, b in zip(s32.parameters(), s16.parameters(), strict=True):
            a.normal_(0, 0.5)
            b.copy_(a)
    effect32 = _logits(fp32, inputs) - before32
    effect16 = _logits(bf16, low) - before16
    real = inputs["attention_mask"].bool()
    rel = (effect16 - effect32)[real].norm() / effect32[real].norm()
    assert effect32[real].abs().max() > 0.1 and rel < 0.1, rel.item()


def test_bf16_training_gradients_are_finite_and_match_fp32():
    fp32, bf16, inputs, low, qlens = _pair()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]
    teachers = [torch.randn(2, n, 32, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(qlens)]
    grads = []
    for model, batch in ((fp32, inputs), (bf16, low)):
        shift = mimic.attach(model, MimicConfig())
        with torch.no_grad():
            for p in shift.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        loss, align, ce = objective(model, batch, labels, teachers, "mlp", 1.0, 0.5)
        assert loss.dtype == align.dtype == ce.dtype == torch.float32
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in shift.parameters()]))
        mimic.detach(model)
    g32, g16 = grads
    assert torch.isfinite(g16).all()
    cosine = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    assert cosine > 0.99, cosine.item()
