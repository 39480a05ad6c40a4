"""Outputs on full and foreign file systems (mimic.io.atomic): a write that does not fit is one line and leaves
the previous output byte for byte; a finished directory on another file system (scratch for the work, another
volume for the results) still replaces its output, with the old one removed only once the new one is in.

The real cases mount a small tmpfs (root; skipped, saying why, where mounting is not possible)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from mimic.errors import DiskFullError
from mimic.io.atomic import HEADROOM_BYTES, atomic_write, atomic_write_bytes, check_free_space, replace_dir


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs mounted at tmp_path/small (unmounted after)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(done.stderr.strip() or 'not root').splitlines()[-1]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def folder_with(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_finished_directory_on_another_file_system_replaces_the_output(tmp_path, small_fs):
    out = folder_with(small_fs / "teacher" / "seed-0", {"old.json": b"old"})
    finished = folder_with(tmp_path / "partial" / "seed-0", {"shard.safetensors": b"x" * 1000, "index.json": b"{}"})
    os.utime(finished / "index.json", (1000, 1000))
    with pytest.raises(OSError) as exdev:  # what a plain rename does here
        os.rename(finished, small_fs / "elsewhere")
    assert exdev.value.errno == errno.EXDEV
    replace_dir(finished, out)
    assert contents(out) == {"index.json": b"{}", "shard.safetensors": b"x" * 1000}
    assert (out / "index.json").stat().st_mtime == 1000  # times kept: outputs stay newer than their inputs
    assert not finished.exists() and [p.name for p in out.parent.iterdir()] == ["seed-0"]  # nothing hidden left


def test_a_copy_that_does_not_fit_leaves_the_old_output_and_says_so_in_one_line(tmp_path, small_fs):
    out = folder_with(small_fs / "teacher" / "seed-0", {"old.json": b"old"})
    finished = folder_with(tmp_path / "partial", {"shard.safetensors": os.urandom(6 << 20)})
    with pytest.raises(DiskFullError) as err:
        replace_dir(finished, out)
    message = str(err.value)
    assert "\n" not in message and str(out) in message and "MiB free" in message and "nothing was replaced" in message
    assert contents(out) == {"old.json": b"old"}
    assert [p.name for p in out.parent.iterdir()] == ["seed-0"]
    assert finished.is_dir() and len(contents(finished)) == 1  # the finished work is kept for the next try


def test_a_copy_that_fills_the_disk_midway_is_removed(tmp_path, small_fs, monkeypatch):
    """The space check passes (a racing writer fills the disk later): the failed copy goes, the output stays."""
    import mimic.io.atomic as atomic

    monkeypatch.setattr(atomic, "check_free_space", lambda *a, **k: None)
    out = folder_with(small_fs / "teacher" / "seed-0", {"old.json": b"old"})
    finished = folder_with(tmp_path / "partial", {"a.bin": os.urandom(3 << 20), "b.bin": os.urandom(3 << 20)})
    with pytest.raises(DiskFullError, match="no space left writing"):
        replace_dir(finished, out)
    assert contents(out) == {"old.json": b"old"} and [p.name for p in out.parent.iterdir()] == ["seed-0"]


def test_a_rename_that_fails_for_another_reason_is_not_hidden(tmp_path, monkeypatch):
    out = folder_with(tmp_path / "out", {"old": b"1"})
    finished = folder_with(tmp_path / "new", {"new": b"2"})
    real = os.rename

    def refuse(src, dst):
        if Path(src) == finished:
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(PermissionError):
        replace_dir(finished, out)
    assert contents(out) == {"old": b"1"}


def test_a_file_that_does_not_fit_is_one_line_and_the_old_file_stays(small_fs):
    target = small_fs / "metrics.json"
    target.write_bytes(b"good")
    with pytest.raises(DiskFullError) as err:
        atomic_write_bytes(target, os.urandom(6 << 20))
    assert "\n" not in str(err.value) and str(target) in str(err.value)
    assert target.read_bytes() == b"good" and [p.name for p in small_fs.iterdir()] == ["metrics.json"]


def test_a_safetensors_file_that_does_not_fit_is_one_line(small_fs):
    """safetensors wraps the OS error in its own exception: still the one line, the old file kept."""
    from safetensors.torch import save_file

    target = small_fs / "shard.safetensors"
    target.write_bytes(b"good")
    with pytest.raises(DiskFullError, match="no space left writing"):
        atomic_write(target, lambda tmp: save_file({"x": torch.zeros(2 << 20)}, tmp))
    assert target.read_bytes() == b"good" and [p.name for p in small_fs.iterdir()] == ["shard.safetensors"]


def test_the_free_space_check_counts_the_headroom(small_fs):
    check_free_space(small_fs, 1 << 20, "a small output")
    with pytest.raises(DiskFullError, match=r"a big output needs about 5\.0 MiB on the file system of .* free"):
        check_free_space(small_fs / "not" / "made", 5 << 20, "a big output")
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    with pytest.raises(DiskFullError):
        check_free_space(small_fs, free - HEADROOM_BYTES + 1, "an output that leaves no headroom")
