"""Latency measured side by side: every method of a run timed in one process, on one batch.

The evaluate jobs' own latencies (``metrics.json``) are wall times of different jobs; on a
machine where jobs overlap they are not comparable (one run printed a MimIC / zero-shot ratio of
0.05x). Here the methods are timed against each other under equal conditions: the same model
instance, the same queries in one batch, exactly ``new_tokens`` generated tokens for every
method (min = max, so answer length does not enter), the model's decoding settings (beams), one
untimed warm-up of each, then ``rounds`` rounds in which every method runs once, in an order that
rotates from round to round (no method is always first). Reported per method: the median time per
query over the rounds with its min..max, and the ratio to the baseline (zero-shot) as the median
of the per-round ratios -- the figure a reader compares.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch


@dataclass
class Variant:
    """One method to time: its encoded batch (with or without demonstrations) and how to install it."""

    name: str
    inputs: dict
    installed: Callable[[], AbstractContextManager] = field(default=nullcontext)


def timed_generate(loaded, inputs: dict, new_tokens: int, num_beams: int, **extra) -> float:
    """Wall seconds of one ``generate`` of exactly ``new_tokens`` tokens (device synchronised); ``extra``: more
    ``generate`` arguments (e.g. ``suppress_tokens``)."""
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    num_beams=num_beams, do_sample=False, pad_token_id=loaded.pad_token_id, **extra)
    sync()
    seconds = time.perf_counter() - start
    if out.shape[1] != inputs["input_ids"].shape[1] + new_tokens:
        raise RuntimeError(f"generated {out.shape[1] - inputs['input_ids'].shape[1]} tokens, not {new_tokens}")
    return seconds


def rotation(names: list[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: ``names`` rotated left by the round's index."""
    k = round_index % len(names)
    return names[k:] + names[:k]


def summarize(times: dict[str, list[float]], batch_size: int, baseline: str) -> dict[str, dict]:
    """Per method: median / min / max ms per query over the rounds, and the median per-round ratio to
    ``baseline`` (round r's time of the method over round r's time of the baseline)."""
    out = {}
    for name, seconds in times.items():
        per_query = [1000 * s / batch_size for s in seconds]
        ratios = [s / b for s, b in zip(seconds, times[baseline], strict=True)]
        out[name] = {
            "ms_per_query": round(statistics.median(per_query), 3),
            "ms_per_query_min": round(min(per_query), 3),
            "ms_per_query_max": round(max(per_query), 3),
            "ratio_to_" + baseline: round(statistics.median(ratios), 4),
            "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4),
        }
    return out


def side_by_side(loaded, variants: list[Variant], new_tokens: int, num_beams: int, rounds: int,
                 on_round: Callable[[int], None] | None = None, extra: dict | None = None) -> dict[str, list[float]]:
    """Seconds per round of every variant: one untimed warm-up each, then ``rounds`` rotated rounds (``extra``:
    more ``generate`` arguments)."""
    by_name = {v.name: v for v in variants}
    if len(by_name) != len(variants):
        raise ValueError("variant names must be unique")

    def run(variant: Variant) -> float:
        with variant.installed():
            return timed_generate(loaded, variant.inputs, new_tokens, num_beams, **(extra or {}))

    for variant in variants:  # warm-up: allocator, kernels, lazy inits
        run(variant)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for name in rotation(list(by_name), r):
            times[name].append(run(by_name[name]))
        if on_round is not None:
            on_round(r)
    return times
