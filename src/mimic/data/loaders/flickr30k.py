"""Flickr30k captions on the Karpathy split (Young et al., 2014; Karpathy & Fei-Fei, 2015): 5 captions per image.

- ``files`` (the only source): Karpathy's ``dataset_flickr30k.json`` (the format of
  ``dataset_coco.json`` without ``filepath``/``cocoid``: ``{"images": [{"filename":
  "1000092795.jpg", "imgid": 0, "split": "train|val|test", "sentences": [{"raw": ...}],
  ...}], "dataset": "flickr30k"}``, https://cs.stanford.edu/people/karpathy/deepimagesent/) plus
  ``images_dir``, the ``flickr30k-images`` folder holding every ``<filename>``
  (https://shannon.cs.illinois.edu/DenotationGraph/).

Splits (Karpathy): train 29,000 images, val 1,014, test 1,000. The training and support pools
come from ``train`` (disjoint), evaluation from ``test`` (``karpathy_splits`` changes this).
The MimIC reference code evaluates Flickr30k captioning with CIDEr, as for COCO.

Rows (:mod:`mimic.data.loaders.karpathy`): ``id`` = the Flickr photo id (the file name without
``.jpg``), ``image``, ``question`` = ``""``, ``answers`` = the five captions, ``image_id`` (the
same id as a number) and ``file_name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimic.data.loaders.karpathy import KARPATHY_URL, KarpathyDataset, prepare_karpathy
from mimic.data.loaders.registry import register_loader

FLICKR30K_URL = "https://shannon.cs.illinois.edu/DenotationGraph/"


def photo_id(entry: Mapping) -> Any:
    """The Flickr photo id of a Karpathy entry: its file name without the extension."""
    filename = entry["filename"]
    return Path(filename).stem if isinstance(filename, str) else None


FLICKR30K = KarpathyDataset(
    loader="flickr30k",
    title="Flickr30k",
    json_name="dataset_flickr30k.json",
    images="flickr30k-images",
    files_hint=f"dataset_flickr30k.json from {KARPATHY_URL} and the flickr30k-images folder from {FLICKR30K_URL}",
    known_splits=("train", "val", "test"),
    default_splits={"train": ("train",), "eval": ("test",)},
    entry_id=photo_id,
    id_keys=(),
)


@register_loader("flickr30k", "flickr-30k")
def prepare_flickr30k(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a Flickr30k captioning task; see :mod:`mimic.data.loaders` for the spec keys."""
    return prepare_karpathy(spec, out_dir, seed, FLICKR30K)
