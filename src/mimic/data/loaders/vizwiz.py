"""VizWiz-VQA (Gurari et al., CVPR 2018): questions blind people asked about photos they took, 10 crowd
answers each; a question the photo cannot answer has "unanswerable" among (or as all of) its answers.

- ``files``: the official annotations ``Annotations/train.json`` and ``Annotations/val.json`` (each a JSON list
  of ``{"image": "VizWiz_val_00000000.jpg", "question", "answers": [{"answer", "answer_confidence"}] x 10,
  "answer_type", "answerable"}``) and the ``train/`` and ``val/`` image folders, from
  https://vizwiz.org/tasks-and-datasets/vqa/. One question per image: the question id is the image's name
  without its extension (``VizWiz_val_00000000``), as the official evaluation keys it.
- ``hub``: a parquet repository such as ``lmms-lab/VizWiz-VQA`` (question_id, question, answers as strings, the
  image inline), read as the other VQA-format hub data (:mod:`mimic.data.loaders.vqa_format`).

Score: VQA accuracy, the official evaluation's (VizWiz's evaluation code is the VQA one): a prediction scores
min(#humans who gave it / 3, 1) averaged over the 10 leave-one-out subsets of the answers, after the same
answer normalisation; "unanswerable" is scored as any other answer (``tasks.<name>.kind: vqa``). The test
split's answers are not public: evaluate on ``val`` (STAVE and MTV report VizWiz val).
"""

from __future__ import annotations

import json
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
    image_from_file,
    text_list,
    validate_spec,
)
from mimic.data.loaders.registry import register_loader
from mimic.data.loaders.vqa_format import VqaDataset, hub_pool

DOWNLOAD = "https://vizwiz.org/tasks-and-datasets/vqa/"
FILES_KEYS = tuple(f"{what}_{pool}" for pool in POOLS for what in ("annotations", "images"))
OFFICIAL = {"train": ("Annotations/train.json", "train/"), "eval": ("Annotations/val.json", "val/")}
VIZWIZ = VqaDataset(
    loader="vizwiz",
    title="VizWiz-VQA",
    official_files={f"annotations_{pool}": names[0] for pool, names in OFFICIAL.items()},
    download=DOWNLOAD,
    default_hub_splits={"train": "train", "eval": "val"},
)
EXTRA_FIELDS = ("answer_type", "answerable")


@register_loader("vizwiz", "vizwiz-vqa")
def prepare_vizwiz(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a VizWiz-VQA task; see :mod:`mimic.data.loaders` for the spec keys."""
    task = validate_spec(spec, loader=VIZWIZ.loader, kind="vqa", title=VIZWIZ.title, files_keys=FILES_KEYS,
                         default_hub_splits=VIZWIZ.default_hub_splits)
    paths = {pool: _pool_paths(task, pool) for pool in POOLS}  # every path checked before any reading
    pools = {pool: _read_pool(task, pool, paths[pool]) for pool in POOLS}
    return assemble_task(task, pools, out_dir, seed)


def _pool_paths(task: TaskSpec, pool: str) -> dict[str, Path | None]:
    annotations, images = OFFICIAL[pool]
    hint = f"download {annotations} and the {images} images from {DOWNLOAD}"
    if task.source[pool] == "hub":
        return {"images": task.optional_path(f"images_{pool}", f"{pool} image", hint, directory=True)}
    return {
        "annotations": task.path(f"annotations_{pool}", f"{pool} annotations", hint),
        "images": task.path(f"images_{pool}", f"{pool} image", hint, directory=True),
    }


def _read_pool(task: TaskSpec, pool: str, paths: dict) -> Pool:
    label = f"{VIZWIZ.title} {pool} split"
    if task.source[pool] == "hub":
        return hub_pool(task, pool, paths["images"], label, VIZWIZ)
    return _files_pool(task, pool, paths, label)


def _read_annotations(path: Path, pool: str) -> list:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{VIZWIZ.title}: {pool} annotations file {path} is not valid JSON ({err})") from err
    if not isinstance(data, list):
        found = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{VIZWIZ.title}: {pool} annotations file {path} is not a list of questions (found {found}); "
                        f"expected the official {OFFICIAL[pool][0]} from {DOWNLOAD}")
    return data


def _question_id(entry: Any) -> str | None:
    image = entry.get("image") if isinstance(entry, Mapping) else None
    return Path(image).stem if isinstance(image, str) and image else None


def _files_pool(task: TaskSpec, pool: str, paths: dict, label: str) -> Pool:
    entries = _read_annotations(paths["annotations"], pool)
    images = paths["images"]

    def build(entry: Any) -> dict:
        qid = _question_id(entry)
        if qid is None or any(k not in entry for k in ("question", "answers")):
            raise BadSample("malformed record", f"entry {str(entry)[:80]} lacks image/question/answers")
        question = entry["question"]
        if not isinstance(question, str) or not question.strip():
            raise BadSample("malformed record", f"question {qid} has no question text")
        answers = text_list(entry["answers"], "answer", f"question {qid} answers", "no answers")
        row = {"id": qid, "image": image_from_file(images / entry["image"], task), "question": question,
               "answers": answers}
        row.update({k: entry.get(k) for k in EXTRA_FIELDS})
        return row

    source = {"type": "files", **{k: str(v.resolve()) for k, v in paths.items()}}
    return Pool(records=entries, build=build, source=source, label=label,
                ids=lambda: [_question_id(e) for e in entries])
