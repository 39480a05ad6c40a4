"""COCO captions on the Karpathy split (Karpathy & Fei-Fei, 2015): 5+ captions per image.

- ``files``: ``dataset_coco.json`` (``{"images": [{"filepath": "val2014", "filename":
  "COCO_val2014_....jpg", "split": "train|restval|val|test", "cocoid": ..., "sentences":
  [{"raw": ...}]}]}``, https://cs.stanford.edu/people/karpathy/deepimagesent/) plus
  ``images_dir``, a COCO root holding ``train2014/`` and ``val2014/`` (or one flat folder).
  ``karpathy_splits`` says which Karpathy splits make each pool: by default ``train`` and
  ``restval`` (restval counts as train) for the training pool and ``test`` for evaluation.
- ``hub``: parquet rows through ``datasets``, either text-only Karpathy rows (e.g.
  ``yerevann/coco-karpathy``: filepath, filename, sentences as strings, split, cocoid; images
  from ``images_dir``) or rows with images (e.g. ``lmms-lab/COCO-Caption``: image, answer =
  the captions, id, file_name). ``hub_splits`` names the hub splits of each pool.

Rows: ``id`` (the COCO image id), ``image``, ``question`` = ``""``, ``answers`` = the
reference captions, plus ``image_id`` and ``file_name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimic.data.loaders.common import (
    POOLS,
    BadSample,
    DataError,
    Pool,
    TaskSpec,
    assemble_task,
    first_column,
    image_from_file,
    image_from_value,
    load_hub_split,
    read_json,
    require_columns,
    text_list,
    validate_spec,
)
from mimic.data.loaders.registry import register_loader

TITLE = "COCO Karpathy"
FILES_KEYS = ("karpathy_json", "images_dir")
DEFAULT_KARPATHY_SPLITS = {"train": ["train", "restval"], "eval": ["test"]}
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/"
COCO_URL = "https://cocodataset.org/#download"
DOWNLOAD = f"get dataset_coco.json from {KARPATHY_URL} and the train2014/val2014 images from {COCO_URL}"
HUB_COLUMNS = {
    "id": ("cocoid", "image_id", "id", "question_id", "imgid"),
    "captions": ("sentences", "captions", "answer", "answers", "caption", "sentences_raw"),
}
HUB_FILE_COLUMNS = ("filename", "file_name")


@register_loader("coco-karpathy", "coco", "coco_karpathy")
def prepare_coco(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a COCO Karpathy captioning task; see :mod:`mimic.data.loaders` for the spec keys."""
    task = validate_spec(
        spec,
        loader="coco-karpathy",
        kind="caption",
        title=TITLE,
        files_keys=FILES_KEYS,
        default_hub_splits={"train": "train", "eval": "test"},
        option_keys={"karpathy_splits": DEFAULT_KARPATHY_SPLITS},
    )
    karpathy_splits = _karpathy_splits(task)
    uses_files = any(task.source[pool] == "files" for pool in POOLS)
    karpathy_json = task.path("karpathy_json", "Karpathy split", DOWNLOAD) if uses_files else None
    images_dir = (
        task.path("images_dir", "COCO image", DOWNLOAD, directory=True)
        if uses_files
        else task.optional_path("images_dir", "COCO image", DOWNLOAD, directory=True)
    )
    entries = read_json(karpathy_json, TITLE, "Karpathy split", "images") if karpathy_json else []
    pools = {}
    for pool in POOLS:
        if task.source[pool] == "files":
            pools[pool] = _files_pool(task, pool, entries, karpathy_splits[pool], karpathy_json, images_dir)
        else:
            pools[pool] = _hub_pool(task, pool, images_dir)
    return assemble_task(task, pools, out_dir, seed)


def _karpathy_splits(task: TaskSpec) -> dict[str, set[str]]:
    value = task.options["karpathy_splits"]
    where = task.key("karpathy_splits")
    if not isinstance(value, Mapping) or set(value) - set(POOLS):
        raise ValueError(f"{TITLE}: {where} must be a mapping with keys {list(POOLS)}, e.g. {DEFAULT_KARPATHY_SPLITS}")
    splits = {}
    for pool in POOLS:
        names = value.get(pool, DEFAULT_KARPATHY_SPLITS[pool])
        names = [names] if isinstance(names, str) else list(names)
        unknown = sorted(set(names) - {"train", "restval", "val", "test"})
        if not names or unknown:
            valid = ["train", "restval", "val", "test"]
            raise ValueError(f"{TITLE}: {where}.{pool} must list Karpathy splits from {valid}, got {names}")
        splits[pool] = set(names)
    if splits["train"] & splits["eval"]:
        shared = sorted(splits["train"] & splits["eval"])
        raise ValueError(f"{TITLE}: {where}: the train and eval pools share Karpathy splits {shared}")
    return splits


