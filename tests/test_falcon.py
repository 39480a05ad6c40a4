"""Falcon (rotary) under MimIC: exact, identity at v = 0, the learned shift by hand, cached decoding.

Falcon's attention goes through transformers' attention interface (transformers >= 5.25; the locked
version), so MimIC's hook runs in every layer. Its three key/value layouts are each checked: one key and
value per head, one shared by all heads (multi-query, Falcon-7B) and grouped keys (the new decoder
architecture, Falcon-40B/180B). Prompts go through a Falcon-style tokenizer (byte-level BPE, no BOS,
``<|endoftext|>``) and the ``falcon`` adapter's ``encode``. ALiBi Falcon is refused by ``attach``
(tests/test_attach_checks.py).
"""

import functools
import math

import pytest
import torch
import transformers as tf

import mimic
from mimic.data.batches import common_suffix
from mimic.models.generation import generate
from mimic.models.loading import LoadedModel, stop_token_ids
from mimic.models.prompts import PromptFormat
from mimic.tiny.families import falcon_tokenizer
from mimic.tiny.oracle import exactness_errors

LAYOUTS = {
    "multi-head": {"multi_query": False},
    "multi-query": {"multi_query": True},
    "grouped": {"new_decoder_architecture": True, "num_kv_heads": 2},
}
HEADS, HIDDEN = 4, 32


@functools.cache
def tokenizer():
    return falcon_tokenizer()


def falcon(layout: str, impl: str = "sdpa") -> LoadedModel:
    torch.manual_seed(0)
    tok = tokenizer()
    config = tf.FalconConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                             alibi=False, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, attn_implementation=impl, **LAYOUTS[layout])
    model = tf.FalconForCausalLM(config).eval()
    assert model.config._attn_implementation == impl
    adapter = mimic.adapter_for(model)
    return LoadedModel("falcon", model, tok, adapter, adapter.prompt_format, torch.device("cpu"),
                       stop_token_ids(model, tok), tok.pad_token_id)


FMT = PromptFormat()
DEMOS = [("What color is the circle?", "red"), ("What shape is it?", "square"), ("What color is it?", "blue")]
QUERIES = ["What color is the square?", "What shape is the red one?", "Is it blue?"]


def line(question: str, answer: str = "") -> str:
    return FMT.vqa.format(question=question) + FMT.answer_prefix + answer


def prompts():
    """Zero-shot prompts of different lengths and ICL prompts (1..3 demonstrations before the same query)."""
    zero_shot = [[line(q)] for q in QUERIES]
    icl = [["".join(line(q, a) + FMT.separator for q, a in DEMOS[: i + 1]) + line(query)]
           for i, query in enumerate(QUERIES)]
    return icl, zero_shot


