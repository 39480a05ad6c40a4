"""Checkpoints of every method, shaped like peft's: ``save_pretrained``, ``from_pretrained``, ``push_to_hub``.

A checkpoint directory holds ``mimic.safetensors`` (the method's tensors), ``mimic_config.json``
(its config, its ``type`` and ``extra`` metadata, the weights' sha256) and, unless told otherwise,
a ``README.md`` model card. :func:`from_pretrained` takes a local directory or a Hub repository
id, checks the files (:mod:`mimic.io.checkpoints`), then that the checkpoint was made for this
model: its shapes always, and its base model (name and ``model_type``) unless ``strict=False``.

    module = mimic.attach(model, MimicConfig())
    ...                                         # train it (mimic.train)
    mimic.save_pretrained(model, "ckpt/")       # or the module itself
    mimic.detach(model)
    mimic.from_pretrained(model, "ckpt/")       # or "user/repo" on the Hub
    mimic.push_to_hub(model, "user/repo", card={"task": "VQAv2", "scores": {"accuracy": 69.3}})
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from torch import nn

from mimic.errors import IntegrityError
from mimic.io.checkpoints import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    how_to_fix,
    read_doc,
    read_weights,
    write_checkpoint,
)
from mimic.methods.base import (
    METHODS,
    attach,
    attached,
    config_parts,
    count_parameters,
    detach,
    method_of,
)
from mimic.models.adapters import SHAPE_FIELDS

CARD_KEYS = ("task", "training_data", "scores")  # what a model card reports beside the config


def _module(model_or_module: nn.Module) -> nn.Module:
    """The method's module: given directly, or the one attached to a model."""
    att = attached(model_or_module)
    module = att.module if att is not None else model_or_module
    if getattr(module, "config", None) is None or type(module.config) not in {m.config_class for m in METHODS.values()}:
        raise TypeError("save_pretrained / push_to_hub take a model with a method attached (mimic.attach) "
                        "or the module mimic.attach returned")
    return module


def checkpoint_doc(config, metadata: dict | None = None) -> dict:
    """The JSON next to the weights: the method's ``type``, its config, and ``extra`` metadata."""
    doc = {"type": method_of(config).type, **json.loads(config.to_json())}
    doc["extra"] = {**(doc.get("extra") or {}), **(metadata or {})}
    return doc


def base_model_of(config) -> str | None:
    return next((p.base_model for p in config_parts(config) if getattr(p, "base_model", None)), None)


def model_type_of(config) -> str | None:
    return next((p.model_type for p in config_parts(config) if getattr(p, "model_type", None)), None)


def model_card(config, card: dict | None = None) -> str:
    """A Hub model card: YAML front matter (library, base model, tags), then what was trained on what."""
    card = card or {}
    kind, base = method_of(config).type, base_model_of(config)
    counts = count_parameters(config)
    front = ["---", "library_name: mimic-icl"]
    if base:
        front.append(f"base_model: {base}")
    front += ["tags:", "- mimic-icl", "- in-context-learning", f"- {kind}", "---", ""]
    rows = [("method", f"`{kind}`"), ("base model", f"`{base}`" if base else "unknown"),
            ("model type", f"`{model_type_of(config)}`"),
            ("trained parameters", f"{counts['trainable']:,}"), ("fitted values", f"{counts['fitted']:,}")]
    if card.get("task"):
        rows.append(("task", str(card["task"])))
    if card.get("training_data"):
        rows.append(("training data", str(card["training_data"])))
    for name, value in (card.get("scores") or {}).items():
        rows.append((f"score: {name}", f"{value:.2f}" if isinstance(value, float) else str(value)))
    body = [f"# {kind} for {base or 'a transformers model'}", "",
            "Trained with mimic-icl (MimIC, Jiang et al., CVPR 2025) so that the model answers a zero-shot query "
            "as if in-context demonstrations were in its prompt.", "", "| | |", "|---|---|",
            *(f"| {k} | {v} |" for k, v in rows), "", "```python", "import mimic", "",
            "model = ...  # the base model above, loaded with transformers (attn_implementation='sdpa')",
            "mimic.from_pretrained(model, '<this repository>')", "```", ""]
    return "\n".join(front + body)


def save_pretrained(model_or_module: nn.Module, directory: str | os.PathLike, metadata: dict | None = None,
                    card: dict | bool | None = None) -> Path:
    """Write the attached method (or ``module``) into ``directory``: weights, config, model card; atomically.

    Refuses non-finite tensors; the config records the weights' sha256, which :func:`from_pretrained`
    verifies. ``metadata`` goes into the config's ``extra``; ``card`` ({"task", "training_data",
    "scores"}) fills the model card, and ``card=False`` writes none.
    """
    module = _module(model_or_module)
    text = None if card is False else model_card(module.config, card if isinstance(card, dict) else None)
    return write_checkpoint(Path(directory), module.state_dict(), checkpoint_doc(module.config, metadata), text)


