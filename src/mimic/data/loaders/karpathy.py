"""Captioning datasets in Karpathy's split files (Karpathy & Fei-Fei, 2015), shared by COCO and Flickr30k.

- ``files``: Karpathy's ``dataset_<name>.json`` (``{"images": [{"filename": ..., "split":
  "train|restval|val|test", "sentences": [{"raw": ...}], ...}]}``, with ``filepath`` and
  ``cocoid`` for COCO) from https://cs.stanford.edu/people/karpathy/deepimagesent/, plus
  ``images_dir``: the folder holding the images (``<images_dir>/<filepath>/<filename>``, or
  ``<images_dir>/<filename>`` in one flat folder). The top-level key ``karpathy_splits`` says which
  Karpathy splits make each pool (by default the dataset's training splits for ``train``, and
  ``test`` for ``eval``).
- ``hub`` (datasets that allow it): parquet rows through ``datasets``, either text-only Karpathy
  rows (filepath, filename, sentences, split, an image id; images from ``images_dir``) or rows
  with images (image, captions, an id). ``hub_splits`` names the hub splits of each pool.

Rows: ``id`` (the dataset's image id), ``image``, ``question`` = ``""``, ``answers`` = the
reference captions, plus ``image_id`` (when the id is a number) and ``file_name``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    hub_source,
    image_from_file,
    image_from_value,
    load_hub_split,
    read_json,
    require_columns,
    text_list,
    validate_spec,
)

FILES_KEYS = ("karpathy_json", "images_dir")
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/"
HUB_CAPTION_COLUMNS = ("sentences", "captions", "answer", "answers", "caption", "sentences_raw")
HUB_FILE_COLUMNS = ("filename", "file_name")


@dataclass(frozen=True)
class KarpathyDataset:
    """What differs between Karpathy-split caption datasets."""

    loader: str
    title: str
    json_name: str  # Karpathy's file name, for messages: dataset_coco.json
    images: str  # what images_dir holds, for messages
    files_hint: str  # where to get the JSON and the images, a noun phrase for messages
    known_splits: tuple[str, ...]  # the Karpathy split names of the dataset
    default_splits: Mapping[str, tuple[str, ...]]  # pool -> Karpathy splits
    entry_id: Callable[[Mapping], Any]  # a JSON entry -> its image id
    id_keys: tuple[str, ...]  # keys an entry needs besides filename and sentences
    hub_id_columns: tuple[str, ...] = ()  # empty: the dataset reads files only
    default_hub_splits: Mapping[str, str] | None = None


def prepare_karpathy(spec: dict, out_dir: Path, seed: int, dataset: KarpathyDataset) -> dict:
    """Validate ``spec``, check every path, read both pools and write the task; returns meta."""
    task = validate_spec(
        spec,
        loader=dataset.loader,
        kind="caption",
        title=dataset.title,
        files_keys=FILES_KEYS,
        default_hub_splits=dataset.default_hub_splits or {"train": "train", "eval": "test"},
        option_keys={"karpathy_splits": {pool: list(names) for pool, names in dataset.default_splits.items()}},
    )
    if not dataset.hub_id_columns and any(task.source[pool] != "files" for pool in POOLS):
        raise ValueError(
            f"{dataset.title}: {task.key('source')} must be files (the {dataset.loader} loader reads "
            f"{dataset.json_name} and {dataset.images}); got {task.source}"
        )
    karpathy_splits = _karpathy_splits(task, dataset)
    uses_files = any(task.source[pool] == "files" for pool in POOLS)
    hint = f"get {dataset.files_hint}"
    karpathy_json = task.path("karpathy_json", "Karpathy split", hint) if uses_files else None
    images_dir = (
        task.path("images_dir", dataset.images, hint, directory=True)
        if uses_files
        else task.optional_path("images_dir", dataset.images, hint, directory=True)
    )
    entries = read_json(karpathy_json, dataset.title, "Karpathy split", "images") if karpathy_json else []
    pools = {}
    for pool in POOLS:
        if task.source[pool] == "files":
            pools[pool] = _files_pool(task, dataset, pool, entries, karpathy_splits[pool], karpathy_json, images_dir)
        else:
            pools[pool] = _hub_pool(task, dataset, pool, images_dir)
    return assemble_task(task, pools, out_dir, seed)


def _karpathy_splits(task: TaskSpec, dataset: KarpathyDataset) -> dict[str, set[str]]:
    value = task.options["karpathy_splits"]
    where = task.key("karpathy_splits")
    defaults = {pool: list(names) for pool, names in dataset.default_splits.items()}
    if not isinstance(value, Mapping) or set(value) - set(POOLS):
        raise ValueError(f"{dataset.title}: {where} must be a mapping with keys {list(POOLS)}, e.g. {defaults}")
    splits = {}
    for pool in POOLS:
        names = value.get(pool, defaults[pool])
        names = [names] if isinstance(names, str) else list(names)
        unknown = sorted(set(names) - set(dataset.known_splits))
        if not names or unknown:
            valid = list(dataset.known_splits)
            raise ValueError(f"{dataset.title}: {where}.{pool} must list Karpathy splits from {valid}, got {names}")
        splits[pool] = set(names)
    if splits["train"] & splits["eval"]:
        shared = sorted(splits["train"] & splits["eval"])
        raise ValueError(f"{dataset.title}: {where}: the train and eval pools share Karpathy splits {shared}")
    return splits


def _files_pool(
    task: TaskSpec, dataset: KarpathyDataset, pool: str, entries: list, splits: set[str], source: Path, images: Path
) -> Pool:
    records = [e for e in entries if not isinstance(e, Mapping) or e.get("split") in splits]
    needed = (*dataset.id_keys, "filename", "sentences")

    def build(entry: Any) -> dict:
        if not isinstance(entry, Mapping) or any(k not in entry for k in needed):
            raise BadSample("malformed record", f"image entry {str(entry)[:80]} lacks {'/'.join(needed)}")
        path = _image_path(images, entry.get("filepath"), entry["filename"])
        return _row(dataset.entry_id(entry), image_from_file(path, task), entry["sentences"], entry["filename"])

    meta_source = {
        "type": "files",
        "karpathy_json": str(source.resolve()),
        "karpathy_splits": sorted(splits),
        "images": str(images.resolve()),
    }
    label = f"{dataset.title} {pool} pool ({'+'.join(sorted(splits))})"
    return Pool(records=records, build=build, source=meta_source, label=label)


def _hub_pool(task: TaskSpec, dataset: KarpathyDataset, pool: str, images_dir: Path | None) -> Pool:
    ds = load_hub_split(task, pool, dataset.files_hint)
    columns = ds.column_names
    picked = require_columns(task, pool, columns, {"id": dataset.hub_id_columns, "captions": HUB_CAPTION_COLUMNS})
    image_column = "image" if "image" in columns else None
    file_column = first_column(columns, HUB_FILE_COLUMNS)
    if image_column is None and (file_column is None or images_dir is None):
        raise DataError(
            f"{dataset.title}: the {pool} hub data {task.hub_id[pool]!r} has no image column (columns: {columns}); "
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

    source = hub_source(task, pool, images_dir)
    return Pool(records=ds, build=build, source=source, label=f"{dataset.title} {pool} hub split")


def _image_path(images_dir: Path, filepath: Any, filename: str) -> Path:
    """``images_dir/filepath/filename`` (e.g. the COCO root layout), else ``images_dir/filename`` (one flat folder)."""
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
    if image_id is None or (isinstance(image_id, str) and not image_id):
        raise BadSample("malformed record", "the image has no id")
    row = {"id": str(image_id), "image": image, "question": "", "answers": _caption_list(captions)}
    if isinstance(image_id, int) or (isinstance(image_id, str) and image_id.isdigit()):
        row["image_id"] = int(image_id)
    row["file_name"] = file_name
    return row
