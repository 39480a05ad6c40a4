"""The attention hook (``mimic.shift.attention.mimic_attention``) called directly on real attention modules.

Each call is checked against an independent computation by hand: the scaled (soft-capped) scores of
every query head against its key head under the call's mask (or sdpa's causal flag), their log-sum-exp
(log Z2) and the attention output ``softmax(scores) @ values``. A recording shift shows what the hook
hands a shift (query, log Z2, the scores or the head outputs it asks for) and that its delta is added.
"""

from types import SimpleNamespace

import pytest
import torch
from transformers import Gemma2Config, MistralConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.gemma2.modeling_gemma2 import Gemma2Attention
from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_eager
from transformers.models.mistral.modeling_mistral import MistralAttention
from transformers.models.mistral.modeling_mistral import eager_attention_forward as mistral_eager

from mimic.shift import attention
from mimic.shift.attention import AttentionCall, ShiftTarget, _replicable, _sdpa_and_log_z2, mimic_attention

B, HEADS, Q, D = 2, 4, 5, 8  # head_dim differs from the head count and the query length


def mistral(kv_heads: int = 2) -> MistralAttention:
    config = MistralConfig(hidden_size=HEADS * D, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
                           head_dim=D, attention_dropout=0.0)
    return MistralAttention(config, layer_idx=0).eval()


def qkv(kv_heads: int = 2, q_len: int = Q, k_len: int = Q, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, HEADS, q_len, D, generator=g), torch.randn(B, kv_heads, k_len, D, generator=g),
            torch.randn(B, kv_heads, k_len, D, generator=g))


def padded_causal_mask(q_len: int = Q) -> torch.Tensor:
    """[b,1,q,k] boolean: causal, and batch row 1's first key hidden from its later queries (every row sees a key)."""
    mask = torch.ones(q_len, q_len).tril().bool().expand(B, 1, q_len, q_len).clone()
    mask[1, :, 1:, 0] = False
    return mask


def additive(mask: torch.Tensor) -> torch.Tensor:
    """The boolean mask as eager attention takes it: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.where(mask, 0.0, torch.finfo(torch.float32).min)


def by_hand(query, key, value, allowed, scaling, softcap=None):
    """(scores [b,H,q,k] with -inf where masked, log Z2 [b,H,q], output [b,q,H,d]) in float64."""
    groups = query.shape[1] // key.shape[1]
    k = key.double().repeat_interleave(groups, dim=1)
    v = value.double().repeat_interleave(groups, dim=1)
    scores = query.double() @ k.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores, torch.logsumexp(scores, -1), (torch.softmax(scores, -1) @ v).transpose(1, 2)


def causal(q_len: int = Q, k_len: int = Q) -> torch.Tensor:
    return torch.ones(q_len, k_len).tril().bool().expand(B, 1, q_len, k_len)


def everything(q_len: int = Q, k_len: int = Q) -> torch.Tensor:
    return torch.ones(B, 1, q_len, k_len, dtype=torch.bool)


class Recorder(torch.nn.Module):
    """A shift that records what the hook hands it and returns ``delta`` everywhere."""

    def __init__(self, delta: float = 0.0, needs_scores: bool = False, needs_output: bool = False):
        super().__init__()
        self.delta, self.needs_scores, self.needs_output, self.calls = delta, needs_scores, needs_output, []

    def forward(self, row, query, log_z2, call):
        self.calls.append(SimpleNamespace(row=row, query=query, log_z2=log_z2, call=call))
        return torch.full_like(query, self.delta)


class AddsInPlace(Recorder):
    """A shift with the in-place ``add_to`` path (as MimicShift has): the hook must use it for insert='attn'."""

    def add_to(self, row, out, query, log_z2):
        self.calls.append(SimpleNamespace(row=row, query=query, log_z2=log_z2, call="add_to"))
        return out + 2 * self.delta


def hooked(module, shift, insert="attn", row=1):
    module.__dict__["_mimic_target"] = target = ShiftTarget(shift, row, insert)
    return target


def close(a, b, atol=1e-5):
    return torch.allclose(a.double(), b.double(), atol=atol)


@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_without_an_active_target_the_hook_is_the_base_attention_with_every_argument(base):
    """No target, or a disabled one: the base function itself, given dropout, scaling and the kwargs."""
    module = mistral()
    base_fn = sdpa_attention_forward if base == "sdpa" else mistral_eager
    query, key, value = qkv()
    module.train(base == "eager")  # eager drops out only in training; sdpa whenever dropout > 0
    for target in (None, False):
        if target is False:
            hooked(module, Recorder(delta=1.0)).enabled = False
        torch.manual_seed(3)
        expected = base_fn(module, query, key, value, None, scaling=0.3, dropout=0.5, is_causal=False)[0]
        torch.manual_seed(3)
        got = mimic_attention(module, query, key, value, None, 0.3, 0.5, base=base, is_causal=False)[0]
        assert torch.equal(got, expected)
        torch.manual_seed(3)
        assert not torch.equal(base_fn(module, query, key, value, None, scaling=0.3, is_causal=False)[0], expected)


def test_a_shift_that_needs_scores_gets_the_base_call_with_every_argument():
    """The oracle's path calls sdpa itself: the same dropout, scaling and ``is_causal`` as without a shift."""
    module = mistral()
    query, key, value = qkv()
    hooked(module, Recorder(needs_scores=True))
    torch.manual_seed(4)
    expected = sdpa_attention_forward(module, query, key, value, None, scaling=0.3, dropout=0.5, is_causal=False)[0]
    torch.manual_seed(4)
    assert torch.equal(mimic_attention(module, query, key, value, None, 0.3, 0.5, base="sdpa", is_causal=False)[0],
                       expected)