def read_config(path: str | os.PathLike):
    """The config saved in a checkpoint directory (any method; one without ``type`` is MimIC)."""
    path = Path(path)
    doc = read_doc(path)
    kind = doc.pop("type", "mimic")
    if kind not in METHODS:
        raise ValueError(f"{path / CONFIG_FILE}: unknown method type {kind!r}; known: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[kind].config_class.from_dict(doc)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{path / CONFIG_FILE}: not a {kind} config ({' '.join(str(exc).split())}); "
                             f"{how_to_fix(path / CONFIG_FILE)}") from None


def _name(name_or_path: str) -> str:
    """A model's name from a hub id or a local path: its last component, lower case."""
    return Path(str(name_or_path).rstrip("/")).name.lower()


def check_fits(config, model: nn.Module, path, strict: bool = True) -> None:
    """Refuse, in one line, a checkpoint made for another model.

    The shapes (layers, heads, head size, ...) must always agree. With ``strict`` the base model
    must too: the same ``model_type`` and, where both are known, the same name (a hub id and a
    local copy of it match by their last path component).
    """
    from mimic.models.adapters import adapter_for

    have = adapter_for(model).shapes(model)
    mismatch = {}
    for part in config_parts(config):
        for key in SHAPE_FIELDS:
            want = getattr(part, key, None)
            if want is not None and want != have[key]:
                mismatch[key] = (want, have[key])
    base = base_model_of(config)
    if mismatch:
        detail = ", ".join(f"{k} {a} in the checkpoint vs {b} in the model" for k, (a, b) in mismatch.items())
        raise ValueError(f"{path} was trained for {base or 'another model'} and does not fit: {detail}")
    if not strict:
        return
    model_type = model_type_of(config)
    name = getattr(model.config, "_name_or_path", "") or ""
    if model_type is not None and model_type != model.config.model_type:
        found = f"a {model.config.model_type!r} model"
    elif base and name and _name(base) != _name(name):
        found = f"{name!r}"
    else:
        return
    raise ValueError(f"{path} was trained on {base or model_type!r} ({model_type}), not on {found}; "
                     "from_pretrained(..., strict=False) loads it anyway")


def resolve(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint directory for ``source``: the directory itself, or a Hub repository downloaded."""
    path = Path(source)
    if path.exists() or os.path.isabs(str(source)) or str(source).startswith((".", "~")) or str(source).count("/") != 1:
        return path  # a local path (read_doc names what is missing)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(source), revision=revision,
                                      allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, CARD_FILE]))
    except Exception as err:  # noqa: BLE001 - the Hub's errors are many and long; one line names the source
        first = (str(err).strip().splitlines() or [""])[0]
        raise OSError(f"{source}: no such local directory, and the Hub repository could not be downloaded "
                      f"({type(err).__name__}: {first})") from None


def from_pretrained(model: nn.Module, source: str | os.PathLike, strict: bool = True, revision: str | None = None,
                    freeze_base: bool = True, verify: bool = True) -> nn.Module:
    """Attach the checkpoint at ``source`` (a directory or a Hub id; any method) to ``model``; return its module.

    Fails in one line, with nothing attached, when the files are damaged or the checkpoint was made
    for another model (:func:`check_fits`; ``strict=False`` skips the base-model check, not the shapes).
    """
    path = resolve(source, revision)
    config = read_config(path)
    check_fits(config, model, source, strict)
    tensors = read_weights(path, (getattr(config, "extra", None) or {}).get("weights_sha256"))
    module = attach(model, config, freeze_base=freeze_base, verify=verify)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        detach(model)
        raise ValueError(f"{source}: tensors {got} do not match the config's shapes {expected}")
    module.load_state_dict(tensors)
    return module


def push_to_hub(model_or_module: nn.Module, repo_id: str, card: dict | None = None, metadata: dict | None = None,
                private: bool | None = None, token: str | None = None, commit_message: str | None = None) -> str:
    """Upload the attached method (or ``module``) with its model card to Hub repository ``repo_id``; its URL."""
    from huggingface_hub import HfApi

    module = _module(model_or_module)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(module, tmp, metadata=metadata, card=card or {})
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp,
                                 commit_message=commit_message or f"Upload {method_of(module.config).type} checkpoint")
    return str(getattr(info, "repo_url", None) or f"https://huggingface.co/{repo_id}")
