"""mimic.io.tensors.save_tensors: the same tensors and metadata give the same bytes in any process, and the file
reads back as written (safetensors' own reader)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mimic.io.tensors import save_tensors

# More than two keys, so that an order that varies between processes shows (8! orders).
METADATA = {f"key-{c}": f"value {i}" for i, c in enumerate("hcafgbed")} | {"format": "pt", "é": "ü"}


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "b.weight": torch.randn(3, 5, generator=g),
        "a.half": torch.randn(7, generator=g).half(),  # 14 bytes: the next tensor's offset is not a multiple of 8
        "c.bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "z.index": torch.arange(5, dtype=torch.int64),
        "m.mask": torch.tensor([True, False, True]),
        "e.empty": torch.zeros(0, 4),
    }


WRITER = """
import sys, torch
sys.path[:0] = [{tests!r}]
from test_tensors import METADATA, tensors
from mimic.io.tensors import save_tensors

items = list(METADATA.items())
if sys.argv[2] == "reversed":  # the same content, built in another order
    items = items[::-1]
    state = dict(reversed(list(tensors().items())))
else:
    state = tensors()
save_tensors(sys.argv[1], state, metadata=dict(items))
"""


def test_the_same_content_gives_the_same_bytes_in_two_processes(tmp_path):
    script = WRITER.format(tests=os.path.dirname(__file__))
    files = []
    for hash_seed, order in (("1", "forward"), ("2", "reversed")):
        path = tmp_path / f"{hash_seed}.safetensors"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", script, str(path), order], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        files.append(path.read_bytes())
    assert files[0] == files[1]
    here = tmp_path / "here.safetensors"
    save_tensors(here, tensors(), metadata=METADATA)  # and in this process
    assert here.read_bytes() == files[0]


def test_the_file_reads_back_as_written_with_a_canonical_header(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors(), metadata=METADATA)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == METADATA
        assert sorted(fh.keys()) == sorted(tensors())
    loaded = load_file(str(path))
    for name, tensor in tensors().items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name], tensor), name
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0
    text = raw[8 : 8 + length].decode()
    header = json.loads(text)
    assert text.rstrip(" ") == json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert list(header["__metadata__"]) == sorted(METADATA)
    ends = sorted(info["data_offsets"] for name, info in header.items() if name != "__metadata__")
    assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False))
    assert len(raw) == 8 + length + ends[-1][1]  # the offsets cover exactly the data after the header


def test_no_tensors_and_no_metadata(tmp_path):
    save_tensors(tmp_path / "empty.safetensors", {}, metadata={"task": "t", "embedding": ""})
    with safe_open(str(tmp_path / "empty.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"task": "t", "embedding": ""} and list(fh.keys()) == []
    save_tensors(tmp_path / "plain.safetensors", {"x": torch.ones(2)})
    assert torch.equal(load_file(str(tmp_path / "plain.safetensors"))["x"], torch.ones(2))


def test_a_write_that_fails_leaves_the_previous_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.ones(2)}, metadata={"v": "1"})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error for a tensor it cannot write
        save_tensors(path, {"x": torch.ones(4, 4).t()[::2]}, metadata={"v": "2"})  # not contiguous
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]  # no temporary file left


def test_a_file_that_does_not_read_back_as_written_is_not_kept(tmp_path, monkeypatch):
    import mimic.io.tensors
    from mimic.errors import IntegrityError

    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.ones(2)}, metadata={"v": "1"})
    before = path.read_bytes()
    real = mimic.io.tensors.canonical_header

    def losing_the_metadata(raw: bytes) -> bytes:
        (length,) = struct.unpack("<Q", raw[:8])
        header = {k: v for k, v in json.loads(raw[8 : 8 + length]).items() if k != "__metadata__"}
        text = json.dumps(header).encode()
        return real(struct.pack("<Q", len(text)) + text)

    monkeypatch.setattr(mimic.io.tensors, "canonical_header", losing_the_metadata)
    with pytest.raises(IntegrityError, match="did not read back as written"):
        save_tensors(path, {"x": torch.zeros(2)}, metadata={"v": "2"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_a_canonical_header_of_another_length_is_written_by_copying_the_data(tmp_path, monkeypatch):
    """Where the canonical header is not the length of safetensors' own (not the usual case), the data is copied
    after it: the file still reads back whole, with the longer header."""
    import mimic.io.tensors as writer

    real = writer.canonical_header

    def longer(raw: bytes) -> bytes:
        header = real(raw)
        (length,) = struct.unpack_from("<Q", header)
        return struct.pack("<Q", length + 8) + header[8:] + b" " * 8

    monkeypatch.setattr(writer, "canonical_header", longer)
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors(), metadata=METADATA)
    assert struct.unpack_from("<Q", path.read_bytes())[0] % 8 == 0
    loaded = load_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
