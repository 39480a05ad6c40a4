"""Task metrics: VQA accuracy (official VQA evaluation, or the MimIC reference code's variant)
and COCO caption scores (pycocoevalcap).

``score(kind, predictions, references, variant)`` is what evaluation and the report call
(``score_with_samples`` adds each sample's own score, for ``predictions.jsonl``);
``HEADLINE[kind]`` names the number a results table reports for that kind of task, and
``metric_variant(kind, variant)`` the label recorded next to it (``metrics.json``, the report).
``variant`` (``eval.metric_variant`` in params.yaml) chooses how VQA accuracy processes answers
(:data:`mimic.metrics.vqa.VARIANTS`); caption scores have one definition and ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mimic.metrics.vqa import DEFAULT_VARIANT
from mimic.metrics.vqa import DESCRIPTIONS as _VQA_DESCRIPTIONS
from mimic.metrics.vqa import VARIANTS as VQA_VARIANTS

HEADLINE = {"vqa": "vqa_accuracy", "caption": "CIDEr", "yes-no": "mme_score", "multiple-choice": "accuracy"}
CAPTION_VARIANT = "pycocoevalcap"
# Kinds whose metric has one definition (``eval.metric_variant`` does not apply): the label recorded.
FIXED_VARIANTS = {"caption": CAPTION_VARIANT, "yes-no": "mme-official", "multiple-choice": "likelihood-ranking"}
# What a kind's metric reads from each prediction row besides ``prediction`` and ``answers`` (evaluation copies
# these columns of the task's table into predictions.jsonl; vqa and caption read none).
ROW_FIELDS = {"yes-no": ("category", "image_name"), "multiple-choice": ("answer_letter", "question_type")}
VARIANT_DESCRIPTIONS = {
    **{variant: f"VQA accuracy of the {text}" for variant, text in _VQA_DESCRIPTIONS.items()},
    CAPTION_VARIANT: "CIDEr-D (and BLEU-4, METEOR, ROUGE-L) of pycocoevalcap on PTB-tokenized captions",
    "mme-official": "MME's eval_tool/calculation.py: per subtask 100*(acc + acc+), perception and cognition sums",
    "likelihood-ranking": "multiple-choice accuracy, the option of highest log-likelihood chosen (SEED-Bench)",
}


def check_scoring_tools(kind: str, stem: bool = False) -> None:
    """What scoring a ``kind`` task needs outside Python is installed (Java for the caption metrics; the OK-VQA
    stemmer's packages and data with ``stem``), else one line naming the missing tool
    (:class:`mimic.errors.MissingToolError`): called before a model loads and by ``mimic validate``."""
    if kind == "caption":
        from mimic.metrics.coco_java import require_java

        require_java()
    if stem:
        from mimic.metrics.okvqa_stem import check_ready

        check_ready()


def metric_variant(kind: str, variant: str = DEFAULT_VARIANT) -> str:
    """What computed a ``kind`` score under ``eval.metric_variant = variant``: the VQA variant, or pycocoevalcap."""
    if variant not in VQA_VARIANTS:
        raise ValueError(f"unknown metric variant {variant!r}; choose one of {list(VQA_VARIANTS)}")
    if kind == "vqa":
        return variant
    if kind in FIXED_VARIANTS:
        return FIXED_VARIANTS[kind]
    raise ValueError(f"unknown task kind {kind!r}; use one of {sorted(HEADLINE)}")


def score_with_samples(kind: str, predictions: Sequence[str], references, variant: str = DEFAULT_VARIANT,
                       caption_metrics: Sequence[str] | None = None,
                       rows: Sequence[Mapping] | None = None) -> tuple[dict[str, float], list[float]]:
    """:func:`score` and each sample's own headline score x100 (VQA accuracy of the question; the caption's
    CIDEr-D; 100 or 0 for a yes-no or multiple-choice question), parallel to ``predictions``: their mean is the
    headline score (not for ``yes-no``: MME's total is a sum of per-subtask scores). ``rows``: the prediction
    rows, parallel, holding the fields :data:`ROW_FIELDS` names (needed by the kinds that have some)."""
    metric_variant(kind, variant)
    if kind in ROW_FIELDS:
        return _scored_by_fields(kind, list(predictions), list(references), rows)
    if kind == "vqa":
        from mimic.metrics.vqa import mean_score, vqa_accuracies

        accuracies = vqa_accuracies(list(predictions), list(references), variant)
        return {"vqa_accuracy": mean_score(accuracies)}, [100.0 * a for a in accuracies]
    from mimic.metrics.caption import DEFAULT_METRICS, caption_scores_with_samples

    metrics = tuple(caption_metrics or DEFAULT_METRICS)
    metrics = metrics if "CIDEr" in metrics else ("CIDEr", *metrics)
    scores, each = caption_scores_with_samples(list(predictions), list(references), metrics)
    if caption_metrics is not None and "CIDEr" not in caption_metrics:
        scores.pop("CIDEr")
    return scores, each


def score(
    kind: str,
    predictions: Sequence[str] | Mapping[str, str],
    references,
    variant: str = DEFAULT_VARIANT,
    caption_metrics: Sequence[str] | None = None,
    rows: Sequence[Mapping] | None = None,
) -> dict[str, float]:
    """Scores x100 of ``predictions`` against ``references`` for a task of ``kind``.

    - ``"vqa"``: ``{"vqa_accuracy": ...}`` computed as ``variant`` says; predictions and the
      lists of human answers are parallel lists (dicts keyed by the same ids are accepted too).
    - ``"caption"``: :func:`mimic.metrics.caption.caption_scores` (CIDEr, BLEU-4, METEOR, ROUGE-L, or
      ``caption_metrics``).
    - ``"yes-no"``: MME's scores (:func:`mimic.metrics.mme.mme_scores`); ``"multiple-choice"``: accuracy,
      overall and per question type (:func:`mimic.metrics.multiple_choice.choice_accuracy`); both read
      ``rows`` (:data:`ROW_FIELDS`).
    """
    metric_variant(kind, variant)  # checks both
    if kind in ROW_FIELDS:
        if isinstance(predictions, Mapping):
            raise ValueError(f"score: a {kind} task is scored from prediction rows (lists), not dicts")
        return _scored_by_fields(kind, list(predictions), list(references), rows)[0]
    if kind == "vqa":
        from mimic.metrics.vqa import vqa_score

        if isinstance(predictions, Mapping):
            if set(predictions) != set(references):
                raise ValueError("score: predictions and references hold different ids")
            keys = list(predictions)
            predictions, references = [predictions[k] for k in keys], [references[k] for k in keys]
        return {"vqa_accuracy": vqa_score(list(predictions), list(references), variant)}
    from mimic.metrics.caption import caption_scores

    if caption_metrics is None:
        return caption_scores(predictions, references)
    return caption_scores(predictions, references, caption_metrics)


def _scored_by_fields(kind: str, predictions: list[str], references: list, rows) -> tuple[dict[str, float],
                                                                                       list[float]]:
    """A kind scored with per-row fields (:data:`ROW_FIELDS`): each row must hold them."""
    if rows is None or len(rows) != len(predictions):
        raise ValueError(f"a {kind} task is scored from its prediction rows with {list(ROW_FIELDS[kind])}")
    for number, row in enumerate(rows, start=1):
        missing = [f for f in ROW_FIELDS[kind] if f not in row]
        if missing:
            raise ValueError(f"prediction row {number} ({row.get('id')}) lacks {missing}, which a {kind} task's "
                             "metric reads")
    if kind == "yes-no":
        from mimic.metrics.mme import mme_scores

        return mme_scores(predictions, [r[0] for r in references], [r["category"] for r in rows],
                          [r["image_name"] for r in rows])
    from mimic.metrics.multiple_choice import choice_accuracy

    return choice_accuracy(predictions, [r["answer_letter"] for r in rows], [r["question_type"] for r in rows])
