"""The efficiency of each method at inference, measured the same way for every method: one row each.

Per method (zero-shot, k-shot ICL and every trained or fitted method alike), on one query (batch 1)
with :data:`FORCED_BEAMS` beams:

- ``forced_ms``: wall time of a generation of exactly :data:`FORCED_TOKENS` tokens (``min_new_tokens =
  max_new_tokens``: no beam can stop early, so answer length does not enter), median over rotated rounds
  (:func:`mimic.evaluation.latency.side_by_side`), and ``forced_ratio``: the median of its per-round ratios
  to the baseline (zero-shot);
- ``ttft_ms``: time to first token, the same generation stopped after one token: the prefill of the prompt
  (the beams expanded) and the choice of the first token;
- ``peak_mib``: the peak of the memory allocated *during* the forced generation above what was allocated
  before it (weights, the method's tensors): on CUDA ``torch.cuda.max_memory_allocated`` minus the
  allocation at the start; on a CPU, where torch keeps no such statistics, the peak of the bytes of the
  tensors that the generation's operations created and that were still alive (:class:`LiveTensorBytes`,
  a dispatch mode; allocator overhead not counted). :func:`peak_measure` names which one a table holds;
- ``stored_kib``: what the method keeps besides the model, in KiB: for a trained or fitted method the
  bytes of its tensors as saved (``mimic.safetensors``, :func:`tensor_bytes`; the JSON header left out);
  for k-shot ICL the demonstrations' KV cache (:func:`demonstration_kv_bytes`: the cache a prefill of the
  ICL prompt leaves minus the zero-shot prompt's, at batch 1, in the model's dtype) -- the state one
  would keep to reuse the demonstrations without encoding them again, and the state MimIC's shift replaces;
  zero-shot stores nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mimic.evaluation.latency import Variant, side_by_side, summarize

FORCED_TOKENS = 20
FORCED_BEAMS = 3
COLUMNS = ("method", "type", "ttft_ms", "forced_ms", "forced_ratio", "peak_mib", "stored_kib")


class LiveTensorBytes(TorchDispatchMode):
    """While active: the bytes of the tensor storages that operations create and that are still alive
    (``live``), and their maximum (``peak``). A storage an operation returns that one of its inputs already
    held (a view, an in-place result) is not new; a storage counts until it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in inputs or key in self._seen:
                continue
            nbytes = storage.nbytes()
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, nbytes)
        return out


def peak_measure(device: torch.device | str) -> str:
    """What ``peak_mib`` means on ``device`` (a column header names it)."""
    return "CUDA max allocated" if torch.device(device).type == "cuda" else "CPU live tensors"


def peak_mib(loaded, run: Callable[[], object]) -> float:
    """MiB allocated at the peak of ``run()`` above the allocation before it (:func:`peak_measure`)."""
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    with LiveTensorBytes() as counter:
        run()
    return counter.peak / 2**20


def forced_kwargs(loaded, new_tokens: int = FORCED_TOKENS, num_beams: int = FORCED_BEAMS, **extra) -> dict:
    """``generate`` arguments of a generation of exactly ``new_tokens`` tokens."""
    return dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=num_beams, do_sample=False,
                pad_token_id=loaded.pad_token_id, **extra)


def tensor_bytes(path: str | Path) -> int:
    """The bytes of the tensors of a safetensors file (its JSON header left out)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            sliced = fh.get_slice(key)
            shape, dtype = sliced.get_shape(), sliced.get_dtype()
            numel = 1
            for n in shape:
                numel *= n
            total += numel * _DTYPE_BYTES[dtype]
    return total


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def kv_cache_bytes(loaded, inputs: dict) -> int:
    """The bytes of the key/value cache a prefill of ``inputs`` leaves."""
    with torch.no_grad():
        out = loaded.model(**inputs, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or out.past_key_values
    tensors = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if not tensors and cache is not None:  # a legacy tuple of (key, value) per layer
        tensors = [t for pair in cache for t in pair]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def demonstration_kv_bytes(loaded, icl_inputs: dict, zero_inputs: dict) -> int:
    """The demonstrations' share of the KV cache: ICL prompt's cache minus the zero-shot prompt's (batch 1)."""
    for inputs in (icl_inputs, zero_inputs):
        if inputs["input_ids"].shape[0] != 1:
            raise ValueError("demonstration_kv_bytes takes one query (batch 1): padding would count")
    return kv_cache_bytes(loaded, icl_inputs) - kv_cache_bytes(loaded, zero_inputs)


def measure(loaded, variants: list[Variant], kinds: dict[str, str], stored_bytes: dict[str, int | None],
            rounds: int, baseline: str, new_tokens: int = FORCED_TOKENS, num_beams: int = FORCED_BEAMS,
            extra: dict | None = None) -> list[dict]:
    """One row per variant (:data:`COLUMNS`), each variant's inputs one query: time to first token and the
    forced generation side by side (rotated rounds after a warm-up), then each variant's peak memory."""
    for v in variants:
        if v.inputs["input_ids"].shape[0] != 1:
            raise ValueError(f"{v.name}: the efficiency table is measured at batch 1")
    first = summarize(side_by_side(loaded, variants, 1, num_beams, rounds, extra=extra), 1, baseline)
    forced = summarize(side_by_side(loaded, variants, new_tokens, num_beams, rounds, extra=extra), 1, baseline)
    kwargs = forced_kwargs(loaded, new_tokens, num_beams, **(extra or {}))
    rows = []
    for v in variants:
        with v.installed(), torch.no_grad():
            peak = peak_mib(loaded, lambda v=v: loaded.model.generate(**v.inputs, **kwargs))
        stored = stored_bytes.get(v.name)
        rows.append({
            "method": v.name, "type": kinds[v.name],
            "ttft_ms": first[v.name]["ms_per_query"],
            "forced_ms": forced[v.name]["ms_per_query"],
            "forced_ratio": forced[v.name][f"ratio_to_{baseline}"],
            "peak_mib": round(peak, 3),
            "stored_kib": None if stored is None else round(stored / 1024, 3),
        })
    return rows


def installed_from(model, path: str | Path) -> Callable[[], AbstractContextManager]:
    """A :class:`Variant`'s ``installed``: the checkpoint at ``path`` attached while the variant runs."""
    from contextlib import contextmanager

    from mimic.methods import detach, from_pretrained

    @contextmanager
    def context():
        from_pretrained(model, path, verify=False)
        try:
            yield
        finally:
            detach(model)

    return context


__all__ = ["COLUMNS", "FORCED_BEAMS", "FORCED_TOKENS", "LiveTensorBytes", "Variant", "demonstration_kv_bytes",
           "forced_kwargs", "installed_from", "kv_cache_bytes", "measure", "peak_measure", "peak_mib",
           "tensor_bytes"]
