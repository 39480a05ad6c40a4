"""The exactness oracle: MimIC's insertion point, mask and log Z2 reproduce ICL exactly.

Softmax attention over [demonstrations; query] splits exactly into
``(1 - mu) SA(q,K,V) + mu SA(q,K_P,V_P)`` with ``mu = sigmoid(log Z1 - log Z2)``. If at
every layer and head the learned ``log_Z1_hat`` and ``v`` are replaced by the exact
``log Z1`` over the prefix keys and ``SA(q,K_P,V_P) - SA(q,K,V)`` (both read off the ICL
forward), the shifted zero-shot forward must reproduce the ICL hidden states at the
query positions. This module builds that oracle through the same hook code path.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from mimic.shift.install import installed


class _Capture(nn.Module):
    """Shift that records exact prefix terms during the ICL forward and adds nothing."""

    needs_scores = True  # the hook hands it the full masked scores and the values (AttentionCall)

    def __init__(self, query_lengths: list[int]):
        super().__init__()
        self.query_lengths = query_lengths
        self.log_z1: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}

    def forward(self, row, query, log_z2, call):
        b, heads, q_len, _ = query.shape
        scores = call.scores
        value = call.value.float().repeat_interleave(heads // call.value.shape[1], dim=1)
        log_z1 = torch.zeros(b, heads, q_len)
        v = torch.zeros(b, heads, q_len, value.shape[-1])
        k_len = scores.shape[-1]
        for i, n in enumerate(self.query_lengths):
            start = k_len - n  # the query's first key; keys before it are the prefix (or padding)
            prefix, own = scores[i, :, -n:, :start], scores[i, :, -n:, start:]
            log_z1[i, :, -n:] = torch.logsumexp(prefix, dim=-1)
            sa_prefix = torch.softmax(prefix, dim=-1) @ value[i, :, :start]
            sa_own = torch.softmax(own, dim=-1) @ value[i, :, start:]
            v[i, :, -n:] = sa_prefix - sa_own
        self.log_z1[row], self.v[row] = log_z1, v
        return torch.zeros_like(query, dtype=torch.float32)


class OracleShift(nn.Module):
    """Shift with the exact terms: ``sigmoid(log Z1 - log Z2) * (SA_P - SA_Q)``, right-aligned."""

    def __init__(self, log_z1: dict[int, torch.Tensor], v: dict[int, torch.Tensor]):
        super().__init__()
        self.log_z1, self.v = log_z1, v

    def forward(self, row, query, log_z2, call=None):
        q_len = query.shape[2]
        log_z1 = self.log_z1[row][:, :, -q_len:].to(query.device)
        mu = torch.sigmoid(log_z1 - log_z2)
        return mu[..., None] * self.v[row][:, :, -q_len:].to(query.device)


@torch.no_grad()
def build_oracle(model: nn.Module, icl_inputs: dict, query_lengths: list[int], layers=None) -> OracleShift:
    """Run the ICL forward once and read off the exact prefix terms of every patched layer.

    ``icl_inputs`` are left-padded model inputs whose row ``i`` ends with its query of
    ``query_lengths[i]`` tokens; everything before it in the row is the prefix.
    """
    capture = _Capture(query_lengths)
    with installed(model, capture, layers):
        model(**icl_inputs)
    return OracleShift(capture.log_z1, capture.v)


@torch.no_grad()
def exactness_errors(model: nn.Module, icl_inputs: dict, zero_shot_inputs: dict, query_lengths: list[int]):
    """Max |difference| to the ICL hidden states at the query positions, over every decoder layer.

    Returns ``(oracle_error, zero_shot_error)``: the MimIC-with-oracle zero-shot forward,
    and the plain zero-shot forward (how far apart ICL and zero-shot are to begin with).
    """
    from mimic.models.hidden_states import HiddenStateRecorder

    n = max(query_lengths)

    def states(inputs):
        with HiddenStateRecorder(model, "layer") as rec:
            rec.select(n)
            model(**inputs)
            return rec.stacked().float()

    reference = states(icl_inputs)
    zero_shot = states(zero_shot_inputs)
    with installed(model, build_oracle(model, icl_inputs, query_lengths)):
        shifted = states(zero_shot_inputs)

    def err(x):
        return max((x[:, i, -q:] - reference[:, i, -q:]).abs().max().item() for i, q in enumerate(query_lengths))

    return err(shifted), err(zero_shot)


def oracle_inputs(loaded, kind: str, queries, demos) -> tuple[dict, dict, list[int]]:
    """ICL and zero-shot inputs for the oracle through the family's processor, and the query lengths.

    Each ICL prompt is the demonstrations followed by the zero-shot prompt verbatim, so the
    zero-shot row is exactly the ICL row's suffix. With a BOS token that means ``... EOS BOS
    query``, the way pretraining packs documents: under RoPE a query token's score against
    the BOS depends on their distance, so the split is exact only if the BOS sits right
    before the query in both prompts (the EOS also keeps Idefics v1's BOS from attending
    the previous image). The teacher of training uses the natural prompt (one BOS).
    """
    from mimic.data.batches import common_suffix
    from mimic.models.prompts import build_prompt

    tok = loaded.tokenizer
    boundary = tok.eos_token + tok.bos_token if tok.bos_token_id is not None else ""
    fmt = replace(loaded.prompt_format, instructions={})  # the zero-shot prompt must be the ICL prompt's suffix
    icl_prompts, zs_prompts = [], []
    for query, query_demos in zip(queries, demos, strict=True):
        zero_shot = build_prompt(kind, [], query, fmt)
        prefix = build_prompt(kind, query_demos, query, fmt)[: -len(zero_shot)]
        prefix[-1] += boundary
        icl_prompts.append(prefix + zero_shot)
        zs_prompts.append(zero_shot)

    def encode(prompts):
        from mimic.models.generation import on_model

        return on_model(loaded, loaded.adapter.encode(loaded.processor, prompts))

    icl, zero_shot = encode(icl_prompts), encode(zs_prompts)
    lengths = zero_shot["attention_mask"].sum(1).tolist()
    for i, n in enumerate(lengths):
        shared = common_suffix(_tokens(icl, i), _tokens(zero_shot, i))
        if shared < n:
            raise ValueError(f"row {i}: the zero-shot prompt ({n} tokens) is not the suffix of the ICL prompt "
                             f"({shared} shared): the query tokenizes differently after the demonstrations")
    return icl, zero_shot, lengths


def _tokens(inputs: dict, i: int) -> list[int]:
    return inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()