# (base, needs_scores, scaling, mask, how sdpa learns the call is not causal)
CASES = {
    "sdpa-fast-gqa-mask": ("sdpa", False, 0.3, "bool", None),
    "sdpa-fast-causal-flag": ("sdpa", False, None, None, None),
    "sdpa-scores-default-scale-kwarg": ("sdpa", True, None, None, "kwarg"),
    "sdpa-scores-module-flag": ("sdpa", True, 0.3, None, "module"),
    "sdpa-scores-mask": ("sdpa", True, 0.3, "bool", None),
    "eager-no-mask": ("eager", False, 0.3, None, None),  # models' eager functions always get a scale
    "eager-mask": ("eager", False, 0.3, "float", None),
    "eager-scores": ("eager", True, 0.3, "float", None),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_shift_gets_log_z2_of_the_attention_used_and_its_delta_is_added(case):
    base, needs_scores, scaling, mask_kind, not_causal = case
    module = mistral()
    query, key, value = qkv()
    shift = Recorder(delta=0.25, needs_scores=needs_scores)
    hooked(module, shift)
    kwargs = {"is_causal": False} if not_causal == "kwarg" else {}
    if not_causal == "module":
        module.is_causal = False
    mask = padded_causal_mask() if mask_kind else None
    if mask is not None:
        allowed = mask
    elif base == "sdpa" and not not_causal:
        allowed = causal()  # sdpa's is_causal flag (transformers skips the mask)
    else:
        allowed = everything()  # eager without a mask, or sdpa told the call is not causal
    scale = scaling if scaling is not None else D**-0.5
    scores, log_z2, out = by_hand(query, key, value, allowed, scale)
    attention_mask = additive(mask) if mask_kind == "float" else mask
    got, _ = mimic_attention(module, query, key, value, attention_mask, scaling, base=base, **kwargs)
    (seen,) = shift.calls
    assert seen.row == 1 and seen.query is query
    assert seen.log_z2.shape == (B, HEADS, Q) and close(seen.log_z2, log_z2)
    assert got.shape == (B, Q, HEADS, D) and close(got, out + 0.25)
    if needs_scores:
        assert isinstance(seen.call, AttentionCall) and seen.call.value is value
        assert close(torch.softmax(seen.call.scores.double(), -1), torch.softmax(scores, -1))
        assert close(torch.where(allowed, seen.call.scores.double(), 0.0), torch.where(allowed, scores, 0.0))
    else:
        assert seen.call is None


def test_eager_attention_with_a_softcap_gives_log_z2_of_the_capped_scores():
    """Gemma 2 caps its scores (tanh(s / c) * c) inside its eager attention: log Z2 must be of the capped ones."""
    config = Gemma2Config(hidden_size=HEADS * D, num_attention_heads=HEADS, num_key_value_heads=2, head_dim=D,
                          attn_logit_softcapping=0.5, query_pre_attn_scalar=D)
    module = Gemma2Attention(config, layer_idx=0).eval()
    query, key, value = qkv(seed=1)
    query = query * 4  # scores well beyond the cap
    mask = padded_causal_mask()
    for needs_scores in (False, True):
        shift = Recorder(needs_scores=needs_scores)
        hooked(module, shift)
        got, _ = mimic_attention(module, query, key, value, additive(mask), 0.3, base="eager", softcap=0.5)
        scores, log_z2, out = by_hand(query, key, value, mask, 0.3, softcap=0.5)
        assert close(got, out) and close(shift.calls[0].log_z2, log_z2)
        uncapped = by_hand(query, key, value, mask, 0.3)[1]
        assert not close(uncapped, log_z2, atol=1e-2)
        assert torch.equal(got, gemma2_eager(module, query, key, value, additive(mask), scaling=0.3, softcap=0.5)[0])


@pytest.mark.parametrize(("base", "scaling"), [("sdpa", 0.3), ("sdpa", None), ("eager", 0.3)])
def test_a_shift_that_needs_output_gets_the_base_head_outputs_and_the_scale(base, scaling):
    module = mistral()
    query, key, value = qkv()
    plain, _ = mimic_attention(module, query, key, value, None, scaling, base=base)  # no target yet
    for needs_scores in (False, True):
        shift = Recorder(delta=0.5, needs_output=True, needs_scores=needs_scores)
        hooked(module, shift)
        got, _ = mimic_attention(module, query, key, value, None, scaling, base=base)
        call = shift.calls[0].call
        assert call.output.shape == (B, HEADS, Q, D) and torch.equal(call.output, plain.transpose(1, 2))
        assert call.scaling == (0.3 if scaling is not None else D**-0.5)
        assert (call.scores is not None) == needs_scores and (call.value is value) == needs_scores
        assert torch.equal(got, plain + 0.5)


def test_insert_attn_uses_the_shifts_in_place_add_and_insert_mlp_leaves_it_pending():
    module = mistral()
    query, key, value = qkv()
    plain, _ = mimic_attention(module, query, key, value, None, 0.3, base="sdpa")
    shift = AddsInPlace(delta=0.5)
    hooked(module, shift)
    got, _ = mimic_attention(module, query, key, value, None, 0.3, base="sdpa")
    assert [c.call for c in shift.calls] == ["add_to"] and torch.equal(got, plain + 1.0)
    shift = AddsInPlace(delta=0.5, needs_output=True)  # a call to hand over: the plain path
    hooked(module, shift)
    got, _ = mimic_attention(module, query, key, value, None, 0.3, base="sdpa")
    assert isinstance(shift.calls[0].call, AttentionCall) and torch.equal(got, plain + 0.5)
    shift = AddsInPlace(delta=0.5)
    target = hooked(module, shift, insert="mlp")
    got, _ = mimic_attention(module, query, key, value, None, 0.3, base="sdpa")
    assert shift.calls[0].call is None and torch.equal(got, plain)
    assert torch.equal(target.pending, torch.full((B, Q, HEADS, D), 0.5))


class NoEager(torch.nn.Module):
    """An attention module whose model file (this test file) has no eager_attention_forward."""


def test_eager_without_the_model_files_eager_function_fails_naming_the_module():
    with pytest.raises(RuntimeError) as err:
        mimic_attention(NoEager(), *qkv(), None, base="eager")
    assert str(err.value) == "NoEager: its model file has no eager_attention_forward; use sdpa"


def sdpa_both(module, query, key, value, mask, **kwargs):
    """(transformers' sdpa forward, the hook's replica with its log Z2)."""
    expected = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3, **kwargs)[0]
    got, weights, log_z2 = _sdpa_and_log_z2(module, query, key, value, mask, 0.3, 0.0, **kwargs)
    assert weights is None
    return expected, got, log_z2