def _files_pool(task: TaskSpec, pool: str, entries: list, splits: set[str], source: Path, images_dir: Path) -> Pool:
    records = [e for e in entries if not isinstance(e, Mapping) or e.get("split") in splits]

    def build(entry: Any) -> dict:
        if not isinstance(entry, Mapping) or any(k not in entry for k in ("cocoid", "filename", "sentences")):
            raise BadSample("malformed record", f"image entry {str(entry)[:80]} lacks cocoid/filename/sentences")
        path = _image_path(images_dir, entry.get("filepath"), entry["filename"])
        return _row(entry["cocoid"], image_from_file(path, task), entry["sentences"], entry["filename"])

    meta_source = {
        "type": "files",
        "karpathy_json": str(source.resolve()),
        "karpathy_splits": sorted(splits),
        "images": str(images_dir.resolve()),
    }
    label = f"{TITLE} {pool} pool ({'+'.join(sorted(splits))})"
    return Pool(records=records, build=build, source=meta_source, label=label)


def _hub_pool(task: TaskSpec, pool: str, images_dir: Path | None) -> Pool:
    ds = load_hub_split(task, pool, f"dataset_coco.json from {KARPATHY_URL} and the COCO images from {COCO_URL}")
    columns = ds.column_names
    picked = require_columns(task, pool, columns, HUB_COLUMNS)
    image_column = "image" if "image" in columns else None
    file_column = first_column(columns, HUB_FILE_COLUMNS)
    if image_column is None and (file_column is None or images_dir is None):
        raise DataError(
            f"{TITLE}: the {pool} hub data {task.hub_id[pool]!r} has no image column (columns: {columns}); "
            f"it needs a file name column {list(HUB_FILE_COLUMNS)} and {task.key('files', 'images_dir')}"
        )

    def build(record: dict) -> dict:
        file_name = record.get(file_column) if file_column else None
        if image_column is not None:
            image = image_from_value(record[image_column], task, root=images_dir)
        else:
            if not isinstance(file_name, str):
                raise BadSample("malformed record", f"image {record[picked['id']]} has no {file_column}")
            image = image_from_file(_image_path(images_dir, record.get("filepath"), file_name), task)
        return _row(record[picked["id"]], image, record[picked["captions"]], file_name)

    source = {
        "type": "hub",
        "hub_id": task.hub_id[pool],
        "splits": list(task.hub_splits[pool]),
        "config": task.hub_config,
        "revision": task.hub_revision,
    }
    if images_dir is not None:
        source["images"] = str(images_dir.resolve())
    return Pool(records=ds, build=build, source=source, label=f"{TITLE} {pool} hub split")


def _image_path(images_dir: Path, filepath: Any, filename: str) -> Path:
    """``images_dir/filepath/filename`` (the COCO root layout), else ``images_dir/filename`` (one flat folder)."""
    nested = images_dir / filepath / filename if isinstance(filepath, str) and filepath else None
    if nested is not None and nested.is_file():
        return nested
    flat = images_dir / filename
    if flat.is_file():
        return flat
    raise BadSample("missing image", f"image file {nested or flat} not found (also looked for {flat})")


def _caption_list(value: Any) -> list[str]:
    """Captions from ``["..."]``, ``[{"raw": ...}]``, ``{"raw": [...]}`` or one string; blanks dropped."""
    return text_list(value, "raw", "reference captions", "no captions", strip_blank=True)


def _row(image_id: Any, image: dict, captions: Any, file_name: str | None) -> dict:
    if image_id is None:
        raise BadSample("malformed record", "the image has no id")
    row = {"id": str(image_id), "image": image, "question": "", "answers": _caption_list(captions)}
    if isinstance(image_id, int) or (isinstance(image_id, str) and image_id.isdigit()):
        row["image_id"] = int(image_id)
    row["file_name"] = file_name
    return row
