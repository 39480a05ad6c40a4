"""The loader registry: task loader name -> ``prepare(spec, out_dir, seed) -> meta``.

Real datasets register here when :mod:`mimic.data.loaders` is imported; other task
suites (the synthetic one) register themselves with the same decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Loader = Callable[[dict, Path, int], dict]
LOADERS: dict[str, Loader] = {}


def register_loader(name: str, *aliases: str) -> Callable[[Loader], Loader]:
    """Register the decorated ``prepare(spec, out_dir, seed) -> meta`` under ``name`` (and ``aliases``)."""

    def decorate(fn: Loader) -> Loader:
        for key in (name, *aliases):
            known = LOADERS.get(key)
            if known is not None and _qualified(known) != _qualified(fn):
                raise ValueError(f"loader {key!r} is already registered by {_qualified(known)}")
            LOADERS[key] = fn
        return fn

    return decorate


def _qualified(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
