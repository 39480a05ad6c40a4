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


def _canonical_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> tuple[bytes, memoryview]:
    """The canonical header and safetensors' own data (a view: the tensors are not copied again)."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    (length,) = _LENGTH.unpack_from(raw)
    return canonical_header(raw), memoryview(raw)[_LENGTH.size + length :]


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous, CPU) and string ``metadata`` to safetensors file ``path``: atomically, with
    a canonical header, checked to load back with the same metadata and tensor names before it replaces
    ``path``."""
    header, data = _canonical_parts(tensors, metadata)

    def write(tmp: str) -> None:
        from safetensors import safe_open

        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(data)
        with safe_open(tmp, framework="pt") as fh:
            if (fh.metadata() or {}) != (metadata or {}) or sorted(fh.keys()) != sorted(tensors):
                raise IntegrityError(f"{path}: not written, the safetensors file did not read back as written")

    atomic_write(path, write)
