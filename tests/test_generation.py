"""Under MimIC, cached greedy decoding equals decoding without the cache (log Z2 over cached keys)."""

import pytest
import torch

import mimic
from mimic.tiny import random_icl_batch


@pytest.mark.parametrize("pad", [False, True], ids=["no-padding", "left-padding"])
def test_cached_generation_equals_uncached(tiny_model, pad):
    _, zs, _ = random_icl_batch(tiny_model, pad=pad, seed=5)
    shift = mimic.attach(tiny_model)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
        shift.w.normal_(0, 0.5)
    # A random model may emit its image token; re-embedding it without the cache would need an image.
    image_token = getattr(tiny_model.config, "image_token_id", None)
    kwargs = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    if image_token is not None:
        kwargs["suppress_tokens"] = [image_token]
    with torch.no_grad():
        cached = tiny_model.generate(**zs, use_cache=True, **kwargs)
        uncached = tiny_model.generate(**zs, use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    mimic.detach(tiny_model)


def test_beam_search_under_mimic_equals_uncached_and_disabled_equals_unpatched():
    """3 beams (the paper's setting): the cache is reordered between beams; log Z2 must follow it."""
    from mimic.tiny import tiny_idefics2

    model = tiny_idefics2(layers=2)
    _, zs, _ = random_icl_batch(model, pad=True, seed=7)
    kwargs = dict(max_new_tokens=5, num_beams=3, do_sample=False, output_scores=True,
                  return_dict_in_generate=True, suppress_tokens=[model.config.image_token_id])
    with torch.no_grad():
        unpatched = model.generate(**zs, **kwargs)
    shift = mimic.attach(model)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
        shift.w.normal_(0, 0.5)
        cached = model.generate(**zs, use_cache=True, **kwargs)
        uncached = model.generate(**zs, use_cache=False, **kwargs)
        with mimic.disabled(model):
            disabled = model.generate(**zs, **kwargs)
    mimic.detach(model)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-4)
    assert not torch.equal(cached.sequences, unpatched.sequences)  # the shift matters
    assert torch.equal(disabled.sequences, unpatched.sequences)
    assert torch.allclose(disabled.sequences_scores, unpatched.sequences_scores, atol=1e-6)
