"""STAVE (Ding, Shi, Zhang, arXiv 2610.07572, "Two Vectors Replace In-Context Demos: Structured Task
Adaptation via Embeddings"): two learned vectors added to the input embeddings.

Eq. 2: the prompt ``p``'s input embeddings ``E(p)`` [T, d] (after image expansion: in an LMM the merged
text and image embeddings the decoder receives) become

    E~(p, W) = E(p) + H(p) W,    H_tr(p) = 1{a(s_t(p)) = r} / sqrt(N_r(p))   (0 where N_r(p) = 0)

with ``W`` [2, d] = (readout, context) and ``N_r(p)`` the number of the prompt's tokens given vector
``r``. Readout tokens: LAST (the final prompt token, which predicts the first answer token) and
ANSWER-CUE (the template tokens that introduce the answer before it, e.g. ``Short answer:``);
context tokens: every other eligible token (FIRST, the image delimiters, the query image's expanded
embeddings, the question text, the instruction prefix). Excluded (no update): padding, the BOS,
the answer tokens, generated tokens and the demonstrations' tokens, except FIRST (the first non-BOS
token) when a VQA prompt without instruction starts with a demonstration (Appendix C.1; in captions
FIRST is the first query-text token instead, which by the paper's precedence LAST > FIRST >
ANSWER-CUE takes the context vector). At ``W = 0`` the model is exactly the zero-shot model.

Eqs. 5-6, paired supervision: for each training query, the answer CE on the prompt with its
demonstrations (source) and without (target), each averaged over the answer's tokens then over the
queries, summed with weights 1:1 (``train: {ce_weight: 1, icl_ce_weight: 1, ce_mean: answers}``).
Both branches of a batch contribute before each optimiser step. ``W`` starts at zero, in float32.

Where it enters (Sec. 3.4): the decoder's input, i.e. the ``inputs_embeds`` the model hands its language
decoder (merged text and image embeddings: Idefics2/3, LLaVA, Qwen-VL, Gemma 3), or the output of
``get_input_embeddings()`` where the decoder embeds the ids itself (text-only models; Idefics v1,
whose images are cross-attended, before its first gated cross-attention); once, in the demo-free
prefill; generated tokens (decoding steps that extend a KV cache) receive no update (the paper:
"Generated embeddings receive no update"). In a prefill the hook finds the groups itself: every real
non-BOS token is context but the readout span, the last prompt token and, when the prompt ends
with them, the ``answer_cue`` tokens recorded before training (:meth:`Stave.prepare`, from the
prompt format). In a teacher-forced training forward the training loop says where each part of
the prompt lies (:class:`mimic.data.batches.Layout`, through :meth:`Stave.scope`).

Inferred choices and deviations (docs/deviations.md, "STAVE"): the source prompt holds the
teacher's ``k`` demonstrations of the epoch's draw from the support pool (the paper: one on OK-VQA,
eight on COCO, one to eight on VQAv2, from the training pool); the template spans are found by
token ids (the answer cue as the tokens the format's text after the question adds), not by the
released code's template metadata; a prompt that does not end with the recorded cue (another
format) gives the readout vector to its last token alone.

Hyper-parameters (App. F.2, Table 1 protocol, Idefics2-8b-base): 5 epochs, AdamW lr 1e-3 (or 3e-3),
weight decay 1e-3, cosine with 10% warmup, K = 4 paired queries per step (params.yaml ``stave``).

Parameters: ``2 d`` (8,192 at d = 4096: the paper's "0.008M").
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import reduce

import torch
from torch import nn

from mimic.methods.base import Installed, Method, Switch, register
from mimic.models.adapters import ModelShapes, complete_for

NONE, READOUT, CONTEXT = 0, 1, 2  # a token's group: no update, the readout vector, the context vector


@dataclass
class StaveConfig(ModelShapes):
    """answer_cue: the token ids of the readout span before and including the last prompt token (ANSWER-CUE
    and LAST), recorded from the prompt format before training (None: the last token alone)."""

    answer_cue: list[int] | None = None

    def __post_init__(self) -> None:
        cue = self.answer_cue
        if cue is not None and (not cue or not all(isinstance(i, int) for i in cue)):
            raise ValueError(f"StaveConfig.answer_cue={self.answer_cue!r} is not valid; use a non-empty list of "
                             "token ids or null")


class StaveVectors(nn.Module):
    """``vectors`` [2, hidden]: the readout (row 0) and context (row 1) vectors, ``W`` of Eq. 2.

    ``groups`` [b, n] (:data:`READOUT`, :data:`CONTEXT` or :data:`NONE` per position), when set, is
    where they go in the next forwards (a teacher-forced batch); None: found from the prefill itself.
    """

    def __init__(self, config: StaveConfig):
        super().__init__()
        self.config = config
        self.vectors = nn.Parameter(torch.zeros(2, config.hidden_size, dtype=torch.float32))
        self.groups: torch.Tensor | None = None

    def delta(self, groups: torch.Tensor) -> torch.Tensor:
        """``H(p) W`` [b, n, hidden] in float32: each vector divided by the square root of its row's token count."""
        out = None
        for r, group in enumerate((READOUT, CONTEXT)):
            mask = (groups == group)
            scale = torch.sqrt(mask.sum(1).clamp_min(1).double()).reciprocal().float()  # 1 / sqrt(N_r), rounded once
            vector = self.vectors[r].to(groups.device)
            term = mask[..., None].float() * (scale[:, None, None] * vector)
            out = term if out is None else out + term
        return out

    def forward(self, embeds: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(embeds.dtype, torch.float32)
        return (embeds.to(dtype) + self.delta(groups.to(embeds.device))).to(embeds.dtype)


def readout_length(ids: list[int], cue: list[int] | None) -> int:
    """How many trailing tokens of a prompt ``ids`` (ending at its last prompt token) take the readout vector."""
    if cue and len(ids) >= len(cue) and ids[-len(cue):] == list(cue):
        return len(cue)
    return 1


def prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, bos_token_id: int | None,
                  cue: list[int] | None) -> torch.Tensor:
    """The groups of a demo-free prompt batch in its prefill: real non-BOS tokens are context but the readout
    span (the last real token and, where the row ends with it, the cue)."""
    b, n = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    groups = torch.where(mask, CONTEXT, NONE)
    for i in range(b):
        real = mask[i].nonzero().flatten().tolist()
        if not real:
            continue
        if bos_token_id is not None and int(input_ids[i, real[0]]) == bos_token_id:
            groups[i, real[0]] = NONE
            real = real[1:]
        if not real:
            continue
        ids = input_ids[i, real].tolist()
        r = min(readout_length(ids, cue), len(real))
        groups[i, real[-r:]] = READOUT
    return groups


