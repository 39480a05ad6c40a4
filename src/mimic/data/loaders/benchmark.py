"""Benchmarks with one split (MME, SEED-Bench): every question is for evaluation; training needs a held-out part.

Neither benchmark has a training split, so MimIC's training queries (``n_train``) and the demonstration pool
(``n_support``) come from the benchmark itself: ``holdout: N`` (a loader option) holds out N of its *groups*
(MME: images, whose two questions stay together; SEED-Bench: images too, ``data_id``), drawn with the run seed,
as the training pool; the evaluation pool is every other question, in source order. Held-out questions are
never evaluated, so with ``holdout`` > 0 the scores are over the rest of the benchmark (not comparable with a
leaderboard's full-benchmark numbers; the MimIC reference code does the same: ``train_test_split(train_size=
num_query_samples, shuffle=False)`` takes the benchmark's first questions for its support set and evaluates the
others). With ``holdout: 0`` (the default) there is no training pool: ``n_train`` and ``n_support`` must then be 0
(zero-shot evaluation of the whole benchmark), else the spec is refused with one line saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mimic.data.loaders.common import DataError, Pool, TaskSpec

HOLDOUT = "holdout"


def check_holdout(task: TaskSpec, unit: str) -> int:
    """``holdout`` as a count (before any reading), refusing training needs that it cannot meet."""
    n = task.options.get(HOLDOUT, 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{task.title}: {task.key(HOLDOUT)} must be a non-negative integer ({unit} held out of "
                         f"evaluation for train/support), got {n!r}")
    if n == 0 and (task.n_train != 0 or task.n_support != 0):
        raise ValueError(
            f"{task.title}: the benchmark has no training split, so {task.key('n_train')} and "
            f"{task.key('n_support')} need {task.key(HOLDOUT)}: N (N {unit} held out of evaluation, seeded, as the "
            "training pool); or set n_train: 0 and n_support: 0 to evaluate the whole benchmark zero-shot")
    if task.source["train"] != task.source["eval"]:
        raise ValueError(f"{task.title}: {task.key('source')} must be one value (hub or files): the benchmark is "
                         "one split, read once")
    return n


def holdout_pools(task: TaskSpec, records: Sequence[Any], groups: Sequence[str], build: Callable[[Any], dict],
                  source: dict, seed: int, unit: str, ids: Sequence[Any] | None = None) -> dict[str, Pool]:
    """The ``train`` pool (the records of ``holdout`` groups drawn with ``seed``) and the ``eval`` pool (the
    rest, in source order); ``groups[i]`` is record ``i``'s group (its image)."""
    n = task.options.get(HOLDOUT, 0)
    distinct = list(dict.fromkeys(groups))
    if n > len(distinct):
        raise DataError(f"{task.title}: {task.key(HOLDOUT)} = {n} but the benchmark has only {len(distinct)} {unit}; "
                        "lower it")
    order = np.random.default_rng([seed, 2]).permutation(len(distinct))
    held = {distinct[int(i)] for i in order[:n]}
    train = [i for i, g in enumerate(groups) if g in held]
    evaluated = [i for i, g in enumerate(groups) if g not in held]

    def pool(positions: list[int], part: str, label: str) -> Pool:
        return Pool(records=[records[i] for i in positions], build=build, label=f"{task.title} {label}",
                    source={**source, "part": part, HOLDOUT: n, "holdout_seed": seed},
                    ids=None if ids is None else (lambda: [ids[i] for i in positions]))

    return {"train": pool(train, "held out for train/support", f"held-out {unit}"),
            "eval": pool(evaluated, "evaluated", "evaluated questions")}
