"""attach proves itself: attention MimIC cannot describe is refused, the hook must run, outputs must not move."""

import pytest
import torch
import transformers as tf

import mimic
from mimic.shift import attention
from mimic.tiny.models import random_icl_batch, tiny_idefics2


def gpt_oss():
    return tf.GptOssForCausalLM(tf.GptOssConfig(
        hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, num_local_experts=2, num_experts_per_tok=1, vocab_size=64))


def bloom():
    return tf.BloomForCausalLM(tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=64))


def mpt():
    return tf.MptForCausalLM(tf.MptConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=64))


def falcon(alibi: bool):
    return tf.FalconForCausalLM(tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                vocab_size=64, alibi=alibi))


def t5():
    return tf.T5ForConditionalGeneration(tf.T5Config(d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4,
                                                     vocab_size=64))


REFUSED = {
    "gpt_oss": (gpt_oss, r"has attention sinks \(model\.layers\.0\.self_attn\.sinks\)"),
    "bloom": (bloom, r"adds an ALiBi position bias .*BloomModel\.build_alibi_tensor"),
    "mpt": (mpt, r"adds an ALiBi position bias .*config 'alibi'"),
    "falcon-alibi": (lambda: falcon(True), r"adds an ALiBi position bias .*config 'alibi'"),
    "t5": (t5, r"adds a relative position bias .*relative_attention_num_buckets"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_attention_mimic_cannot_describe_is_refused_up_front(name):
    build, reason = REFUSED[name]
    model = build().eval()
    impl = model.config._attn_implementation
    with pytest.raises(ValueError, match=rf"^MimIC cannot attach to '\w+': its attention {reason}") as err:
        mimic.attach(model)
    assert "\n" not in str(err.value)
    assert mimic.methods.attached(model) is None and model.config._attn_implementation == impl


def test_only_the_decoder_layers_are_examined_when_the_adapter_is_known():
    """A sink in the vision tower is none of MimIC's business; one in a decoder attention module is."""
    model = tiny_idefics2()
    vision_attn = model.model.vision_model.encoder.layers[0].self_attn
    vision_attn.sinks = torch.nn.Parameter(torch.zeros(2))
    assert mimic.attach(model) is not None
    mimic.detach(model)
    model.model.text_model.layers[1].self_attn.sinks = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match=r"has attention sinks \(model\.text_model\.layers\.1\.self_attn\.sinks\)"):
        mimic.attach(model)


class OwnAttention(torch.nn.Module):
    """Attention written here that never asks transformers' attention interface: it calls torch's sdpa itself,
    whatever ``config._attn_implementation`` says (as some models' attention did, and may again)."""

    def __init__(self, original):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (original.q_proj, original.k_proj, original.v_proj,
                                                              original.o_proj)
        self.head_dim, self.config = original.head_dim, original.config

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t, _ = hidden_states.shape
        q, k, v = (p(hidden_states).view(b, t, -1, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), None


def llama_with_own_attention(layer: int):
    model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    decoder = model.model.layers[layer]
    decoder.self_attn = OwnAttention(decoder.self_attn)
    return model.eval()


def _untouched(model, impl):
    from mimic.shift.install import installation

    assert mimic.methods.attached(model) is None and installation(model) is None
    assert all(m.config._attn_implementation == impl for m in model.modules() if hasattr(m, "config"))
    assert all(p.requires_grad for p in model.parameters())
    assert not any("_mimic_target" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("layer", [0, 1])
def test_a_module_that_never_calls_the_hook_is_named_and_the_model_detached(layer):
    model = llama_with_own_attention(layer)
    probe = torch.arange(40, 46)[None]
    with torch.no_grad():
        before = model(probe).logits
    message = rf"^MimIC's attention hook never ran in model\.layers\.{layer}\.self_attn: "
    with pytest.raises(RuntimeError, match=message):
        mimic.attach(model)
    _untouched(model, "sdpa")
    with torch.no_grad():
        assert torch.equal(model(probe).logits, before)
    # verify=False is the caller's word that the model works: nothing is run, nothing refused.
    shift = mimic.attach(model, verify=False)
    assert shift is not None and mimic.methods.attached(model) is not None
    mimic.detach(model)
    _untouched(model, "sdpa")


def test_outputs_that_move_at_zero_shift_fail_the_dry_run(monkeypatch):
    model = tiny_idefics2()
    real = attention.sdpa_with_log_z2

    def drifting(*args, **kwargs):  # an attention path that differs from the model's own
        out, log_z2 = real(*args, **kwargs)
        return out * 1.01, log_z2

    monkeypatch.setattr(attention, "sdpa_with_log_z2", drifting)
    with pytest.raises(RuntimeError, match=r"^attaching MimIC changed the outputs at v = 0 \(max \|difference\| "):
        mimic.attach(model)
    _untouched(model, "sdpa")


def test_a_failing_patched_forward_is_reported_in_one_line(monkeypatch):
    model = tiny_idefics2()

    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds\nsecond line")

    monkeypatch.setattr(attention, "sdpa_with_log_z2", broken)
    message = r"^MimIC dry run failed: the patched forward raised IndexError: index 7"
    with pytest.raises(RuntimeError, match=message) as e:
        mimic.attach(model)
    assert "\n" not in str(e.value)
    _untouched(model, "sdpa")


def test_the_dry_run_costs_two_forwards_of_six_tokens_and_leaves_the_shift_alone():
    model = tiny_idefics2()
    model.train()
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    shift = mimic.attach(model)
    assert seen == [torch.Size([1, 6])] * 2  # once unpatched, once patched
    assert model.training and all(m.training for m in model.modules())  # modes restored
    seen.clear()
    mimic.detach(model)
    mimic.attach(model, shift=shift, verify=False)
    assert seen == []
    handle.remove()
    # The learned shift was not called by the dry run and still acts afterwards.
    _, zs, _ = random_icl_batch(model, pad=True, seed=2)
    model.eval()
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
        shifted = model(**zs).logits
        mimic.detach(model)
        plain = model(**zs).logits
    assert not torch.allclose(shifted, plain)


def test_probe_ids_avoid_every_special_token():
    from mimic.shift.compat import probe_ids

    model = tiny_idefics2()  # image token 127, pad 0
    model.config.text_config.bos_token_id = 64
    ids = probe_ids(model, model.config.text_config)[0].tolist()
    assert ids == [65, 66, 67, 68, 69, 70]
