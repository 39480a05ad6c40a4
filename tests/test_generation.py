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