def layout_groups(layout, input_ids: torch.Tensor, cue: list[int] | None) -> torch.Tensor:
    """The groups of a teacher-forced batch whose parts ``layout`` (:class:`mimic.data.batches.Layout`) gives:
    instruction and query tokens are context but the readout span at the query's end; padding, BOS,
    demonstrations (but FIRST, see the module) and answers get nothing."""
    b, n = input_ids.shape
    groups = torch.full((b, n), NONE, dtype=torch.long)
    for i in range(b):
        start = layout.padding[i] + layout.bos[i]
        groups[i, start : start + layout.instruction[i]] = CONTEXT
        demos = start + layout.instruction[i]
        if layout.demonstrations[i] and not layout.instruction[i] and layout.kind != "caption":
            groups[i, demos] = CONTEXT  # FIRST: the first non-BOS token opens the first demonstration
        query = demos + layout.demonstrations[i]
        end = query + layout.query[i]
        if end + layout.answer[i] != n or layout.query[i] < 1:
            raise ValueError(f"row {i}: the layout {layout.row(i)} does not cover the {n} positions of the batch")
        groups[i, query:end] = CONTEXT
        r = min(readout_length(input_ids[i, query:end].tolist(), cue), layout.query[i])
        groups[i, end - r : end] = READOUT
    return groups


def answer_cue(loaded, data) -> list[int]:
    """The readout span of the task's zero-shot prompts: the tokens the format's text after the question (a
    caption's whole query text) adds to the prompt, LAST included (for captions without their first token:
    FIRST, a context token)."""
    fmt, kind = loaded.prompt_format, data.kind
    query = data.query("train", str(data.tables["train"]["id"].iloc[0]))
    bare = replace(fmt, vqa=fmt.vqa.split("{question}")[0] + "{question}", caption="")
    from mimic.models.prompts import build_prompt

    rows = []
    for f in (fmt, bare):
        enc = loaded.adapter.encode(loaded.processor, [build_prompt(kind, [], query, f, role="student")])
        rows.append(enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist())
    full, without = rows
    same = 0
    while same < min(len(full), len(without)) and full[same] == without[same]:
        same += 1
    cue = full[same:] or full[-1:]
    if kind == "caption" and len(cue) > 1:
        cue = cue[1:]
    return [int(i) for i in cue]


