"""safetensors files with canonical bytes: the same tensors and metadata give the same file in any process.

safetensors' serializer writes the ``__metadata__`` map in an order that varies from process to process (a
hash map), so a file written again with the same content could differ and DVC would see a change.
:func:`save_tensors` lets safetensors serialize (dtype, shape, data layout are its own), then rewrites only the
JSON header canonically: every key sorted (metadata and tensor entries), compact separators, padded with spaces
to a multiple of 8 bytes as safetensors pads it. The data offsets are relative to the end of the header, so
they stay valid. The file is written atomically (:func:`mimic.io.atomic.atomic_write`) and read back with
``safe_open`` before it replaces the target.
"""

from __future__ import annotations

import json
import os
import struct

import torch

from mimic.errors import IntegrityError
from mimic.io.atomic import atomic_write

_LENGTH = struct.Struct("<Q")  # the header's length: 8 bytes, little-endian


def canonical_header(raw: bytes) -> bytes:
    """The header of safetensors bytes ``raw`` rewritten canonically: its length (8 bytes) and the JSON, keys
    sorted, padded with spaces to a multiple of 8 bytes."""
    (length,) = _LENGTH.unpack_from(raw)
    header = json.loads(raw[_LENGTH.size : _LENGTH.size + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return _LENGTH.pack(len(text)) + text


def _canonicalize_in_place(tmp: str) -> None:
    """Rewrite the header of the safetensors file ``tmp`` canonically, in place when the canonical header has the
    original's length (the same keys in another order: the usual case), else by copying the data after it."""
    import shutil

    with open(tmp, "r+b") as fh:
        raw_length = fh.read(_LENGTH.size)
        (length,) = _LENGTH.unpack(raw_length)
        header = canonical_header(raw_length + fh.read(length))
        if len(header) == _LENGTH.size + length:
            fh.seek(0)
            fh.write(header)
            return
    moved = f"{tmp}.data"
    os.replace(tmp, moved)
    try:
        with open(moved, "rb") as src, open(tmp, "wb") as dst:
            src.seek(_LENGTH.size + length)
            dst.write(header)
            shutil.copyfileobj(src, dst, 1 << 24)
    finally:
        os.unlink(moved)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous, CPU) and string ``metadata`` to safetensors file ``path``: atomically, with
    a canonical header, checked to load back with the same metadata and tensor names before it replaces
    ``path``. safetensors streams the tensors to the file (no copy of them in memory), then the header is
    rewritten in place."""
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        from safetensors import safe_open

        save_file(tensors, tmp, metadata=metadata)
        _canonicalize_in_place(tmp)
        with safe_open(tmp, framework="pt") as fh:
            if (fh.metadata() or {}) != (metadata or {}) or sorted(fh.keys()) != sorted(tensors):
                raise IntegrityError(f"{path}: not written, the safetensors file did not read back as written")

    atomic_write(path, write)
