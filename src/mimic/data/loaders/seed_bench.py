"""SEED-Bench (Li et al., 2023, "SEED-Bench: Benchmarking Multimodal LLMs with Generative Comprehension"), v1,
its image part: multiple-choice questions (4 options) of 9 evaluation dimensions (question types 1-9; 10-12 are
video questions, left out); tasks of kind ``multiple-choice``, answered by likelihood ranking of the options
(:mod:`mimic.models.likelihood`, ``rank_by``) and scored by accuracy, overall and per question type
(:mod:`mimic.metrics.multiple_choice`), as the official eval.py.

- ``files``: ``annotations``, the official ``SEED-Bench.json`` (``{"questions": [{"question_id", "question",
  "choice_a".."choice_d", "answer": "A".."D", "question_type_id", "data_id", "data_type"}, ...],
  "question_type": {name: id}}``), and ``images``, the ``SEED-Bench-image/`` folder (the file named by
  ``data_id``), from https://huggingface.co/datasets/AILab-CVC/SEED-Bench.
- ``hub``: a parquet repository such as ``lmms-lab/SEED-Bench`` (split ``test``: the same columns, ``image`` a
  list holding the image for image questions); rows whose ``data_type`` is not ``image`` are left out.

Each row: ``id`` = the question id, ``question``, ``answers`` = [the right option's text] (what a demonstration
shows and training teacher-forces), ``choices`` (the 4 option texts), ``answer_letter``, ``question_type_id`` and
``question_type`` (the dimension's name), ``data_id``. No training split: train/support come from held-out images
(``holdout``, :mod:`mimic.data.loaders.benchmark`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mimic.data.loaders.benchmark import HOLDOUT, check_holdout, holdout_pools
from mimic.data.loaders.common import (
    BadSample,
    DataError,
    TaskSpec,
    assemble_task,
    hub_source,
    image_from_file,
    image_from_value,
    load_hub_split,
    require_columns,
    validate_spec,
)
from mimic.data.loaders.registry import register_loader
from mimic.data.schema import image_record

TITLE = "SEED-Bench"
DOWNLOAD = "https://huggingface.co/datasets/AILab-CVC/SEED-Bench (SEED-Bench.json, SEED-Bench-image.zip)"
FILES_KEYS = ("annotations", "images")
LETTERS = ("A", "B", "C", "D")
CHOICES = tuple(f"choice_{c.lower()}" for c in LETTERS)
QUESTION_TYPES = {1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes",
                  4: "Instance Location", 5: "Instance Counting", 6: "Spatial Relation", 7: "Instance Interaction",
                  8: "Visual Reasoning", 9: "Text Understanding"}  # the image dimensions (SEED-Bench.json)
RANK_BY = ("mean", "sum")  # mimic.models.likelihood.RANK_BY (the data layer does not import models)
HUB_COLUMNS = {"question_id": ("question_id",), "question": ("question",), "answer": ("answer",),
               "question_type_id": ("question_type_id",), "data_id": ("data_id",), "image": ("image",),
               **{c: (c,) for c in CHOICES}}


@register_loader("seed-bench", "seed_bench", "seedbench")
def prepare_seed_bench(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare a SEED-Bench (image) task; see :mod:`mimic.data.loaders` for the spec keys."""
    task = validate_spec(spec, loader="seed-bench", kind="multiple-choice", title=TITLE, files_keys=FILES_KEYS,
                         default_hub_splits={"train": "test", "eval": "test"},
                         option_keys={HOLDOUT: 0, "rank_by": "mean"})
    if task.options["rank_by"] not in RANK_BY:
        raise ValueError(f"{TITLE}: {task.key('rank_by')} is {task.options['rank_by']!r}; valid: {list(RANK_BY)} "
                         "(mean: the official per-token loss; sum: the whole option's log-likelihood)")
    check_holdout(task, "images")
    if task.source["eval"] == "hub":
        records, build, source = _hub_records(task)
    else:
        hint = f"download it from {DOWNLOAD}"
        annotations = task.path("annotations", "SEED-Bench.json annotations", hint)
        images = task.path("images", "SEED-Bench-image", hint, directory=True)
        records = _read_questions(annotations)
        build = _file_builder(task, images, _type_names(annotations))
        source = {"type": "files", "annotations": str(annotations.resolve()), "images": str(images.resolve())}
    groups = [str(r.get("data_id")) for r in records]
    pools = holdout_pools(task, records, groups, build, source, seed, "images",
                          ids=[str(r.get("question_id")) for r in records])
    return assemble_task(task, pools, out_dir, seed)


