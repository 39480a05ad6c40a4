"""What made a result: the run seed, the project's commit and the versions of the packages that compute it.

Recorded in every evaluation's ``metrics.json`` (``provenance``), so a number can be traced to the code and the
environment that produced it. The commit is that of the git work tree holding the ``mimic`` package (an editable
install of this repository), with ``dirty`` when its tracked files differ from that commit; ``None`` for an
install without git.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("mimic-icl", "torch", "transformers", "tokenizers", "peft", "safetensors", "numpy", "pandas", "datasets",
            "pycocoevalcap")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``{"python": ..., package: version or None when it is not installed}``."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_output(source: str | Path, *args: str) -> str | None:
    """``git -C source args...``'s stripped stdout, or None when git is missing or fails (no work tree)."""
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def project_commit() -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the work tree holding the ``mimic`` package, or None."""
    source = Path(__file__).resolve().parents[1]
    sha = git_output(source, "rev-parse", "HEAD")
    if not sha:
        return None
    status = git_output(source, "status", "--porcelain", "--untracked-files=no")
    return {"commit": sha, "dirty": bool(status)}


def provenance(seed: int) -> dict:
    return {"seed": int(seed), "project": project_commit(), "versions": package_versions()}
