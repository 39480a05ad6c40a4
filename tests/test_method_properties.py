"""Each method's defining computation, on tiny models, against hand computations.

LIVE turns the MLP output at its own norm; Task Vector replaces exactly one position at one layer
and Function Vector adds to exactly one; I2CL mixes every attention and MLP output with its
context vector; HiFICL's heads attend to their virtual keys and values exactly as to real ones
under the attention's own mask; LoRA adapts only the decoder's projections and starts as the
identity. Tensors are randomised so that no initial value hides a term.
"""

import math

import pytest
import torch
from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb

import mimic
from mimic.methods.function_vector import FunctionVectorConfig, _HeadPatch, head_vector
from mimic.methods.hificl import HificlConfig
from mimic.methods.i2cl import I2clConfig
from mimic.methods.live import LiveConfig
from mimic.methods.lora import LoraConfig
from mimic.methods.task_vector import TaskVectorConfig
from mimic.tiny.models import random_icl_batch, tiny_idefics2


def randomize(module, std: float = 0.5, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.copy_(torch.randn(t.shape, generator=g) * std)


def record(model, modules: dict, raw: bool = False) -> dict:
    """Forward hooks storing each module's (first) output; ``raw``: before any hook already on it edits it."""
    seen, handles = {}, []
    for key, module in modules.items():
        def hook(mod, args, output, key=key):
            seen[key] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        handles.append(module.register_forward_hook(hook, prepend=raw))
    seen["_handles"] = handles
    return seen


def release(seen: dict) -> None:
    for h in seen.pop("_handles"):
        h.remove()


def decoder(model):
    return model.model.text_model.layers


# -- LIVE -------------------------------------------------------------------------------------------


def test_live_turns_each_mlp_output_towards_its_vector_at_the_same_norm():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=3)
    live = mimic.attach(model, LiveConfig())
    randomize(live)
    mlps = {i: layer.mlp for i, layer in enumerate(decoder(model))}
    raw, out = record(model, mlps, raw=True), record(model, mlps)
    with torch.no_grad():
        model(**inputs)
    release(raw)
    release(out)
    for i in mlps:
        h = raw[i]
        shifted = h + live.scale[i] * live.v[i]
        want = shifted / shifted.norm(dim=-1, keepdim=True) * h.norm(dim=-1, keepdim=True)
        assert torch.allclose(out[i], want, atol=1e-6)
        assert torch.allclose(out[i].norm(dim=-1), h.norm(dim=-1), rtol=1e-5)  # the norm is kept ...
        turned = torch.nn.functional.cosine_similarity(out[i], h, dim=-1)[inputs["attention_mask"].bool()]
        assert turned.max() < 0.99  # ... while the direction turns, at every real position
    mimic.detach(model)


# -- Task Vector and Function Vector ----------------------------------------------------------------


def _layer_outputs(model, inputs) -> dict:
    seen = record(model, dict(enumerate(decoder(model))))
    with torch.no_grad():
        model(**inputs)
    release(seen)
    return seen


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_task_vector_replaces_exactly_one_position_at_one_layer(layer):
    model = tiny_idefics2(layers=3, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=5)
    base = _layer_outputs(model, inputs)
    tv = mimic.attach(model, TaskVectorConfig(layer=layer))
    randomize(tv)
    patched = _layer_outputs(model, inputs)
    mimic.detach(model)
    for i in range(3):
        if i < layer:
            assert torch.equal(patched[i], base[i])  # earlier layers: untouched
        elif i == layer:
            assert torch.equal(patched[i][:, :-1], base[i][:, :-1])  # every other position: untouched
            assert torch.equal(patched[i][:, -1], tv.vector.expand(len(patched[i]), -1))  # the last: the vector
        else:
            assert torch.equal(patched[i][:, :-1], base[i][:, :-1])  # causal: only the last position moves
            assert (patched[i][:, -1] - base[i][:, -1]).abs().max() > 1e-3