def _load(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{TITLE}: annotations file {path} is not valid JSON ({err})") from err


def _read_questions(path: Path) -> list[dict]:
    """The image questions (``data_type: image``, types 1-9) of SEED-Bench.json, in file order."""
    data = _load(path)
    questions = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(questions, list):
        found = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{TITLE}: annotations file {path} has no 'questions' list (found {found}); expected the "
                        f"official SEED-Bench.json from {DOWNLOAD}")
    return [q for q in questions if isinstance(q, dict) and q.get("data_type", "image") == "image"
            and _type_id(q.get("question_type_id")) in QUESTION_TYPES]


def _type_names(path: Path) -> dict[int, str]:
    data = _load(path)
    given = data.get("question_type") if isinstance(data, dict) else None
    names = dict(QUESTION_TYPES)
    if isinstance(given, dict):
        names.update({int(v): str(k) for k, v in given.items() if _type_id(v) in QUESTION_TYPES})
    return names


def _type_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _row(entry: dict, image: dict, names: dict[int, str]) -> dict:
    qid = str(entry.get("question_id", "")).strip()
    question = entry.get("question")
    if not qid or not isinstance(question, str) or not question.strip():
        raise BadSample("malformed record", f"question {qid or '?'} has no id or no question text")
    choices = [entry.get(c) for c in CHOICES]
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise BadSample("malformed record", f"question {qid}: the options {CHOICES} are not all texts")
    letter = str(entry.get("answer", "")).strip().upper()
    if letter not in LETTERS:
        raise BadSample("malformed record", f"question {qid}: the answer {entry.get('answer')!r} is not A-D")
    type_id = _type_id(entry.get("question_type_id"))
    return {"id": qid, "image": image, "question": question, "answers": [choices[LETTERS.index(letter)]],
            "choices": choices, "answer_letter": letter, "question_type_id": type_id,
            "question_type": names.get(type_id, str(type_id)), "data_id": str(entry.get("data_id"))}


def _file_builder(task: TaskSpec, images: Path, names: dict[int, str]):
    def build(entry: dict) -> dict:
        data_id = entry.get("data_id")
        if not isinstance(data_id, str) or not data_id:
            raise BadSample("malformed record", f"question {entry.get('question_id')} has no data_id")
        path = images / data_id
        if not path.is_file() and not path.suffix and (images / f"{data_id}.jpg").is_file():
            path = images / f"{data_id}.jpg"
        return _row(entry, image_from_file(path, task), names)

    return build


def _hub_image(value: Any, task: TaskSpec) -> dict:
    """A hub image cell: one image, or a list holding one (lmms-lab/SEED-Bench), possibly decoded."""
    if isinstance(value, list):
        if len(value) != 1:
            raise BadSample("malformed record", f"{len(value)} images where an image question has one")
        value = value[0]
    if hasattr(value, "save"):  # a decoded PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return image_record(data=buf.getvalue(), path=None)
    return image_from_value(value, task)


def _hub_records(task: TaskSpec):
    ds = load_hub_split(task, "eval", f"files.annotations and files.images from {DOWNLOAD}")
    picked = require_columns(task, "eval", ds.column_names, HUB_COLUMNS)
    kinds = ds["data_type"] if "data_type" in ds.column_names else ["image"] * len(ds)
    types = ds[picked["question_type_id"]]
    records = [{"index": i, "question_id": str(q), "data_id": str(d)}
               for i, (q, d, kind, t) in enumerate(zip(ds[picked["question_id"]], ds[picked["data_id"]], kinds, types,
                                                      strict=True))
               if kind == "image" and _type_id(t) in QUESTION_TYPES]

    def build(record: dict) -> dict:
        row = ds[record["index"]]
        entry = {key: row[column] for key, column in picked.items()}
        return _row(entry, _hub_image(row[picked["image"]], task), QUESTION_TYPES)

    return records, build, hub_source(task, "eval")
