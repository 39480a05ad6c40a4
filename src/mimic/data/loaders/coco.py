"""COCO captions on the Karpathy split (Karpathy & Fei-Fei, 2015): 5+ captions per image.

- ``files``: ``dataset_coco.json`` (``{"images": [{"filepath": "val2014", "filename":
  "COCO_val2014_....jpg", "split": "train|restval|val|test", "cocoid": ..., "sentences":
  [{"raw": ...}]}]}``, https://cs.stanford.edu/people/karpathy/deepimagesent/) plus
  ``images_dir``, a COCO root holding ``train2014/`` and ``val2014/`` (or one flat folder).
  ``karpathy_splits`` says which Karpathy splits make each pool: by default ``train`` and
  ``restval`` (restval counts as train) for the training pool and ``test`` (5,000 images) for
  evaluation.
- ``hub``: parquet rows through ``datasets``, either text-only Karpathy rows (e.g.
  ``yerevann/coco-karpathy``: filepath, filename, sentences as strings, split, cocoid; images
  from ``images_dir``) or rows with images (e.g. ``lmms-lab/COCO-Caption``: image, answer =
  the captions, id, file_name). ``hub_splits`` names the hub splits of each pool.

Rows (:mod:`mimic.data.loaders.karpathy`): ``id`` (the COCO image id), ``image``, ``question``
= ``""``, ``answers`` = the reference captions, plus ``image_id`` and ``file_name``.
"""

from __future__ import annotations

from pathlib import Path

from mimic.data.loaders.karpathy import KARPATHY_URL, KarpathyDataset, prepare_karpathy
from mimic.data.loaders.registry import register_loader

COCO_URL = "https://cocodataset.org/#download"
COCO_KARPATHY = KarpathyDataset(
    loader="coco-karpathy",
    title="COCO Karpathy",
    json_name="dataset_coco.json",
    images="COCO image",
    files_hint=f"dataset_coco.json from {KARPATHY_URL} and the COCO train2014/val2014 images from {COCO_URL}",
    known_splits=("train", "restval", "val", "test"),
    default_splits={"train": ("train", "restval"), "eval": ("test",)},
    entry_id=lambda entry: entry["cocoid"],
    id_keys=("cocoid",),
    hub_id_columns=("cocoid", "image_id", "id", "question_id", "imgid"),
    default_hub_splits={"train": "train", "eval": "test"},
)


@register_loader("coco-karpathy", "coco", "coco_karpathy")
def prepare_coco(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a COCO Karpathy captioning task; see :mod:`mimic.data.loaders` for the spec keys."""
    return prepare_karpathy(spec, out_dir, seed, COCO_KARPATHY)
