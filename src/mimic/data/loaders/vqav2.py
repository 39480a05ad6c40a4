"""VQAv2 (Goyal et al., 2017): open-ended questions on COCO images, 10 human answers each.

- ``files``: ``v2_OpenEnded_mscoco_{train,val}2014_questions.json``,
  ``v2_mscoco_{train,val}2014_annotations.json`` and the COCO ``train2014``/``val2014`` image
  folders, from https://visualqa.org/download.html and https://cocodataset.org/#download.
- ``hub``: a parquet repository such as ``lmms-lab/VQAv2`` (question_id, question, answers as
  ``{answer, answer_confidence, answer_id}`` dicts, image bytes, question_type, answer_type).
  Note that ``lmms-lab/VQAv2`` ships only validation/testdev/test, so its ``validation``
  split serves as the evaluation pool and the training pool must come from elsewhere,
  e.g. ``source: {train: files, eval: hub}``. Script-based repositories such as
  ``HuggingFaceM4/VQAv2`` no longer load with ``datasets`` >= 4; the loader says so.

The paper evaluates on 10,000 validation questions and trains on 1,000 training questions.
"""

from __future__ import annotations

from pathlib import Path

from mimic.data.loaders.registry import register_loader
from mimic.data.loaders.vqa_format import VqaDataset, prepare_vqa

VQAV2 = VqaDataset(
    loader="vqav2",
    title="VQAv2",
    official_files={
        "questions_train": "v2_OpenEnded_mscoco_train2014_questions.json",
        "annotations_train": "v2_mscoco_train2014_annotations.json",
        "questions_eval": "v2_OpenEnded_mscoco_val2014_questions.json",
        "annotations_eval": "v2_mscoco_val2014_annotations.json",
    },
    download="https://visualqa.org/download.html",
    default_hub_splits={"train": "train", "eval": "validation"},
)


@register_loader("vqav2", "vqa-v2")
def prepare_vqav2(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a VQAv2 task; see :mod:`mimic.data.loaders` for the spec keys."""
    return prepare_vqa(spec, out_dir, seed, VQAV2)