def test_function_vector_adds_to_exactly_one_position_at_one_layer():
    model = tiny_idefics2(layers=3, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=5)
    base = _layer_outputs(model, inputs)
    fv = mimic.attach(model, FunctionVectorConfig(layer=1))
    randomize(fv)
    patched = _layer_outputs(model, inputs)
    mimic.detach(model)
    assert torch.equal(patched[0], base[0])
    delta = patched[1] - base[1]
    assert torch.equal(delta[:, :-1], torch.zeros_like(delta[:, :-1]))
    assert torch.allclose(delta[:, -1], fv.vector.expand(len(delta), -1), atol=1e-6)


def test_a_layer_vector_patches_the_prompt_only_not_the_generated_tokens():
    """Cached generation with a task vector = uncached forwards patched at the last prompt token only."""
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, batch_size=2, pad=False, seed=7)
    tv = mimic.attach(model, TaskVectorConfig(layer=0))
    randomize(tv, std=2.0)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
        for step in range(3):
            ids = out.sequences[:, : n + step]
            tv.positions = torch.full((2,), n - 1)  # the last prompt token, whatever follows it
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           pixel_values=inputs["pixel_values"]).logits[:, -1]
            tv.positions = None
            assert torch.allclose(logits, out.logits[step], atol=1e-5), step
    mimic.detach(model)


def test_function_vector_is_the_heads_mean_outputs_through_o_proj():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    means = torch.randn(2, 4, 8)
    heads = [[1, 2], [0, 3], [1, 0]]
    want = torch.zeros(32)
    for layer, head in heads:
        slot = torch.zeros(4 * 8)
        slot[head * 8 : (head + 1) * 8] = means[layer, head]
        with torch.no_grad():
            want += decoder(model)[layer].self_attn.o_proj(slot)  # o_proj has no bias here
    assert torch.allclose(head_vector(model, means, heads), want, atol=1e-6)


def test_head_patch_sets_one_head_at_the_last_position_through_the_attention_interface():
    from mimic.shift.install import installed

    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=2)
    o_proj = {i: layer.self_attn.o_proj for i, layer in enumerate(decoder(model))}

    def head_inputs():
        seen, handles = {}, []
        for i, module in o_proj.items():
            handles.append(module.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].clone())))
        with torch.no_grad():
            model(**inputs)
        for h in handles:
            h.remove()
        return seen

    base = head_inputs()
    means = torch.randn(2, 4, 8)
    patch = _HeadPatch(means)
    patch.head = (0, 2)
    with installed(model, patch, verify=False):
        patched = head_inputs()
    diff = patched[0] - base[0]
    assert torch.allclose(patched[0][:, -1, 16:24], means[0, 2].expand(len(diff), -1), atol=1e-6)
    diff[:, -1, 16:24] = 0
    assert diff.abs().max() < 1e-6  # no other head or position of that layer moved


# -- I2CL ---------------------------------------------------------------------------------------------


def test_i2cl_mixes_every_attention_and_mlp_output_with_its_context_vector():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=3)
    i2cl = mimic.attach(model, I2clConfig())
    randomize(i2cl)
    modules = {(i, w): getattr(layer, "self_attn" if w == 0 else "mlp") for i, layer in enumerate(decoder(model))
               for w in (0, 1)}
    raw, out = record(model, modules, raw=True), record(model, modules)
    with torch.no_grad():
        model(**inputs)
    release(raw)
    release(out)
    for (i, w), h in raw.items():
        lam, beta = i2cl.coef[i, w]
        assert torch.allclose(out[(i, w)], beta * h + lam * i2cl.context[i, w], atol=1e-6)  # every position
    # while training, noise of noise_scale times each output's norm is added
    i2cl.train()
    with torch.no_grad():
        noisy = model(**inputs).logits
        i2cl.eval()
        clean = model(**inputs).logits
    assert 0 < (noisy - clean).abs().max() < 0.1
    mimic.detach(model)


# -- HiFICL -----------------------------------------------------------------------------------------


def _attention_inputs(model, inputs):
    """Each layer's hidden states and RoPE as its attention saw them, and its o_proj input (head outputs)."""
    seen, handles = {}, []
    for i, layer in enumerate(decoder(model)):
        def pre(module, args, kwargs, i=i):
            seen[("in", i)] = (kwargs["hidden_states"], kwargs["position_embeddings"])

        def heads(module, args, i=i):
            seen[("heads", i)] = args[0].clone()
        handles += [layer.self_attn.register_forward_pre_hook(pre, with_kwargs=True),
                    layer.self_attn.o_proj.register_forward_pre_hook(heads)]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("mix", ["exact", "additive"])
