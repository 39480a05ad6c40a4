"""Public API: attach MimIC to a model, detach it, save and load the shift.

    shift = mimic.attach(model, MimicConfig())
    ...train shift.parameters()...
    mimic.save(shift, "ckpt/")
    mimic.detach(model)
    mimic.load(model, "ckpt/")
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from mimic.adapters import ADAPTERS, ModelAdapter, adapter_for
from mimic.attention import BASES, PREFIX, ShiftTarget, add_pending_shift, register
from mimic.checkpoint_files import CONFIG_FILE, how_to_fix, read_doc, read_weights, write_checkpoint
from mimic.compat import dry_run, probe_ids, reference_forward, refusal_reason
from mimic.config import MimicConfig
from mimic.errors import IntegrityError
from mimic.shift import MimicShift


@dataclass
class Attachment:
    config: MimicConfig
    shift: nn.Module
    adapter: ModelAdapter
    modules: list[nn.Module]
    previous_impl: list[tuple[object, str]]
    hooks: list = field(default_factory=list)
    frozen: list[nn.Parameter] = field(default_factory=list)


def attachment(model: nn.Module) -> Attachment | None:
    return model.__dict__.get("_mimic")


def _complete(config: MimicConfig, model: nn.Module, adapter: ModelAdapter) -> MimicConfig:
    shapes = adapter.shapes(model)
    layers = config.layers if config.layers is not None else list(range(shapes["num_layers"]))
    bad = [i for i in layers if not 0 <= i < shapes["num_layers"]]
    if bad:
        raise ValueError(f"MimicConfig.layers {bad} out of range: the model has {shapes['num_layers']} decoder layers")
    if config.insert == "mlp" and shapes["num_heads"] * shapes["head_dim"] != shapes["hidden_size"]:
        raise ValueError("insert='mlp' needs num_heads * head_dim == hidden_size; this model differs, use 'attn'")
    return replace(
        config,
        layers=layers,
        base_model=config.base_model or getattr(model.config, "_name_or_path", None) or None,
        model_type=model.config.model_type,
        num_layers=shapes["num_layers"],
        num_heads=shapes["num_heads"],
        head_dim=shapes["head_dim"],
    )


def attach(
    model: nn.Module,
    config: MimicConfig | None = None,
    shift: nn.Module | None = None,
    freeze_base: bool = True,
    verify: bool = True,
) -> nn.Module:
    """Patch ``model`` in place; return the shift module (the only trainable parameters).

    ``shift`` replaces the learned :class:`MimicShift` by any callable module with the
    same signature (the exactness oracle uses this).

    Models whose attention MimIC's split does not describe (attention sinks, ALiBi, a
    relative position bias) are refused before anything changes. With ``verify`` (the
    default) ``attach`` then proves itself on a few token ids: one forward before and one
    after patching, with a zero shift that counts its calls; if a targeted attention
    module never calls it, or the outputs move, the model is detached again and a
    one-line ``RuntimeError`` names the module and the reason. ``verify=False`` skips
    the two tiny forwards for callers that already know the model works.
    """
    if attachment(model) is not None:
        raise RuntimeError("MimIC is already attached to this model; call mimic.detach(model) first")
    check_supported(model)
    register()
    adapter = adapter_for(model)
    config = _complete(config or MimicConfig(), model, adapter)
    if shift is None:
        shift = MimicShift(config, len(config.layers), config.num_heads, config.head_dim)
        param = next(model.parameters())
        shift.to(param.device)
    if verify:
        probe = _probe_inputs(model, adapter)
        training = [(m, m.training) for m in model.modules()]
        model.eval()
        reference = reference_forward(model, probe)
    modules, previous, hooks, targets, names = [], [], [], [], []
    for row, layer in enumerate(config.layers):
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
        attn.__dict__["_mimic_target"] = target = ShiftTarget(shift, row, config.insert)
        modules.append(attn)
        targets.append(target)
        names.append(f"{adapter.layers_path}.{layer}.{adapter.attn_name}")
        if config.insert == "mlp":
            mlp = adapter.mlp(model, layer)
            mlp.__dict__["_mimic_target"] = target
            modules.append(mlp)
            hooks.append(mlp.register_forward_hook(add_pending_shift, prepend=True))
    frozen = []
    if freeze_base:
        frozen = [p for p in model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
    model.__dict__["_mimic"] = Attachment(config, shift, adapter, modules, previous, hooks, frozen)
    if verify:
        try:
            dry_run(model, probe, reference, targets, names)
        except RuntimeError:
            detach(model)
            raise
        finally:
            for module, mode in training:
                module.training = mode
    return shift


def check_supported(model: nn.Module) -> None:
    """Refuse, in one line, a model whose attention the split of softmax attention does not describe."""
    reason = refusal_reason(model, ADAPTERS.get(getattr(model.config, "model_type", None)))
    if reason is not None:
        raise ValueError(f"MimIC cannot attach to {model.config.model_type!r}: its attention {reason}")


def _probe_inputs(model: nn.Module, adapter: ModelAdapter) -> dict:
    """A few ordinary token ids, no images: the input of ``attach``'s dry run."""
    ids = probe_ids(model, adapter.text_config(model))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if adapter.text_only_inputs is not None:
        inputs.update(adapter.text_only_inputs(model, ids))
    return inputs