@pytest.mark.parametrize("how", ["kwarg", "module", "no-attribute"])
def test_the_sdpa_replica_takes_is_causal_as_transformers_does(how):
    """``is_causal`` from the call, else the module's attribute, else causal; bit-equal to sdpa's forward."""
    module = mistral(kv_heads=HEADS) if how != "no-attribute" else torch.nn.Module()
    query, key, value = qkv(kv_heads=HEADS)
    kwargs = {"is_causal": False} if how == "kwarg" else {}
    if how == "module":
        module.is_causal = False
    expected, got, log_z2 = sdpa_both(module, query, key, value, None, **kwargs)
    allowed = causal() if how == "no-attribute" else everything()
    assert torch.equal(got, expected) and close(log_z2, by_hand(query, key, value, allowed, 0.3)[1])


def test_the_sdpa_replica_decodes_with_a_per_head_mask_under_grouped_keys():
    """One query, GQA and a mask: the query (and a per-head mask) are packed as transformers packs them."""
    module = mistral(kv_heads=2)
    query, key, value = qkv(kv_heads=2, q_len=1, k_len=6)
    mask = torch.ones(B, HEADS, 1, 6, dtype=torch.bool)
    mask[0, 1, 0, :3] = False
    mask[1, 3, 0, 5] = False
    expected, got, log_z2 = sdpa_both(module, query, key, value, mask)
    assert torch.equal(got, expected) and close(log_z2, by_hand(query, key, value, mask, 0.3)[1])


def test_the_sdpa_replica_crops_an_empty_static_cache_to_the_queries(monkeypatch):
    """Prefill into a longer (empty) static cache: the kernel gets only the first q keys, as in transformers."""
    module = mistral(kv_heads=HEADS)
    q_len = D + 1  # the head dimension is not above the query count
    query, key, value = qkv(kv_heads=HEADS, q_len=q_len, k_len=q_len + 3)
    seen = []
    real = attention.sdpa_with_log_z2
    monkeypatch.setattr(attention, "sdpa_with_log_z2", lambda q, k, *args: seen.append(k.shape) or real(q, k, *args))
    expected, got, log_z2 = sdpa_both(module, query, key, value, None)
    assert seen == [(B, HEADS, q_len, D)]
    assert torch.equal(got, expected)
    assert close(log_z2, by_hand(query, key[:, :, :q_len], value[:, :, :q_len], causal(q_len, q_len), 0.3)[1])


def test_replicable_only_without_position_bias_softcap_npu_tracing_or_compiling(monkeypatch):
    query = qkv()[0]
    assert _replicable(query, {"position_bias": None, "softcap": None})
    assert not _replicable(query, {"position_bias": torch.zeros(1)})
    assert not _replicable(query, {"softcap": 30.0})
    assert not _replicable(SimpleNamespace(device=SimpleNamespace(type="npu")), {})
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not _replicable(query, {})
