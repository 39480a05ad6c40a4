"""Compare a lock file with the packages installed in this interpreter's environment.

    python tools/lock_drift.py requirements/test.lock           # print what differs, exit 0
    python tools/lock_drift.py requirements/test.lock --strict  # exit 1 if anything differs

``make test-latest`` runs it in a venv of the newest releases the ranges of pyproject.toml
allow, so a maintainer sees which pins the next ``make lock UPGRADE=1`` would move. The
lock's format is pip-compile's: ``name==version \\`` lines followed by ``--hash=`` lines.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` pin in the lock (comments and hashes skipped)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution importlib.metadata finds."""
    return {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def drift(locked: dict[str, str], installed: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """``(name, locked version, installed version or None)`` of every pin the environment does not match, by name."""
    return [(name, version, installed.get(name)) for name, version in sorted(locked.items())
            if installed.get(name) != version]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a pin differs")
    args = parser.parse_args(argv)
    if not args.lock.is_file():
        parser.error(f"no lock file {args.lock} (make lock writes requirements/run.lock and requirements/test.lock)")
    locked = read_lock(args.lock)
    rows = drift(locked, installed_versions())
    if not rows:
        print(f"lock drift: none, all {len(locked)} pins of {args.lock} are installed")
        return 0
    print(f"lock drift: {len(rows)} of {len(locked)} pins of {args.lock} differ from this environment")
    width = max(len(name) for name, _, _ in rows)
    for name, want, have in rows:
        print(f"  {name:<{width}}  locked {want:<12} installed {have or '(missing)'}")
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