def detach(model: nn.Module) -> nn.Module | None:
    """Undo ``attach``: the model computes exactly what it computed before. Returns the shift."""
    att = model.__dict__.pop("_mimic", None)
    if att is None:
        return None
    for hook in att.hooks:
        hook.remove()
    for module in att.modules:
        module.__dict__.pop("_mimic_target", None)
    for cfg, impl in att.previous_impl:
        cfg._attn_implementation_internal = impl
    for p in att.frozen:
        p.requires_grad_(True)
    return att.shift


@contextmanager
def disabled(model: nn.Module):
    """Run the attached model without its shift (e.g. the online ICL teacher), then re-enable it."""
    att = attachment(model)
    targets = [m.__dict__["_mimic_target"] for m in att.modules] if att else []
    for t in targets:
        t.enabled = False
    try:
        yield model
    finally:
        for t in targets:
            t.enabled = True


def save(shift: MimicShift, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``mimic.safetensors`` and ``mimic_config.json`` into directory ``path`` (atomically).

    Refuses non-finite weights. The config records the weights' sha256 (``extra.weights_sha256``),
    which :func:`load` verifies, and ``metadata`` (e.g. the settings that made the checkpoint).
    """
    doc = {"type": "mimic", **json.loads(shift.config.to_json())}
    doc["extra"] = {**doc.get("extra", {}), **(metadata or {})}
    return write_checkpoint(Path(path), shift.state_dict(), doc)


def read_config(path: str | os.PathLike) -> MimicConfig:
    path = Path(path)
    doc = read_doc(path)
    kind = doc.pop("type", "mimic")
    if kind != "mimic":
        raise ValueError(f"{path / CONFIG_FILE} holds a {kind!r} checkpoint, not MimIC's; load it with mimic.load")
    try:
        return MimicConfig.from_dict(doc)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{path / CONFIG_FILE}: not a MimIC config ({' '.join(str(exc).split())}); "
                             f"{how_to_fix(path / CONFIG_FILE)}") from None


def load(model: nn.Module, path: str | os.PathLike, freeze_base: bool = True, verify: bool = True) -> MimicShift:
    """Attach the checkpoint at ``path`` to ``model``; fails clearly if the shapes differ."""
    config = read_config(path)
    tensors = read_weights(Path(path), config.extra.get("weights_sha256"))
    adapter = adapter_for(model)
    have = adapter.shapes(model)
    want = {k: getattr(config, k) for k in ("num_layers", "num_heads", "head_dim")}
    mismatch = {k: (want[k], have[k]) for k in want if want[k] != have[k]}
    if mismatch:
        detail = ", ".join(f"{k} {a} in the checkpoint vs {b} in the model" for k, (a, b) in mismatch.items())
        raise ValueError(f"{path} was trained for {config.base_model or 'another model'} and does not fit: {detail}")
    shift = attach(model, config, freeze_base=freeze_base, verify=verify)
    expected = {k: tuple(v.shape) for k, v in shift.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        detach(model)
        raise ValueError(f"{path}: tensors {got} do not match the config's shapes {expected}")
    shift.load_state_dict(tensors)
    return shift


def count_parameters(config: MimicConfig) -> dict[str, int]:
    """Trainable parameters of a completed config, without building a model."""
    layers = len(config.layers) if config.layers is not None else config.num_layers
    heads, d = config.num_heads, config.head_dim
    v = layers * heads * d
    w = layers * heads * d if config.query_dependent else 0
    b = layers * (heads if config.per_head else 1)
    return {"v": v, "magnitude": w + b, "total": v + w + b}
