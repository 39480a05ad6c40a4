"""MME (Fu et al., 2023, "MME: A Comprehensive Evaluation Benchmark for Multimodal Large Language Models"):
14 subtasks of yes/no questions, two per image (one answered "Yes", one "No"); tasks of kind ``yes-no``, scored
by the official eval_tool/calculation.py (:mod:`mimic.metrics.mme`: per subtask 100 * (acc + acc+), perception
and cognition sums).

- ``files``: ``root``, the official ``MME_Benchmark_release_version/`` folder: one folder per subtask, either
  with ``images/`` and ``questions_answers_YN/`` (artwork, celebrity, landmark, posters, scene) or with the
  images and their question files side by side (the others). Each question file ``<image stem>.txt`` holds one
  line ``question<TAB>answer`` per question of that image. Subtask folders absent from ``root`` are left out.
- ``hub``: a parquet repository such as ``lmms-lab/MME`` (split ``test``: ``question_id`` = the image's
  ``<subtask>/<file>``, ``image``, ``question``, ``answer``, ``category``).

Each row: ``id`` = ``<subtask>/<image file>#<k>`` (k = 1, 2: the question's place among its image's, in source
order; the same in both formats), ``question`` (as given, "Please answer yes or no." included), ``answers`` =
[the answer], ``category`` (the subtask) and ``image_name`` (``<subtask>/<image file>``, what acc+ groups by).
MME has no training split: train/support come from held-out images (``holdout``,
:mod:`mimic.data.loaders.benchmark`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mimic.data.loaders.benchmark import HOLDOUT, check_holdout, holdout_pools
from mimic.data.loaders.common import (
    BadSample,
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
from mimic.metrics.mme import SUBTASKS

TITLE = "MME"
DOWNLOAD = ("https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation "
            "(MME_Benchmark_release_version, by request) or the hub parquet lmms-lab/MME")
FILES_KEYS = ("root",)
SPLIT_FOLDERS = ("images", "questions_answers_YN")  # the subtasks whose files are split in two folders
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
HUB_COLUMNS = {"question_id": ("question_id",), "image": ("image",), "question": ("question",),
               "answer": ("answer",), "category": ("category",)}


@register_loader("mme")
def prepare_mme(spec: dict, out_dir: Path, seed: int) -> dict:
    """Prepare an MME task; see :mod:`mimic.data.loaders` for the spec keys."""
    task = validate_spec(spec, loader="mme", kind="yes-no", title=TITLE, files_keys=FILES_KEYS,
                         default_hub_splits={"train": "test", "eval": "test"}, option_keys={HOLDOUT: 0})
    check_holdout(task, "images")
    if task.source["eval"] == "hub":
        records, build, source = _hub_records(task)
    else:
        root = task.path("root", "MME_Benchmark_release_version", f"download it from {DOWNLOAD}", directory=True)
        records, build, source = _files_records(task, root), _build_file_row(task), {
            "type": "files", "root": str(root.resolve())}
    groups = [r["image_name"] for r in records]
    pools = holdout_pools(task, records, groups, build, source, seed, "images", ids=[r["id"] for r in records])
    return assemble_task(task, pools, out_dir, seed)


def _files_records(task: TaskSpec, root: Path) -> list[dict]:
    """Every question of the subtask folders under ``root``, in subtask then file order (nothing decoded)."""
    records = []
    found = [c for c in SUBTASKS if (root / c).is_dir()]
    if not found:
        raise FileNotFoundError(f"{TITLE}: no subtask folder ({', '.join(SUBTASKS[:3])}, ...) in {root}; set "
                                f"{task.key('files', 'root')} to the MME_Benchmark_release_version folder from "
                                f"{DOWNLOAD}")
    for category in found:
        folder = root / category
        split = all((folder / name).is_dir() for name in SPLIT_FOLDERS)
        texts, images = (folder / SPLIT_FOLDERS[1], folder / SPLIT_FOLDERS[0]) if split else (folder, folder)
        for text_file in sorted(texts.glob("*.txt")):
            image = next((images / (text_file.stem + s) for s in IMAGE_SUFFIXES
                          if (images / (text_file.stem + s)).is_file()), images / (text_file.stem + ".jpg"))
            lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            for k, line in enumerate(lines, start=1):
                image_name = f"{category}/{image.name}"
                records.append({"id": f"{image_name}#{k}", "image_name": image_name, "category": category,
                                "path": image, "line": line, "file": str(text_file)})
    return records


def _answer(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in ("yes", "no"):
        raise BadSample("malformed record", f"{where}: the answer {value!r} is not Yes or No")
    return value.strip()


def _build_file_row(task: TaskSpec):
    def build(record: dict) -> dict:
        parts = record["line"].split("\t")
        if len(parts) != 2 or not parts[0].strip():
            raise BadSample("malformed record", f"{record['file']}: line {record['line'][:60]!r} is not "
                                                "'question<TAB>answer'")
        return {"id": record["id"], "image": image_from_file(record["path"], task), "question": parts[0].strip(),
                "answers": [_answer(parts[1], record["file"])], "category": record["category"],
                "image_name": record["image_name"]}

    return build


def _hub_records(task: TaskSpec):
    ds = load_hub_split(task, "eval", f"files.root (MME_Benchmark_release_version from {DOWNLOAD})")
    picked = require_columns(task, "eval", ds.column_names, HUB_COLUMNS)
    seen: Counter = Counter()
    records = []
    for index, (qid, category) in enumerate(zip(ds[picked["question_id"]], ds[picked["category"]], strict=True)):
        image_name = str(qid)
        seen[image_name] += 1
        records.append({"id": f"{image_name}#{seen[image_name]}", "image_name": image_name,
                        "category": str(category), "index": index})

    def build(record: dict) -> dict:
        row = ds[record["index"]]
        if record["category"] not in SUBTASKS:
            raise BadSample("malformed record", f"{record['id']}: unknown subtask {record['category']!r}")
        question = row[picked["question"]]
        if not isinstance(question, str) or not question.strip():
            raise BadSample("malformed record", f"{record['id']}: no question text")
        return {"id": record["id"], "image": image_from_value(row[picked["image"]], task), "question": question,
                "answers": [_answer(row[picked["answer"]], record["id"])], "category": record["category"],
                "image_name": record["image_name"]}

    return records, build, hub_source(task, "eval")
