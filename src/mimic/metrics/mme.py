"""MME (Fu et al., 2023): the official score of eval_tool/calculation.py, for tasks of kind ``yes-no``.

Every MME image has two questions whose answers are "Yes" and "No". The official tool:

1. parses a prediction (lower-cased) to ``yes`` / ``no`` / ``other``: itself when it is exactly "yes" or "no",
   else ``yes`` when "yes" occurs in its first 4 characters, else ``no`` when "no" does, else ``other``
   (which is wrong whatever the answer) -- :func:`parse_prediction`;
2. per subtask (``category``): ``acc`` = the fraction of its questions answered right, ``acc_plus`` = the
   fraction of its images whose questions are all answered right (both, in the full benchmark);
3. subtask score = 100 * acc + 100 * acc_plus (at most 200); ``perception`` = the sum of the scores of the 10
   perception subtasks, ``cognition`` = the sum of the 4 cognition ones.

``mme_score`` (the headline, ``HEADLINE["yes-no"]``) is perception + cognition, MME's total. A subtask absent
from the evaluated questions adds nothing (a task restricted to some subtasks sums those). Deviation: the
official tool asserts two questions per image; here an image whose other question is not evaluated (a
subsample, ``n_eval``) counts for acc+ with the questions it has. The per-question score (100 or 0) is not
averaged into the headline: MME's total is a sum of per-subtask scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION
LABELS = ("yes", "no", "other")


def parse_prediction(text: str) -> str:
    """``yes`` / ``no`` / ``other`` as the official calculation.py parses a (lower-cased) prediction."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_scores(predictions: Sequence[str], answers: Sequence[str], categories: Sequence[str],
               images: Sequence[str]) -> tuple[dict[str, float], list[float]]:
    """The MME metrics and each question's own score (100 right, 0 wrong); ``answers`` are "Yes"/"No",
    ``categories`` the subtask names (:data:`SUBTASKS`), ``images`` what groups a subtask's questions (the
    image's name)."""
    if not len(predictions) == len(answers) == len(categories) == len(images):
        raise ValueError("mme_scores: predictions, answers, categories and images differ in length")
    unknown = sorted(set(categories) - set(SUBTASKS))
    if unknown:
        raise ValueError(f"MME: unknown subtask {unknown[0]!r} (a 'category' field); MME's are {list(SUBTASKS)}")
    for answer in answers:
        if str(answer).lower() not in ("yes", "no"):
            raise ValueError(f"MME: the answer {answer!r} is not Yes or No")
    right = [parse_prediction(p) == str(a).lower() for p, a in zip(predictions, answers, strict=True)]
    per_question: dict[str, list[bool]] = defaultdict(list)
    per_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for ok, category, image in zip(right, categories, images, strict=True):
        per_question[category].append(ok)
        per_image[category][image].append(ok)
    metrics: dict[str, float] = {}
    for category in SUBTASKS:
        if category not in per_question:
            continue
        acc = sum(per_question[category]) / len(per_question[category])
        acc_plus = sum(all(v) for v in per_image[category].values()) / len(per_image[category])
        metrics[f"{category}/acc"] = 100.0 * acc
        metrics[f"{category}/acc_plus"] = 100.0 * acc_plus
        metrics[category] = 100.0 * acc + 100.0 * acc_plus
    metrics["perception"] = sum(metrics.get(c, 0.0) for c in PERCEPTION)
    metrics["cognition"] = sum(metrics.get(c, 0.0) for c in COGNITION)
    metrics["mme_score"] = metrics["perception"] + metrics["cognition"]
    return metrics, [100.0 if ok else 0.0 for ok in right]
