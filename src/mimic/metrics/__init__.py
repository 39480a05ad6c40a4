"""Task metrics: VQA accuracy (official VQA evaluation) and COCO caption scores (pycocoevalcap).

``score(kind, predictions, references)`` is what evaluation calls; ``HEADLINE[kind]`` names
the number a results table reports for that kind of task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HEADLINE = {"vqa": "vqa_accuracy", "caption": "CIDEr"}


def score(kind: str, predictions: Sequence[str] | Mapping[str, str], references) -> dict[str, float]:
    """Scores x100 of ``predictions`` against ``references`` for a task of ``kind``.

    - ``"vqa"``: ``{"vqa_accuracy": ...}``; predictions and the lists of human answers are
      parallel lists (dicts keyed by the same ids are accepted too).
    - ``"caption"``: :func:`mimic.metrics.caption.caption_scores` (CIDEr, BLEU-4, METEOR, ROUGE-L).
    """
    if kind == "vqa":
        from mimic.metrics.vqa import vqa_score

        if isinstance(predictions, Mapping):
            if set(predictions) != set(references):
                raise ValueError("score: predictions and references hold different ids")
            keys = list(predictions)
            predictions, references = [predictions[k] for k in keys], [references[k] for k in keys]
        return {"vqa_accuracy": vqa_score(list(predictions), list(references))}
    if kind == "caption":
        from mimic.metrics.caption import caption_scores

        return caption_scores(predictions, references)
    raise ValueError(f"unknown task kind {kind!r}; use one of {sorted(HEADLINE)}")
