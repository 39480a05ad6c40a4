"""Multiple-choice accuracy (SEED-Bench's eval.py), for tasks of kind ``multiple-choice``.

A prediction is the letter of the chosen option (``A``..``D``; under likelihood ranking, the option the model
finds most likely, :func:`mimic.models.likelihood.rank_options`); it is right when it equals the answer's
letter. ``accuracy`` = 100 * right / all (over every question, as the official total); ``accuracy/<type>`` the
same over the questions of one question type (SEED-Bench's evaluation dimensions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def choice_accuracy(predictions: Sequence[str], letters: Sequence[str],
                    types: Sequence[str] | None = None) -> tuple[dict[str, float], list[float]]:
    """The accuracies x100 and each question's own score (100 right, 0 wrong)."""
    if len(predictions) != len(letters) or (types is not None and len(types) != len(letters)):
        raise ValueError("choice_accuracy: predictions, answer letters and question types differ in length")
    right = [str(p).strip().upper() == str(a).strip().upper() for p, a in zip(predictions, letters, strict=True)]
    metrics = {"accuracy": 100.0 * sum(right) / len(right) if right else 0.0}
    if types is not None:
        by_type: dict[str, list[bool]] = defaultdict(list)
        for ok, kind in zip(right, types, strict=True):
            by_type[str(kind)].append(ok)
        for kind in sorted(by_type):
            metrics[f"accuracy/{kind}"] = 100.0 * sum(by_type[kind]) / len(by_type[kind])
    return metrics, [100.0 if ok else 0.0 for ok in right]
