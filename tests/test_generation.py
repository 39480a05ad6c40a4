"""Under MimIC, cached greedy decoding equals decoding without the cache (log Z2 over cached keys)."""

import pytest
import torch

import mimic
from mimic.tiny.models import random_icl_batch


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
    from mimic.tiny.models import tiny_idefics2

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


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "3-beams"])
@pytest.mark.parametrize("pad", [False, True], ids=["no-padding", "left-padding"])
def test_the_hooks_attention_is_bit_for_bit_transformers_sdpa_in_prefill_and_decoding(tiny_model, pad, beams, cache,
                                                                                     monkeypatch):
    """Every attention call of a MimIC generation: the hook's own sdpa path (grouped keys, pack_gqa while
    decoding, is_causal and the key cropping of an empty static cache, padding and sliding-window masks)
    returns exactly what transformers' sdpa returns.

    (Logits are compared with a tolerance below: a CPU matmul may round differently when its input
    sits at another memory alignment, even between two runs of the unpatched model.)
    """
    from mimic.shift import attention

    real, calls = attention._sdpa_and_log_z2, []

    def checked(module, query, key, value, attention_mask, scaling, dropout, **kwargs):
        out, weights, log_z2 = real(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        want, _ = attention.sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                                   dropout=dropout, **kwargs)
        calls.append((query.shape[2], torch.equal(out, want)))
        return out, weights, log_z2

    _, zs, _ = random_icl_batch(tiny_model, pad=pad, seed=4)
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, num_beams=beams, do_sample=False, output_scores=True,
                  return_dict_in_generate=True, cache_implementation=cache)
    image_token = getattr(tiny_model.config, "image_token_id", None)
    if image_token is not None:
        kwargs["suppress_tokens"] = [image_token]
    with torch.no_grad():
        unpatched = tiny_model.generate(**zs, **kwargs)
        shift = mimic.attach(tiny_model)
        shift.v.zero_()
        shift.w.normal_(0, 0.5)  # the magnitude is computed and multiplies v = 0
        monkeypatch.setattr(attention, "_sdpa_and_log_z2", checked)
        patched = tiny_model.generate(**zs, **kwargs)
    mimic.detach(tiny_model)
    layers = len(shift.config.layers)
    assert [q for q, _ in calls].count(1) == 3 * layers and len(calls) == 4 * layers  # prefill + 3 cached steps
    assert all(same for _, same in calls)
    assert torch.equal(patched.sequences, unpatched.sequences)
    for a, b in zip(patched.scores, unpatched.scores, strict=True):
        finite = torch.isfinite(b)
        assert torch.equal(finite, torch.isfinite(a)) and (a - b)[finite].abs().max() < 1e-6


def _shifted_tiny_idefics2():
    """A two-layer tiny Idefics2 with a random (non-zero) MimIC shift attached, and a padded query batch."""
    from mimic.tiny.models import tiny_idefics2

    model = tiny_idefics2(layers=2)
    _, zs, _ = random_icl_batch(model, pad=True, seed=9)
    shift = mimic.attach(model)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
        shift.w.normal_(0, 0.5)
    return model, zs


def test_static_cache_generation_under_mimic_equals_the_dynamic_cache():
    """A static cache holds unused key slots; log Z2 must not count them (they are masked)."""
    model, zs = _shifted_tiny_idefics2()
    kwargs = dict(max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True,
                  suppress_tokens=[model.config.image_token_id])
    with torch.no_grad():
        dynamic = model.generate(**zs, **kwargs)
        static = model.generate(**zs, cache_implementation="static", **kwargs)
        with mimic.disabled(model):
            unshifted = model.generate(**zs, cache_implementation="static", **kwargs)
    mimic.detach(model)
    assert torch.equal(static.sequences, dynamic.sequences)
    for a, b in zip(static.scores, dynamic.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert not all(torch.allclose(a, b, atol=1e-3) for a, b in zip(static.scores, unshifted.scores, strict=True))


def test_compiled_static_cache_decoding_under_mimic_equals_eager_decoding():
    """generate compiles the decoding step of a static cache (on CUDA, with CUDA graphs). Traced by dynamo
    (aot_eager here: no C++ toolchain needed), the hook takes its compile-safe route; same tokens, no graph break."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    model, zs = _shifted_tiny_idefics2()
    config = CompileConfig(backend="aot_eager", mode=None)
    config._compile_all_devices = True  # generate compiles only on accelerators unless told
    kwargs = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True,
                  cache_implementation="static", suppress_tokens=[model.config.image_token_id])
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        eager = model.generate(**zs, disable_compile=True, **kwargs)
        compiled = model.generate(**zs, compile_config=config, **kwargs)
    mimic.detach(model)
    torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    assert torch.equal(compiled.sequences, eager.sequences)
    for a, b in zip(compiled.scores, eager.scores, strict=True):
        finite = torch.isfinite(b)
        assert torch.equal(finite, torch.isfinite(a)) and (a - b)[finite].abs().max() < 1e-5
