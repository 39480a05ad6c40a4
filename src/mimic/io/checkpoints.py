"""The two files of a checkpoint directory, written and read with their integrity checks.

A checkpoint is ``mimic.safetensors`` (float32 tensors) beside ``mimic_config.json`` (the method's
config, its ``type`` and ``extra`` metadata). :func:`write_checkpoint` refuses non-finite tensors and
records the weights' sha256 in ``extra.weights_sha256``; :func:`read_weights` checks that sha256,
the safetensors format and finiteness, and every failure names the file and how to get it back.
Every method's checkpoint (:mod:`mimic.methods.pretrained`) goes through here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mimic.errors import IntegrityError
from mimic.io.atomic import atomic_write_text
from mimic.io.tensors import save_tensors

WEIGHTS_FILE = "mimic.safetensors"
CONFIG_FILE = "mimic_config.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def how_to_fix(file: Path) -> str:
    return f"restore it (`dvc checkout --force {file}`) or train the checkpoint again (`mimic train ...`)"


CARD_FILE = "README.md"


def write_checkpoint(path: Path, state: dict[str, torch.Tensor], doc: dict, card: str | None = None) -> Path:
    """Write ``state``, ``doc`` (config + ``extra``) and a model ``card`` into directory ``path``, atomically,
    file by file."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise IntegrityError(f"{path / WEIGHTS_FILE}: not written, tensors {broken} hold nan or inf")
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"})  # canonical bytes: same state, same file
    doc = {**doc, "extra": {**(doc.get("extra") or {}), "weights_sha256": sha256(path / WEIGHTS_FILE)}}
    atomic_write_text(path / CONFIG_FILE, json.dumps(doc, indent=2, sort_keys=True))
    if card is not None:
        atomic_write_text(path / CARD_FILE, card)
    return path


def read_doc(path: Path) -> dict:
    """The parsed ``mimic_config.json`` of checkpoint directory ``path`` (both files must exist)."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing: not a checkpoint directory written by "
                                    "mimic.save_pretrained")
    try:
        doc = json.loads((path / CONFIG_FILE).read_text())
    except ValueError as exc:
        raise IntegrityError(f"{path / CONFIG_FILE}: not JSON ({exc}); {how_to_fix(path / CONFIG_FILE)}") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{path / CONFIG_FILE}: not a config object; {how_to_fix(path / CONFIG_FILE)}")
    return doc


def read_weights(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after checking the recorded sha256, the format and finiteness."""
    weights = Path(path) / WEIGHTS_FILE
    if expected_sha256 is not None and sha256(weights) != expected_sha256:
        raise IntegrityError(f"{weights}: sha256 differs from the one {CONFIG_FILE} records (the file was changed "
                             f"or damaged); {how_to_fix(weights)}")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors' errors do not name the file
        raise IntegrityError(f"{weights}: not a readable safetensors file ({exc}); {how_to_fix(weights)}") from None
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise IntegrityError(f"{weights}: tensors {broken} hold nan or inf; {how_to_fix(weights)}")
    return tensors
