"""OK-VQA (Marino et al., 2019): questions that need outside knowledge, on COCO images.

- ``files``: ``OpenEnded_mscoco_{train,val}2014_questions.json`` and
  ``mscoco_{train,val}2014_annotations.json`` (the VQA format; 10 answers per question, 5
  distinct ones each given twice) and the COCO ``train2014``/``val2014`` image folders, from
  https://okvqa.allenai.org/download.html.
- ``hub``: a parquet repository such as ``lmms-lab/OK-VQA`` (question_id as a string, answers
  a list of strings, image bytes). It ships only the ``val2014`` split, the evaluation pool;
  the training pool comes from the official files (``source: {train: files, eval: hub}``).

The paper evaluates on the full validation set (5,046 questions): ``n_eval: null``.
"""

from __future__ import annotations

from pathlib import Path

from mimic.data.loaders.registry import register_loader
from mimic.data.loaders.vqa_format import VqaDataset, prepare_vqa

OKVQA = VqaDataset(
    loader="okvqa",
    title="OK-VQA",
    official_files={
        "questions_train": "OpenEnded_mscoco_train2014_questions.json",
        "annotations_train": "mscoco_train2014_annotations.json",
        "questions_eval": "OpenEnded_mscoco_val2014_questions.json",
        "annotations_eval": "mscoco_val2014_annotations.json",
    },
    download="https://okvqa.allenai.org/download.html",
    default_hub_splits={"train": "train", "eval": "val2014"},
)


@register_loader("okvqa", "ok-vqa")
def prepare_okvqa(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare an OK-VQA task; see :mod:`mimic.data.loaders` for the spec keys."""
    return prepare_vqa(spec, out_dir, seed, OKVQA)