def _bos_token_id(model) -> int | None:
    generation = getattr(model, "generation_config", None)
    bos = getattr(generation, "bos_token_id", None)
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    return bos[0] if isinstance(bos, (list, tuple)) and bos else bos


def _continues(ids: torch.Tensor | None, kwargs: dict) -> bool:
    """Whether a forward extends a KV cache (a decoding step): the cache holds tokens, or the mask covers more
    positions than the inputs (transformers 5 names the cache ``cache``, earlier versions ``past_key_values``)."""
    for key in ("cache", "past_key_values"):
        past = kwargs.get(key)
        if past is not None and hasattr(past, "get_seq_length") and int(past.get_seq_length()) > 0:
            return True
    mask = kwargs.get("attention_mask")
    embeds = kwargs.get("inputs_embeds")
    n = ids.shape[1] if ids is not None else embeds.shape[1] if embeds is not None else None
    return mask is not None and n is not None and mask.dim() == 2 and mask.shape[1] > n


class Stave(Method):
    type = "stave"
    config_class = StaveConfig
    reads_layout = True

    def complete(self, config: StaveConfig, model) -> StaveConfig:
        return complete_for(config, model)

    def install(self, model, config: StaveConfig, module, verify: bool):
        from mimic.models.adapters import adapter_for

        vectors = module if module is not None else StaveVectors(config).to(next(model.parameters()).device)
        path = adapter_for(model).layers_path.rpartition(".")[0]
        decoder = reduce(getattr, path.split("."), model) if path else model
        embedding = model.get_input_embeddings()
        if embedding is None:
            raise TypeError(f"{type(model).__name__} has no input embeddings (get_input_embeddings()); STAVE adds "
                            "its vectors there")
        bos = _bos_token_id(model)
        installed, switch = Installed(), Switch()
        state = {"groups": None, "armed": False}

        def plan(mod, args, kwargs):
            """Top-level call: where the vectors go in this forward (None: a decoding step, or switched off)."""
            state["groups"], state["armed"] = None, False
            ids = kwargs.get("input_ids", args[0] if args else None)
            if not switch.on or _continues(ids, kwargs):
                return None
            if vectors.groups is not None:
                groups = vectors.groups
                shape = tuple(ids.shape) if ids is not None else None
                if shape is not None and tuple(groups.shape) != shape:
                    raise ValueError(f"STAVE: the groups set for this batch are {tuple(groups.shape)}, the inputs "
                                     f"{shape}")
            elif ids is not None:
                groups = prompt_groups(ids, kwargs.get("attention_mask"), bos, vectors.config.answer_cue)
            else:
                mask = kwargs.get("attention_mask")
                embeds = kwargs["inputs_embeds"]
                dummy = torch.full(embeds.shape[:2], -1, dtype=torch.long, device=embeds.device)
                groups = prompt_groups(dummy, mask, None, None)
            state["groups"] = groups
            return None

        def into_decoder(mod, args, kwargs):
            """The decoder's input: the merged embeddings handed to it, or (armed) those it embeds itself."""
            if state["groups"] is None:
                return None
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                state["armed"] = True
                return None
            kwargs["inputs_embeds"] = vectors(embeds, state["groups"])
            return args, kwargs

        def from_embedding(mod, args, output):
            if not state["armed"]:
                return output
            state["armed"] = False
            return vectors(output, state["groups"])

        def done(mod, args, kwargs, output):
            state["groups"], state["armed"] = None, False
            return output

        handles = [model.register_forward_pre_hook(plan, with_kwargs=True),
                   decoder.register_forward_pre_hook(into_decoder, with_kwargs=True),
                   embedding.register_forward_hook(from_embedding),
                   model.register_forward_hook(done, with_kwargs=True)]
        installed.undo += [h.remove for h in handles]
        installed.switches.append(switch.off)
        return vectors, installed

    def counts(self, config: StaveConfig) -> dict[str, int]:
        return {"trainable": 2 * config.hidden_size, "fitted": 0}

    def prepare(self, loaded, data, icd: dict, module: StaveVectors) -> None:
        """Record the answer cue of the task's prompts (unless the config gives one)."""
        if module.config.answer_cue is None:
            module.config.answer_cue = answer_cue(loaded, data)

    @contextmanager
    def scope(self, module: StaveVectors, layout):
        """Teacher-forced forwards of the batch whose parts ``layout`` (:class:`mimic.data.batches.Layout`) gives."""
        module.groups = layout_groups(layout, layout.ids, module.config.answer_cue).to(layout.ids.device)
        try:
            yield
        finally:
            module.groups = None


register(Stave())
