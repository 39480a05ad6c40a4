"""The learned MimIC shift against hand computations: MimicShift alone, then through the attention hook.

``MimicShift`` is checked on chosen numbers with plain Python arithmetic for the three magnitude
variants (per head, per layer, constant). The hook is checked by recomputing each patched layer's
attention by hand from the layer's own inputs (q/k/v projections, RoPE, grouped keys, the causal and
padding mask), adding ``sigmoid(w.q + b - log Z2) * v`` per head and applying ``o_proj``; the model's
recorded output must match at every real (non-padding) position.
"""

import math

import pytest
import torch
from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb

import mimic
from mimic import MimicConfig, MimicShift
from mimic.tiny.models import random_icl_batch, tiny_idefics2


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# Two layers, two heads, head_dim 3; one batch row, two query positions.
V = [[[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], [[-2.0, 1.0, 0.0], [0.75, -0.25, 3.0]]]
W = [[[0.1, 0.2, -0.3], [0.0, -0.4, 0.5]], [[0.6, -0.1, 0.2], [-0.3, 0.3, 0.1]]]
B_HEAD = [[0.25, -0.5], [1.0, -1.5]]
B_LAYER = [[0.4], [-0.7]]
Q = [[[1.0, 2.0, -1.0], [0.5, -0.5, 1.5]], [[-1.0, 0.0, 2.0], [2.0, 1.0, 0.5]]]  # [H, q_len, d]
LOG_Z2 = [[0.3, 1.2], [-0.4, 2.5]]  # [H, q_len]


def shift_with(per_head: bool, query_dependent: bool) -> MimicShift:
    shift = MimicShift(MimicConfig(per_head=per_head, query_dependent=query_dependent), 2, 2, 3)
    with torch.no_grad():
        shift.v.copy_(torch.tensor(V))
        if query_dependent:
            shift.w.copy_(torch.tensor(W))
        shift.b.copy_(torch.tensor(B_HEAD if per_head else B_LAYER))
    return shift


def run(shift: MimicShift, row: int) -> torch.Tensor:
    query = torch.tensor(Q)[None]
    return shift(row, query, torch.tensor(LOG_Z2)[None]).expand_as(query)[0]  # [H, q_len, d]


@pytest.mark.parametrize("row", [0, 1])
def test_per_head_magnitude_by_hand(row):
    out = run(shift_with(per_head=True, query_dependent=True), row)
    for h in range(2):
        for t in range(2):
            mu = sigmoid(dot(W[row][h], Q[h][t]) + B_HEAD[row][h] - LOG_Z2[h][t])
            assert out[h, t].tolist() == pytest.approx([mu * x for x in V[row][h]], abs=1e-6)


@pytest.mark.parametrize("row", [0, 1])
def test_per_layer_magnitude_by_hand(row):
    """One magnitude per layer and position: sum over heads of w[h].q[h], plus b, minus the mean log Z2."""
    out = run(shift_with(per_head=False, query_dependent=True), row)
    for t in range(2):
        log_z1 = sum(dot(W[row][h], Q[h][t]) for h in range(2)) + B_LAYER[row][0]
        mean_log_z2 = (LOG_Z2[0][t] + LOG_Z2[1][t]) / 2
        mu = sigmoid(log_z1 - mean_log_z2)
        for h in range(2):
            assert out[h, t].tolist() == pytest.approx([mu * x for x in V[row][h]], abs=1e-6)


@pytest.mark.parametrize("per_head", [True, False], ids=["per-head", "per-layer"])
@pytest.mark.parametrize("row", [0, 1])
def test_constant_magnitude_by_hand(row, per_head):
    shift = shift_with(per_head=per_head, query_dependent=False)
    assert shift.w is None
    out = run(shift, row)
    for h in range(2):
        b = B_HEAD[row][h] if per_head else B_LAYER[row][0]
        for t in range(2):
            assert out[h, t].tolist() == pytest.approx([sigmoid(b) * x for x in V[row][h]], abs=1e-6)


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    shift = MimicShift(MimicConfig(), 8, 16, 64)
    assert shift.v.shape == shift.w.shape == (8, 16, 64) and shift.b.shape == (8, 16)
    assert shift.v.std().item() == pytest.approx(1e-3, rel=0.05)
    assert shift.w.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(shift.b, torch.zeros(8, 16))
    assert MimicShift(MimicConfig(per_head=False), 8, 16, 64).b.shape == (8, 1)
    assert shift.v.dtype == shift.w.dtype == shift.b.dtype == torch.float32


# -- through the attention hook ------------------------------------------------------------------


def capture_layers(model, layers):
    """Hooks recording each layer's attention input (hidden states, RoPE) and attention/MLP outputs."""
    seen, hooks = {}, []
    decoder = model.model.text_model.layers
    for i in layers:
        attn, mlp = decoder[i].self_attn, decoder[i].mlp

        def pre(module, args, kwargs, i=i):
            seen[i] = {"hidden": kwargs.get("hidden_states", args[0] if args else None),
                       "rope": kwargs["position_embeddings"]}

        def post(module, args, kwargs, output, i=i):
            seen[i]["attn_out"] = output[0]

        def mlp_io(module, args, output, i=i):
            seen[i]["mlp_in"], seen[i]["mlp_out"] = args[0], output

        hooks += [attn.register_forward_pre_hook(pre, with_kwargs=True),
                  attn.register_forward_hook(post, with_kwargs=True), mlp.register_forward_hook(mlp_io)]
    return seen, hooks


def attention_by_hand(attn, hidden, rope, attention_mask):
    """(head outputs [b, T, H, d], queries [b, H, T, d], log Z2 [b, H, T]) of one layer, from scratch."""
    b, T, _ = hidden.shape
    d = attn.head_dim
    q = attn.q_proj(hidden).view(b, T, -1, d).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, T, -1, d).transpose(1, 2)
    v = attn.v_proj(hidden).view(b, T, -1, d).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *rope)
    heads, kv_heads = q.shape[1], k.shape[1]
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    log_z2 = torch.logsumexp(scores, dim=-1)
    heads_out = torch.softmax(scores, dim=-1) @ v
    return heads_out.transpose(1, 2), q, log_z2