def test_hificl_heads_attend_to_virtual_tokens_as_to_real_ones_under_the_real_mask(mix):
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=6)
    assert (inputs["attention_mask"] == 0).any()
    hificl = mimic.attach(model, HificlConfig(n_virtual=3, rank=2, mix=mix))
    randomize(hificl, std=1.0)
    seen = _attention_inputs(model, inputs)
    real = inputs["attention_mask"].bool()
    mask = inputs["attention_mask"].bool()
    for i, layer in enumerate(decoder(model)):
        attn = layer.self_attn
        hidden, rope = seen[("in", i)]
        b, T, _ = hidden.shape
        d = attn.head_dim
        q = attn.q_proj(hidden).view(b, T, -1, d).transpose(1, 2)
        k = attn.k_proj(hidden).view(b, T, -1, d).transpose(1, 2)
        v = attn.v_proj(hidden).view(b, T, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rope)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & mask[:, None, None, :]
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
        vk = hificl.key_a[i] @ hificl.key_b[i]  # [H, n, d]
        vv = hificl.value_a[i] @ hificl.value_b[i]
        virtual = q @ vk.transpose(-1, -2)[None] / math.sqrt(d)  # [b, H, T, n]
        if mix == "exact":  # softmax over [virtual; real] keys, values [virtual; real]
            probs = torch.softmax(torch.cat([virtual, scores], dim=-1), dim=-1)
            want = probs[..., :3] @ vv[None] + probs[..., 3:] @ v
        else:  # SA(q, K, V) + mu SA(q, K_D, V_D)
            mu = torch.sigmoid(torch.logsumexp(virtual, -1) - torch.logsumexp(scores, -1))[..., None]
            want = torch.softmax(scores, dim=-1) @ v + mu * (torch.softmax(virtual, dim=-1) @ vv)
        got = seen[("heads", i)].view(b, T, 4, d).transpose(1, 2)
        err = (got - want).abs().transpose(1, 2)[real].max().item()
        assert err < 1e-5, (i, err)
    mimic.detach(model)


def test_hificl_additive_at_initialisation_leaves_the_outputs_unchanged_and_exact_rescales_them():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=6)
    with torch.no_grad():
        before = model(**inputs).logits
    mimic.attach(model, HificlConfig(mix="additive"))  # B_V = 0: the virtual values are zero
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)
    mimic.detach(model)
    mimic.attach(model, HificlConfig(mix="exact"))  # (1 - mu) SA(q, K, V) even with zero virtual values
    with torch.no_grad():
        assert (model(**inputs).logits - before).abs().max() > 1e-3
    mimic.detach(model)


def test_hificl_parameter_count_of_the_paper():
    from mimic.methods import METHODS

    config = HificlConfig(layers=list(range(32)), num_heads=32, head_dim=128, num_layers=32)
    assert METHODS["hificl"].counts(config)["trainable"] == 2_228_224  # "2.2M" on Idefics2-8b (32 x 32 heads)


# -- LoRA ---------------------------------------------------------------------------------------------


def test_lora_adapts_only_the_decoders_projections_and_starts_as_the_identity():
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=1)
    with torch.no_grad():
        before = model(**inputs).logits
    lora = mimic.attach(model, LoraConfig(r=4, alpha=8.0, targets=["q_proj", "v_proj"], layers=[1]))
    adapted = {name for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"model.text_model.layers.1.self_attn.q_proj", "model.text_model.layers.1.self_attn.v_proj"}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)  # B = 0 at initialisation
    randomize(lora)
    layer = decoder(model)[1].self_attn.q_proj
    x = torch.randn(3, 32)
    a, b = lora.adapters["1_q_proj"]["A"].weight, lora.adapters["1_q_proj"]["B"].weight
    with torch.no_grad():
        assert torch.allclose(layer(x), layer.base_layer(x) + (8.0 / 4) * x @ a.T @ b.T, atol=1e-6)
    assert sum(p.numel() for p in lora.parameters()) == 4 * ((32 + 32) + (32 + 16))  # r (in + out), q and v
    mimic.detach(model)
