"""Whether MimIC can enter a model's attention, and the dry run that proves it did.

MimIC rests on the split of plain softmax attention over ``[demonstrations; query]``
(:mod:`mimic.shift.module`) and computes ``log Z2`` from the scaled scores ``q.k / sqrt(d)`` under
the attention mask. Three kinds of attention break that silently, so ``attach`` refuses
them up front:

- attention sinks (GPT-OSS' per-head ``sinks`` logit joins every softmax): ``Z2`` misses it;
- ALiBi (Bloom, MPT, Falcon with ``alibi``): a distance-dependent bias added to the scores;
- a learned relative position bias (T5 style ``relative_attention_bias``): the same.

Everything else is checked by running it: :func:`dry_run` feeds a few token ids through
the model once unpatched and once patched with a zero shift that counts its calls. Every
targeted attention module must call the shift, and the logits must not move; a module
that computes attention itself instead of calling transformers' attention interface, or
reads ``config._attn_implementation`` to decide how, fails one or the other.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

SINK_ATTRIBUTES = ("sinks",)
ALIBI_METHODS = ("build_alibi_tensor", "build_mpt_alibi_tensor")
RELATIVE_BIAS_ATTRIBUTES = ("relative_attention_bias",)


def _configs(model: nn.Module) -> list:
    config = model.config
    subs = [getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {}]
    return [config, *(c for c in subs if c is not None)]


def refusal_reason(model: nn.Module, adapter=None) -> str | None:
    """Why MimIC's split of softmax attention does not hold for this model's attention (None: it may).

    With the model's ``adapter`` only its text config and decoder layers are examined (a
    vision tower may do as it likes); without one, the whole model.
    """
    configs, scope = _configs(model), model
    if adapter is not None:
        # A misdescribed adapter (AttributeError, TypeError): examine everything; attach names the problem.
        with contextlib.suppress(AttributeError, TypeError):
            configs, scope = [adapter.text_config(model)], adapter.decoder_layers(model)
    for cfg in configs:
        attn_config = getattr(cfg, "attn_config", None)
        attn_alibi = attn_config.get("alibi") if isinstance(attn_config, dict) else getattr(attn_config, "alibi", None)
        if getattr(cfg, "alibi", False) is True or attn_alibi is True:
            return "adds an ALiBi position bias to the attention scores (config 'alibi')"
        if getattr(cfg, "relative_attention_num_buckets", None):
            return "adds a relative position bias to the attention scores (config 'relative_attention_num_buckets')"
    prefix = "" if scope is model else f"{adapter.layers_path}."
    for name, module in scope.named_modules():
        where = prefix + name if name else type(module).__name__
        for attr in SINK_ATTRIBUTES:
            if isinstance(getattr(module, attr, None), torch.Tensor):
                return f"has attention sinks ({where}.{attr}): an extra logit in every softmax that log Z2 would miss"
        if getattr(module, "use_alibi", False) is True:
            return f"adds an ALiBi position bias to the attention scores ({where}.use_alibi)"
        for attr in RELATIVE_BIAS_ATTRIBUTES:
            if getattr(module, attr, None) is not None:
                return f"adds a relative position bias to the attention scores ({where}.{attr})"
    for module in model.modules():  # the ALiBi tensor is built by the text model around the layers
        for method in ALIBI_METHODS:
            if hasattr(type(module), method):
                return f"adds an ALiBi position bias to the attention scores ({type(module).__name__}.{method})"
    return None


class CountingZeroShift(nn.Module):
    """Stands in for the shift during the dry run: adds nothing, counts calls per shift row."""

    def __init__(self, rows: int):
        super().__init__()
        self.calls = [0] * rows

    def forward(self, row, query, log_z2, call=None):
        self.calls[row] += 1
        return torch.zeros_like(query, dtype=torch.float32)


def probe_ids(model: nn.Module, text_config, n: int = 6) -> torch.Tensor:
    """``n`` ordinary token ids (no special, image or padding token named in the configs), shape [1, n]."""
    special = set()
    for cfg in _configs(model):
        for key, value in cfg.to_dict().items():
            if key.endswith(("token_id", "token_index", "token_ids")) and value is not None:
                special.update(value if isinstance(value, (list, tuple)) else [value])
    vocab = text_config.vocab_size
    ids = [i for i in range(vocab // 2, vocab) if i not in special][:n]
    device = next(model.parameters()).device
    return torch.tensor([ids], dtype=torch.long, device=device)


def _output(out) -> torch.Tensor:
    tensor = getattr(out, "logits", None)
    if tensor is None:
        tensor = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return tensor.float()


def tolerance(reference: torch.Tensor, dtype: torch.dtype) -> float:
    """How far patched logits at v = 0 may drift: a few rounding steps of the model's dtype."""
    return 8 * torch.finfo(dtype).eps * (1.0 + reference.abs().max().item())


@torch.no_grad()
def reference_forward(model: nn.Module, inputs: dict) -> torch.Tensor:
    return _output(model(**inputs))


@torch.no_grad()
def dry_run(model: nn.Module, inputs: dict, reference: torch.Tensor, targets: list, names: list[str]) -> None:
    """Run the patched model on ``inputs`` with a counting zero shift; raise one line on any failure.

    ``targets[i]`` is the ShiftTarget of the attention module called ``names[i]``; the
    unpatched output ``reference`` must come back unchanged.
    """
    probe = CountingZeroShift(max(t.row for t in targets) + 1)
    saved = [(t, t.shift) for t in targets]
    for t in targets:
        t.shift = probe
    try:
        out = _output(model(**inputs))
    except Exception as err:  # noqa: BLE001 - any failure of the patched forward is the finding
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RuntimeError(f"MimIC dry run failed: the patched forward raised {type(err).__name__}: {first}") from err
    finally:
        for t, shift in saved:
            t.shift = shift
            t.pending = None
    for t, name in zip(targets, names, strict=True):
        if probe.calls[t.row] == 0:
            raise RuntimeError(
                f"MimIC's attention hook never ran in {name}: the module does not call transformers' attention "
                "interface for config._attn_implementation (it may read that setting itself)"
            )
    drift = (out - reference).abs().max().item()
    dtype = next(model.parameters()).dtype
    if drift > tolerance(reference, dtype):
        raise RuntimeError(
            f"attaching MimIC changed the outputs at v = 0 (max |difference| {drift:.2e}): a module computes "
            f"differently once {names[0]}'s config names MimIC's attention (it may read config._attn_implementation)"
        )