CONFIGS = {
    "per-head": MimicConfig(),
    "per-layer": MimicConfig(per_head=False),
    "constant": MimicConfig(query_dependent=False),
    "layer-1-only": MimicConfig(layers=[1]),
    "mlp": MimicConfig(insert="mlp"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hooked_attention_adds_the_learned_shift_by_hand(name):
    config = CONFIGS[name]
    model = tiny_idefics2(layers=2, heads=4, kv_heads=2, hidden=32)
    _, inputs, _ = random_icl_batch(model, pad=True, seed=6)
    assert (inputs["attention_mask"] == 0).any()
    shift = mimic.attach(model, config)
    with torch.no_grad():  # large, distinct values per layer and head so every term shows
        shift.v.normal_(0, 1.0)
        shift.b.normal_(0, 1.0)
        if shift.w is not None:
            shift.w.normal_(0, 0.5)
    seen, hooks = capture_layers(model, [0, 1])
    with torch.no_grad():
        model(**inputs)
        for hook in hooks:
            hook.remove()
        real = inputs["attention_mask"].bool()  # compare at real positions only
        for layer in (0, 1):
            attn = model.model.text_model.layers[layer].self_attn
            heads_out, q, log_z2 = attention_by_hand(attn, seen[layer]["hidden"], seen[layer]["rope"],
                                                     inputs["attention_mask"])
            if layer in shift.config.layers:
                row = shift.config.layers.index(layer)
                if config.query_dependent and config.per_head:
                    log_z1 = torch.einsum("bhtd,hd->bht", q, shift.w[row]) + shift.b[row][None, :, None]
                    mu = torch.sigmoid(log_z1 - log_z2)
                elif config.query_dependent:
                    log_z1 = torch.einsum("bhtd,hd->bt", q, shift.w[row]) + shift.b[row, 0]
                    mu = torch.sigmoid(log_z1 - log_z2.mean(dim=1))[:, None, :].expand_as(log_z2)
                else:
                    mu = torch.sigmoid(shift.b[row])[None, :, None].expand_as(log_z2)
                delta = mu.transpose(1, 2)[..., None] * shift.v[row][None, None]  # [b, T, H, d]
            else:
                delta = torch.zeros_like(heads_out)
            flat = lambda x: x.reshape(*x.shape[:2], -1)  # noqa: E731
            if config.insert == "attn":
                want_attn = attn.o_proj(flat(heads_out + delta))
                want_mlp = None
            else:
                want_attn = attn.o_proj(flat(heads_out))
                mlp = model.model.text_model.layers[layer].mlp
                want_mlp = mlp(seen[layer]["mlp_in"]) + flat(delta)
            assert delta.abs()[real].max() > 0.05 or layer not in shift.config.layers
            err = (seen[layer]["attn_out"] - want_attn).abs()[real].max().item()
            assert err < 1e-5, (layer, err)
            if want_mlp is not None:
                err = (seen[layer]["mlp_out"] - want_mlp).abs()[real].max().item()
                assert err < 1e-5, (layer, err)
    mimic.detach(model)


def test_generation_views_follow_parameters_given_new_storage():
    """Without autograd the per-layer views are cached; after .double() (new storage) they must be the
    new parameters' views, equal to plain views, not the stale float32 ones."""
    shift = MimicShift(MimicConfig(), 2, 2, 3)
    with torch.no_grad():
        first = shift._layer(1)
        assert first[0].data_ptr() == shift.v[1].data_ptr() and shift._layer(1) is first  # made once, reused
        shift.double()
        v, w, b = shift._layer(1)
        fresh = shift._views(1)
    assert v.dtype == w.dtype == b.dtype == torch.float64
    assert v.data_ptr() == fresh[0].data_ptr() and w.data_ptr() == fresh[1].data_ptr() and torch.equal(b, fresh[2])
