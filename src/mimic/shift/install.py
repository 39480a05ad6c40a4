"""Installing a shift into a model's decoder self-attention, and taking it out again.

:func:`install` points the text stack's attention implementation at MimIC's hook
(:mod:`mimic.shift.attention`) and marks each targeted self-attention module with a
:class:`~mimic.shift.attention.ShiftTarget`: which row of the shift it uses and where the shift
goes (``attn``: before ``o_proj``; ``mlp``: added to the layer's MLP output). Any module with
the shift's call signature can be installed: MimIC's learned :class:`~mimic.shift.module.MimicShift`,
HiFICL's virtual tokens, Function Vector's head capture, the exactness oracle.

Methods are attached through :func:`mimic.methods.attach` (the one public path); this module is
what the attention-interface methods call inside it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from mimic.models.adapters import ADAPTERS, ModelAdapter, adapter_for, complete_for
from mimic.shift.attention import BASES, PREFIX, ShiftTarget, add_pending_shift, register
from mimic.shift.compat import dry_run, probe_ids, reference_forward, refusal_reason
from mimic.shift.config import INSERT_POINTS, MimicConfig

SLOT = "_mimic_shift"  # where the installation record lives in model.__dict__


@dataclass
class Installation:
    """What :func:`install` changed, so that :func:`uninstall` can undo exactly that."""

    shift: nn.Module
    adapter: ModelAdapter
    layers: list[int]
    insert: str
    modules: list[nn.Module]
    previous_impl: list[tuple[object, str]]
    hooks: list = field(default_factory=list)


def installation(model: nn.Module) -> Installation | None:
    """The shift installed in ``model`` (None: none)."""
    return model.__dict__.get(SLOT)


def check_supported(model: nn.Module) -> None:
    """Refuse, in one line, a model whose attention the split of softmax attention does not describe."""
    reason = refusal_reason(model, ADAPTERS.get(getattr(model.config, "model_type", None)))
    if reason is not None:
        raise ValueError(f"MimIC cannot attach to {model.config.model_type!r}: its attention {reason}")


def complete(config: MimicConfig, model: nn.Module) -> MimicConfig:
    """``config`` with the model's layers and shapes filled in, as a checkpoint records them."""
    config = complete_for(config, model)
    if config.insert == "mlp" and config.num_heads * config.head_dim != config.hidden_size:
        raise ValueError("insert='mlp' needs num_heads * head_dim == hidden_size; this model differs, use 'attn'")
    return config


def install(model: nn.Module, shift: nn.Module, layers: list[int] | None = None, insert: str = "attn",
            verify: bool = True) -> Installation:
    """Install ``shift`` (called as ``shift(row, query, log_z2, call)``) on decoder ``layers`` (None: all).

    Row ``i`` of the shift serves ``layers[i]``. Attention MimIC's split does not describe
    (attention sinks, ALiBi, a relative position bias) is refused before anything changes. With
    ``verify`` (the default) the installation proves itself on a few token ids: one forward
    before and one after, with a zero shift that counts its calls; if a targeted attention
    module never calls it, or the outputs move, the shift is taken out again and a one-line
    ``RuntimeError`` names the module and the reason. ``verify=False`` skips the two tiny
    forwards for callers that already know the model works. The base model's parameters are
    left as they are (freezing is :func:`mimic.methods.attach`'s business).
    """
    if installation(model) is not None:
        raise RuntimeError("a shift is already installed in this model; call mimic.detach(model) first")
    if insert not in INSERT_POINTS:
        raise ValueError(f"insert={insert!r} is not valid; use one of {INSERT_POINTS}")
    check_supported(model)
    register()
    adapter = adapter_for(model)
    layers = list(range(len(adapter.decoder_layers(model)))) if layers is None else list(layers)
    if verify:
        probe = _probe_inputs(model, adapter)
        training = [(m, m.training) for m in model.modules()]
        model.eval()
        reference = reference_forward(model, probe)
    modules, previous, hooks, targets, names = [], [], [], [], []
    for row, layer in enumerate(layers):
        attn = adapter.attention(model, layer)
        cfg = attn.config
        impl = cfg._attn_implementation
        if impl.startswith(PREFIX):
            impl = impl[len(PREFIX) :]
        elif impl not in BASES:
            raise ValueError(f"MimIC needs the model's attention to be one of {BASES} (it is {impl!r}); "
                             "load the model with attn_implementation='sdpa'")
        if all(c is not cfg for c, _ in previous):
            previous.append((cfg, cfg._attn_implementation))
        cfg._attn_implementation_internal = PREFIX + impl
        attn.__dict__["_mimic_target"] = target = ShiftTarget(shift, row, insert)
        modules.append(attn)
        targets.append(target)
        names.append(f"{adapter.layers_path}.{layer}.{adapter.attn_name}")
        if insert == "mlp":
            mlp = adapter.mlp(model, layer)
            mlp.__dict__["_mimic_target"] = target
            modules.append(mlp)
            hooks.append(mlp.register_forward_hook(add_pending_shift, prepend=True))
    record = model.__dict__[SLOT] = Installation(shift, adapter, layers, insert, modules, previous, hooks)
    if verify:
        try:
            dry_run(model, probe, reference, targets, names)
        except RuntimeError:
            uninstall(model)
            raise
        finally:
            for module, mode in training:
                module.training = mode
    return record


def _probe_inputs(model: nn.Module, adapter: ModelAdapter) -> dict:
    """A few ordinary token ids, no images: the input of the dry run."""
    ids = probe_ids(model, adapter.text_config(model))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if adapter.text_only_inputs is not None:
        inputs.update(adapter.text_only_inputs(model, ids))
    return inputs


def uninstall(model: nn.Module) -> nn.Module | None:
    """Undo :func:`install`: the model computes exactly what it computed before. Returns the shift."""
    record = model.__dict__.pop(SLOT, None)
    if record is None:
        return None
    for hook in record.hooks:
        hook.remove()
    for module in record.modules:
        module.__dict__.pop("_mimic_target", None)
    for cfg, impl in record.previous_impl:
        cfg._attn_implementation_internal = impl
    return record.shift


@contextmanager
def switched_off(model: nn.Module):
    """Run the model without its installed shift (e.g. the online ICL teacher), then switch it back on."""
    record = installation(model)
    targets = [m.__dict__["_mimic_target"] for m in record.modules] if record else []
    for t in targets:
        t.enabled = False
    try:
        yield model
    finally:
        for t in targets:
            t.enabled = True


@contextmanager
def installed(model: nn.Module, shift: nn.Module, layers: list[int] | None = None, insert: str = "attn",
              verify: bool = True):
    """:func:`install` for the duration of a ``with`` block (a capture or patch pass), then :func:`uninstall`."""
    install(model, shift, layers, insert, verify)
    try:
        yield shift
    finally:
        uninstall(model)
