"""Caption metrics of the COCO caption evaluation: CIDEr-D, BLEU-4, METEOR, ROUGE-L.

The scorers are pycocoevalcap's own (``Cider`` is CIDEr-D: clipped tf-idf n-gram similarity
with the Gaussian length penalty, sigma 6; ``Bleu`` with the "closest" reference length;
``Rouge`` with beta 1.2), fed the PTB-tokenized text exactly as ``COCOEvalCap`` feeds them.
The Java steps (tokenizer, METEOR) run through :mod:`mimic.metrics.coco_java`, which works
when the pycocoevalcap directory is read-only. SPICE is never computed.

Scores are reported x100, as in papers (so CIDEr 1.10 is reported as 110.0). CIDEr's idf is
computed over the references of the scored set, so score the whole evaluation set in one
call: a single image gives CIDEr 0 (log of one document).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from mimic.metrics.coco_java import MeteorError, meteor_score, ptb_tokenize, require_java

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")
KNOWN_METRICS = ("CIDEr", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")


def caption_scores(
    predictions: Mapping[str, str] | Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Corpus-level caption scores x100, keyed by metric name (one of :data:`KNOWN_METRICS`).

    ``predictions`` and ``references`` are either dicts keyed by the same ids (one predicted
    caption per id, a non-empty list of reference captions per id) or parallel lists. When
    METEOR cannot run it is left out of the result and a warning is logged.
    """
    return caption_scores_with_samples(predictions, references, metrics)[0]


def caption_scores_with_samples(
    predictions: Mapping[str, str] | Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> tuple[dict[str, float], list[float] | None]:
    """:func:`caption_scores` and each caption's own CIDEr-D x100, in the order of the ids (None without
    CIDEr). The corpus CIDEr is their mean; the per-caption values still use the corpus' document
    frequencies, so they are comparable within one evaluation only."""
    unknown = [m for m in metrics if m not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; choose from {list(KNOWN_METRICS)}")
    preds, refs = _as_dicts(predictions, references)
    require_java()
    tokenized = ptb_tokenize({**{f"ref:{k}": v for k, v in refs.items()}, **{f"hyp:{k}": [preds[k]] for k in preds}})
    gts = {k: tokenized[f"ref:{k}"] for k in refs}
    res = {k: tokenized[f"hyp:{k}"] for k in refs}

    scores: dict[str, float] = {}
    per_caption = None
    bleu: list[float] = []
    for metric in metrics:
        if metric == "CIDEr":
            corpus, each = Cider().compute_score(gts, res)
            scores[metric] = 100.0 * float(corpus)
            per_caption = [100.0 * float(x) for x in each]
        elif metric.startswith("BLEU-"):
            bleu = bleu or Bleu(4).compute_score(gts, res, verbose=0)[0]
            scores[metric] = 100.0 * float(bleu[int(metric[-1]) - 1])
        elif metric == "ROUGE-L":
            scores[metric] = 100.0 * float(Rouge().compute_score(gts, res)[0])
        elif metric == "METEOR":
            try:
                scores[metric] = 100.0 * meteor_score(gts, res)
            except MeteorError as err:
                log.warning("METEOR is missing from the caption scores: %s", err)
    return scores, per_caption


def _as_dicts(predictions, references) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Both inputs as dicts keyed by string id, checked to hold the same ids and usable values."""
    if isinstance(predictions, Mapping) != isinstance(references, Mapping):
        raise TypeError("caption_scores: give predictions and references both as dicts or both as lists")
    if isinstance(predictions, Mapping):
        preds = {str(k): v for k, v in predictions.items()}
        refs = {str(k): list(v) for k, v in references.items()}
        missing = sorted(set(preds) ^ set(refs))
        if missing:
            raise ValueError(f"caption_scores: ids {missing[:5]} are in only one of predictions and references")
    else:
        if len(predictions) != len(references):
            raise ValueError(f"caption_scores: {len(predictions)} predictions but {len(references)} reference lists")
        preds = {str(i): p for i, p in enumerate(predictions)}
        refs = {str(i): list(r) for i, r in enumerate(references)}
    if not preds:
        raise ValueError("caption_scores: no predictions to score")
    for key in refs:
        if not isinstance(preds[key], str):
            raise TypeError(f"caption_scores: the prediction for id {key!r} is not a string: {preds[key]!r}")
        if not refs[key] or not all(isinstance(r, str) for r in refs[key]):
            raise ValueError(f"caption_scores: id {key!r} needs a non-empty list of reference strings")
    return preds, refs
