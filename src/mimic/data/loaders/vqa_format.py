"""Questions + annotations in the VQA format, shared by VQAv2 and OK-VQA.

Two sources per pool:

- ``files``: the official questions JSON ``{"questions": [{"image_id", "question",
  "question_id"}]}``, the annotations JSON ``{"annotations": [{"question_id", "image_id",
  "answers": [{"answer", ...}] x 10, "multiple_choice_answer", "question_type",
  "answer_type"}]}`` and a directory of COCO images (``COCO_train2014_<12-digit image id>.jpg`` or
  ``<12-digit image id>.jpg``).
- ``hub``: parquet rows read through ``datasets``, with the common column variants: id
  ``question_id``/``qid``/``id``; answers a list of ``{"answer", ...}`` dicts, a list of
  strings, or a dict of lists; the image inline (``image``), or by ``image_id`` in the
  pool's image directory when the rows carry no image.

Rows: ``id`` (the question id), ``image``, ``question``, ``answers`` (the human answers, in
order), plus ``image_id``, ``question_type``, ``answer_type``, ``multiple_choice_answer``
where the source has them.

``question_ids`` (a shipped question set such as ``vqav2-val-10k``, a file of ids or a list;
:mod:`mimic.data.loaders.question_ids`) fixes the evaluation questions and their order.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    index_coco_images,
    load_hub_split,
    read_json,
    require_columns,
    text_list,
    validate_spec,
)
from mimic.data.loaders.question_ids import resolve_question_ids

FILES_KEYS = tuple(f"{what}_{pool}" for pool in POOLS for what in ("questions", "annotations", "images"))
EXTRA_FIELDS = ("question_type", "answer_type", "multiple_choice_answer")
HUB_COLUMNS = {
    "id": ("question_id", "qid", "id"),
    "question": ("question",),
    "answers": ("answers", "direct_answers", "answer"),
}
HUB_IMAGE_COLUMNS = ("image", "img")
COCO_IMAGE_FOLDERS = {"train": "train2014", "eval": "val2014"}
COCO_DOWNLOAD = "https://cocodataset.org/#download"
HUB_IMAGE_ID_COLUMNS = ("image_id", "id_image", "imgid", "img_id", "cocoid")


@dataclass(frozen=True)
class VqaDataset:
    """What differs between VQA-format datasets: names, official file names, where to get them."""

    loader: str
    title: str
    official_files: Mapping[str, str]  # questions/annotations files key -> official file name, for messages
    download: str  # the URL of the official questions and annotations
    default_hub_splits: Mapping[str, str]


def prepare_vqa(spec: dict, out_dir: Path, seed: int, dataset: VqaDataset) -> dict:
    """Validate ``spec``, check every path, read both pools and write the task; returns meta."""
    task = validate_spec(
        spec,
        loader=dataset.loader,
        kind="vqa",
        title=dataset.title,
        files_keys=FILES_KEYS,
        default_hub_splits=dataset.default_hub_splits,
        option_keys={"question_ids": None},
    )
    eval_ids = resolve_question_ids(task.options["question_ids"], task.title, task.key("question_ids"))
    paths = {pool: _pool_paths(task, pool, dataset) for pool in POOLS}  # every path checked before any reading
    pools = {pool: _read_pool(task, pool, paths[pool], dataset) for pool in POOLS}
    return assemble_task(task, pools, out_dir, seed, eval_ids=eval_ids)


def _pool_paths(task: TaskSpec, pool: str, dataset: VqaDataset) -> dict[str, Path | None]:
    def hint(key: str) -> str:
        if key in dataset.official_files:
            return f"download {dataset.official_files[key]} from {dataset.download}"
        return f"download the COCO {COCO_IMAGE_FOLDERS[pool]} images from {COCO_DOWNLOAD}"

    images = f"images_{pool}"
    if task.source[pool] == "hub":
        return {"images": task.optional_path(images, f"{pool} image", hint(images), directory=True)}
    return {
        "questions": task.path(f"questions_{pool}", f"{pool} questions", hint(f"questions_{pool}")),
        "annotations": task.path(f"annotations_{pool}", f"{pool} annotations", hint(f"annotations_{pool}")),
        "images": task.path(images, f"{pool} image", hint(images), directory=True),
    }


def _read_pool(task: TaskSpec, pool: str, paths: dict, dataset: VqaDataset) -> Pool:
    label = f"{dataset.title} {pool} split"
    if task.source[pool] == "hub":
        return hub_pool(task, pool, paths["images"], label, dataset)
    return _files_pool(task, pool, paths, label)


# ----------------------------------------------------------------------------- official files


def _files_pool(task: TaskSpec, pool: str, paths: dict, label: str) -> Pool:
    questions = read_json(paths["questions"], task.title, f"{pool} questions", "questions")
    annotations = read_json(paths["annotations"], task.title, f"{pool} annotations", "annotations")
    by_question = {a["question_id"]: a for a in annotations if isinstance(a, Mapping) and "question_id" in a}
    images = index_coco_images(paths["images"], task.title, task.key("files", f"images_{pool}"))

    def build(question: Any) -> dict:
        if not isinstance(question, Mapping) or any(k not in question for k in ("question_id", "image_id", "question")):
            detail = f"question entry {str(question)[:80]} lacks question_id/image_id/question"
            raise BadSample("malformed record", detail)
        qid = question["question_id"]
        annotation = by_question.get(qid)
        if annotation is None:
            raise BadSample("no annotation", f"question_id {qid} has no entry in {paths['annotations']}")
        answers = _answer_list(annotation.get("answers"), f"question_id {qid}")
        image_path = _image_path(images, question["image_id"], paths["images"], qid)
        row = _row(qid, image_from_file(image_path, task), question["question"], answers)
        row["image_id"] = int(question["image_id"])
        row.update({k: annotation.get(k) for k in EXTRA_FIELDS})
        return row

    def question_ids() -> list:
        return [q.get("question_id") if isinstance(q, Mapping) else None for q in questions]

    source = {"type": "files", **{k: str(v.resolve()) for k, v in paths.items()}}
    return Pool(records=questions, build=build, source=source, label=label, ids=question_ids)


def _image_path(images: dict[int, Path], image_id: Any, directory: Path, qid: Any) -> Path:
    try:
        key = int(image_id)
    except (TypeError, ValueError):
        raise BadSample("malformed record", f"question_id {qid} has image_id {image_id!r}") from None
    if key not in images:
        raise BadSample("missing image", f"no image file for image_id {key} (question_id {qid}) in {directory}")
    return images[key]


# ----------------------------------------------------------------------------- hub parquet


def hub_pool(task: TaskSpec, pool: str, images_dir: Path | None, label: str, dataset: VqaDataset) -> Pool:
    """A pool of parquet rows through ``datasets`` (see the module docstring for the accepted columns)."""
    ds = load_hub_split(task, pool, f"the official files from {dataset.download}")
    columns = ds.column_names
    picked = require_columns(task, pool, columns, HUB_COLUMNS)
    image_column = first_column(columns, HUB_IMAGE_COLUMNS)
    image_id_column = first_column(columns, HUB_IMAGE_ID_COLUMNS)
    index = None
    if image_column is None:
        if image_id_column is None or images_dir is None:
            raise DataError(
                f"{task.title}: the {pool} hub data {task.hub_id[pool]!r} has no image column (columns: {columns}); "
                f"it needs an image id column {list(HUB_IMAGE_ID_COLUMNS)} and {task.key('files', 'images_' + pool)} "
                "set to the COCO image folder"
            )
        index = index_coco_images(images_dir, task.title, task.key("files", f"images_{pool}"))

    def build(record: dict) -> dict:
        qid = record[picked["id"]]
        if qid is None:
            raise BadSample("malformed record", f"empty {picked['id']}")
        answers = _answer_list(record[picked["answers"]], f"question {qid}")
        if index is None:
            image = image_from_value(record[image_column], task, root=images_dir)
        else:
            image = image_from_file(_image_path(index, record[image_id_column], images_dir, qid), task)
        row = _row(qid, image, record[picked["question"]], answers)
        if image_id_column is not None and record[image_id_column] is not None:
            row["image_id"] = int(record[image_id_column])
        row.update({k: record[k] for k in EXTRA_FIELDS if k in record})
        return row

    source = hub_source(task, pool, images_dir)
    return Pool(records=ds, build=build, source=source, label=label, ids=lambda: list(ds[picked["id"]]))


# ----------------------------------------------------------------------------- rows


def _answer_list(value: Any, what: str) -> list[str]:
    """Human answers as strings, from ``[{"answer": ...}]``, ``["..."]``, ``{"answer": [...]}`` or a string."""
    return text_list(value, "answer", f"{what} answers", "no answers")


def _row(qid: Any, image: dict, question: Any, answers: list[str]) -> dict:
    if not isinstance(question, str) or not question.strip():
        raise BadSample("malformed record", f"question {qid} has no question text")
    return {"id": str(qid), "image": image, "question": question, "answers": answers}