def encoded(lm: LoadedModel):
    icl_prompts, zs_prompts = prompts()
    icl, zero_shot = lm.adapter.encode(lm.tokenizer, icl_prompts), lm.adapter.encode(lm.tokenizer, zs_prompts)
    lengths = zero_shot["attention_mask"].sum(1).tolist()
    for i, n in enumerate(lengths):  # the zero-shot row is the ICL row's suffix, token for token
        icl_row, zs_row = (x["input_ids"][i][x["attention_mask"][i].bool()].tolist() for x in (icl, zero_shot))
        assert common_suffix(icl_row, zs_row) >= n
    assert (icl["attention_mask"] == 0).any() and (zero_shot["attention_mask"] == 0).any()
    return icl, zero_shot, lengths


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_oracle_reproduces_icl_on_falcon(layout, impl):
    lm = falcon(layout, impl)
    icl, zero_shot, lengths = encoded(lm)
    oracle_err, zero_shot_err = exactness_errors(lm.model, icl, zero_shot, lengths)
    assert oracle_err <= 1e-5
    assert zero_shot_err > 100 * max(oracle_err, 1e-6)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_zero_shift_leaves_falcon_unchanged_and_a_nonzero_one_moves_it(layout):
    lm = falcon(layout)
    icl, _, _ = encoded(lm)
    real = icl["attention_mask"].bool()
    with torch.no_grad():
        plain = lm.model(**icl).logits
        shift = mimic.attach(lm.model)  # its dry run: every layer calls the hook, logits unmoved
        try:
            shift.v.zero_()
            assert (lm.model(**icl).logits - plain)[real].abs().max() < 1e-6
            shift.v.normal_(0, 1.0)
            assert (lm.model(**icl).logits - plain)[real].abs().max() > 1e-2
        finally:
            mimic.detach(lm.model)
        assert torch.equal(lm.model(**icl).logits, plain)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on [b, H, T, d]: each half of the head paired with the other (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def falcon_attention_by_hand(attn, hidden, rope, attention_mask):
    """(head outputs [b, T, H, d], queries [b, H, T, d], log Z2 [b, H, T]) of one Falcon layer, from scratch.

    The fused ``query_key_value`` output is split as Falcon's checkpoints lay it out: per head query, key
    and value (multi-head); all queries, then one key and one value (multi-query); per key/value group
    its queries, then its key and its value (the new decoder architecture).
    """
    b, T, _ = hidden.shape
    d = HIDDEN // HEADS
    fused = attn.query_key_value(hidden)
    if attn.config.new_decoder_architecture:
        groups = fused.view(b, T, attn.config.num_kv_heads, -1, d)
        q, k, v = groups[..., :-2, :].reshape(b, T, HEADS, d), groups[..., -2, :], groups[..., -1, :]
    elif attn.config.multi_query:
        q, k, v = fused.split([HEADS * d, d, d], dim=-1)
        q, k, v = q.view(b, T, HEADS, d), k.view(b, T, 1, d), v.view(b, T, 1, d)
    else:
        q, k, v = fused.view(b, T, HEADS, 3, d).unbind(3)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    q, k = rotate(q, *rope), rotate(k, *rope)
    k = k.repeat_interleave(HEADS // k.shape[1], dim=1)
    v = v.repeat_interleave(HEADS // v.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & attention_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2), q, torch.logsumexp(scores, dim=-1)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_hooked_falcon_attention_adds_the_learned_shift_by_hand(layout):
    lm = falcon(layout)
    _, inputs, _ = encoded(lm)
    shift = mimic.attach(lm.model)
    with torch.no_grad():  # large, distinct values per layer and head so every term shows
        shift.v.normal_(0, 1.0)
        shift.w.normal_(0, 0.5)
        shift.b.normal_(0, 1.0)
    seen, hooks = {}, []
    for i, layer in enumerate(lm.model.transformer.h):
        def pre(module, args, kwargs, i=i):
            seen[i] = {"hidden": args[0], "rope": kwargs["position_embeddings"]}

        def post(module, args, kwargs, output, i=i):
            seen[i]["out"] = output[0]

        hooks += [layer.self_attention.register_forward_pre_hook(pre, with_kwargs=True),
                  layer.self_attention.register_forward_hook(post, with_kwargs=True)]
    real = inputs["attention_mask"].bool()
    try:
        with torch.no_grad():
            lm.model(**inputs)
            for i, layer in enumerate(lm.model.transformer.h):
                heads_out, q, log_z2 = falcon_attention_by_hand(layer.self_attention, seen[i]["hidden"],
                                                                seen[i]["rope"], inputs["attention_mask"])
                log_z1 = torch.einsum("bhtd,hd->bht", q, shift.w[i]) + shift.b[i][None, :, None]
                mu = torch.sigmoid(log_z1 - log_z2)
                delta = mu.transpose(1, 2)[..., None] * shift.v[i][None, None]  # [b, T, H, d]
                assert delta.abs()[real].max() > 0.05
                want = layer.self_attention.dense((heads_out + delta).flatten(2))
                assert (seen[i]["out"] - want).abs()[real].max().item() < 1e-5, i
    finally:
        for hook in hooks:
            hook.remove()
        mimic.detach(lm.model)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_decoding_under_mimic_equals_the_teacher_forced_forward(layout):
    """Falcon's cache holds its own key/value layout: log Z2 over the cached keys must match one forward."""
    lm = falcon(layout)
    _, inputs, _ = encoded(lm)
    steps = 3
    shift = mimic.attach(lm.model)
    try:
        with torch.no_grad():
            shift.v.normal_(0, 1.0)
            shift.w.normal_(0, 0.5)
        texts = generate(lm, inputs, max_new_tokens=steps)
        assert len(texts) == len(QUERIES) and all(isinstance(t, str) for t in texts)
        prompt = {k: v for k, v in inputs.items() if k != "position_ids"}
        with torch.no_grad():
            out = lm.model.generate(**prompt, max_new_tokens=steps, do_sample=False, output_scores=True,
                                    return_dict_in_generate=True, pad_token_id=lm.pad_token_id, eos_token_id=None,
                                    suppress_tokens=lm.tokenizer.all_special_ids)
            mask = torch.nn.functional.pad(inputs["attention_mask"], (0, steps), value=1)
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            logits = lm.model(input_ids=out.sequences, attention_mask=mask, position_ids=positions).logits
        for step, score in enumerate(out.scores):
            allowed = torch.isfinite(score)
            assert torch.allclose(score[allowed], logits[:, -steps - 1 + step][allowed], atol=1e-4)
    finally:
        mimic.detach(lm.model)
