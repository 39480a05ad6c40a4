"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

An interrupted run never leaves a file that looks finished. The file gets the usual
permissions (0666 less the umask), not ``mkstemp``'s private 0600. A file system that fills up
while writing is one line (:class:`~mimic.errors.DiskFullError`) and the target is untouched.

:func:`replace_dir` puts a finished directory in place of an output directory, from anywhere: when it
sits on another file system (a scratch volume for the work, another for the results) it is first
copied beside the output, then swapped in by renames inside the output's own directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mimic.errors import DiskFullError

_MiB = 1 << 20
HEADROOM_BYTES = _MiB  # kept free beyond an estimate: logs, manifests, progress files


def _mib(n: int) -> str:
    return f"{n / _MiB:,.1f} MiB"


def existing_ancestor(folder: Path) -> Path:
    """``folder`` or the nearest of its parents that exists."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Raise :class:`DiskFullError` (one line) unless ``folder``'s file system has ``need_bytes`` free and some
    headroom; ``what`` names the output that needs them."""
    folder = existing_ancestor(Path(folder))
    free = shutil.disk_usage(folder).free
    if free < need_bytes + HEADROOM_BYTES:
        raise DiskFullError(f"{what} needs about {_mib(need_bytes)} on the file system of {folder}, which has "
                            f"{_mib(free)} free; free space there (or move results/ to a larger volume) and rerun: "
                            "nothing was replaced")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()  # writers that wrap the OS error (safetensors) keep its text
    return "no space left on device" in text or "disk quota exceeded" in text


def disk_full_error(path: Path, exc: BaseException) -> DiskFullError:
    free = shutil.disk_usage(existing_ancestor(path.parent)).free
    return DiskFullError(f"no space left writing {path} ({_mib(free)} free on its file system): free space there "
                         f"(or move results/ to a larger volume) and rerun; {path.name} was not replaced")


def tree_bytes(folder: str | os.PathLike) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise disk_full_error(path, exc) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline=""))


def replace_dir(finished: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the ``finished`` directory where ``dest`` is; the old ``dest`` is removed only once the new one is in.

    ``finished`` is renamed beside ``dest`` when both sit on one file system, else copied there (after checking
    the space; a copy that fails is removed and ``dest`` is untouched); then two renames inside ``dest``'s
    directory swap it in. A kill leaves either the old or the new ``dest`` in place (the other one a hidden
    ``.<name>.new-*`` / ``.<name>.old-*`` folder beside it), never a partial one under the output's name.
    """
    finished, dest = Path(finished), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    staged.rmdir()
    try:
        os.rename(finished, staged)
        copied = False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_beside(finished, staged, dest)
        copied = True
    old = dest.with_name(f".{dest.name}.old-{staged.name.rsplit('-', 1)[-1]}")
    if dest.exists():
        dest.rename(old)
    try:
        staged.rename(dest)
    except BaseException:
        if old.exists() and not dest.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if copied:
        shutil.rmtree(finished, ignore_errors=True)


def _copy_beside(finished: Path, staged: Path, dest: Path) -> None:
    """Copy ``finished`` (another file system) to ``staged`` beside ``dest``, mtimes kept."""
    check_free_space(dest.parent, tree_bytes(finished), f"{dest} (copied from {finished})")
    try:
        shutil.copytree(finished, staged, copy_function=shutil.copy2)
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        if _is_disk_full(exc):  # shutil.Error keeps each file's OS error text
            raise disk_full_error(dest, exc) from exc
        raise
