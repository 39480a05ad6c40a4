"""VizWiz-VQA through its loader, on fixtures in the official format (Annotations/{train,val}.json, train/ and
val/ image folders) and the hub parquet layout, and its score: the official VQA accuracy, "unanswerable"
included."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from mimic.data.loaders import LOADERS, DataError, prepare_task
from mimic.data.schema import open_image, read_table
from mimic.metrics.vqa import vqa_accuracy


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (7, 5), (seed * 30 % 256, 20, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def answers_of(n: int) -> list[str]:
    if n % 3 == 0:  # a photo that cannot answer its question (blurred, the object out of frame)
        return ["unanswerable"] * 8 + ["blue", "unsuitable"]
    return [f"thing {n}"] * 6 + ["unanswerable"] * 2 + ["other", "other"]


def write_split(root: Path, split: str, numbers) -> tuple[Path, Path]:
    """The official ``Annotations/<split>.json`` and ``<split>/`` images for VizWiz_<split>_<8 digits>.jpg."""
    images = root / split
    images.mkdir(parents=True)
    entries = []
    for n in numbers:
        name = f"VizWiz_{split}_{n:08d}.jpg"
        (images / name).write_bytes(jpeg(n))
        entries.append({
            "image": name,
            "question": f"What is this {n}?",
            "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers_of(n)],
            "answer_type": "unanswerable" if n % 3 == 0 else "other",
            "answerable": 0 if n % 3 == 0 else 1,
        })
    annotations = root / "Annotations" / f"{split}.json"
    annotations.parent.mkdir(exist_ok=True)
    annotations.write_text(json.dumps(entries))
    return annotations, images


@pytest.fixture
def vizwiz_files(tmp_path) -> dict:
    root = tmp_path / "vizwiz"
    train_annotations, train_images = write_split(root, "train", range(12))
    val_annotations, val_images = write_split(root, "val", range(6))
    return {"annotations_train": str(train_annotations), "images_train": str(train_images),
            "annotations_eval": str(val_annotations), "images_eval": str(val_images)}


def test_the_official_files_give_the_three_tables(tmp_path, vizwiz_files):
    assert LOADERS["vizwiz"] is LOADERS["vizwiz-vqa"]
    spec = {"name": "vizwiz", "source": "files", "files": vizwiz_files, "n_train": 4, "n_support": 6, "n_eval": None}
    out = tmp_path / "data" / "vizwiz"
    meta = prepare_task(spec, out, seed=0)
    tables = {role: read_table(out / f"{role}.parquet") for role in ("train", "support", "eval")}
    assert meta["sizes"] == {"train": 4, "support": 6, "eval": 6} and meta["pool_sizes"] == {"train": 12, "eval": 6}
    assert not set(tables["train"]["id"]) & set(tables["support"]["id"])
    assert set(tables["train"]["id"]) | set(tables["support"]["id"]) <= {f"VizWiz_train_{n:08d}" for n in range(12)}
    row = tables["eval"].set_index("id").loc["VizWiz_val_00000003"]
    assert list(row["answers"]) == ["unanswerable"] * 8 + ["blue", "unsuitable"]
    assert row["question"] == "What is this 3?" and row["answerable"] == 0 and row["answer_type"] == "unanswerable"
    assert Path(row["image"]["path"]).name == "VizWiz_val_00000003.jpg" and open_image(row["image"]).size == (7, 5)


def test_the_score_is_the_official_vqa_accuracy_with_unanswerable_as_an_answer():
    """Hand-computed: a prediction given by h of the 10 humans scores the mean over the 10 leave-one-out subsets
    of min(matches among the other 9 / 3, 1)."""
    unanswerable = answers_of(3)  # 8 x unanswerable, blue, unsuitable
    assert vqa_accuracy("unanswerable", unanswerable) == 1.0
    assert vqa_accuracy("blue", unanswerable) == pytest.approx((9 * (1 / 3) + 1 * 0) / 10)  # 0.3
    answerable = answers_of(1)  # 6 x "thing 1", 2 x unanswerable, 2 x other
    assert vqa_accuracy("unanswerable", answerable) == pytest.approx((8 * (2 / 3) + 2 * (1 / 3)) / 10)  # 0.6
    assert vqa_accuracy("Thing 1.", answerable) == 1.0  # the official answer normalisation


def test_missing_files_name_the_setting_and_the_download(tmp_path, vizwiz_files):
    files = {**vizwiz_files, "annotations_eval": str(tmp_path / "nowhere" / "val.json")}
    spec = {"name": "vizwiz", "source": "files", "files": files, "n_train": 4, "n_support": 6, "n_eval": 2}
    with pytest.raises(FileNotFoundError) as err:
        prepare_task(spec, tmp_path / "out", seed=0)
    message = str(err.value)
    assert "tasks.vizwiz.files.annotations_eval" in message and "Annotations/val.json" in message
    assert "https://vizwiz.org/tasks-and-datasets/vqa/" in message and "\n" not in message
    Path(vizwiz_files["annotations_train"]).write_text(json.dumps({"annotations": []}))
    spec["files"] = vizwiz_files
    with pytest.raises(DataError, match=r"train annotations file .* is not a list of questions"):
        prepare_task(spec, tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()


def test_hub_parquet_rows(tmp_path, vizwiz_files):
    """lmms-lab/VizWiz-VQA's layout (question_id, question, answers as strings, the image inline) for the
    evaluation pool; the official files for the training pool."""
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    rows = {"question_id": [f"VizWiz_val_{n:08d}" for n in range(5)],
            "question": [f"What is this {n}?" for n in range(5)],
            "answers": [answers_of(n) for n in range(5)],
            "category": ["other"] * 5,
            "image": [{"bytes": jpeg(n), "path": None} for n in range(5)]}
    features = datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answers": datasets.Sequence(datasets.Value("string")),
                                  "category": datasets.Value("string"), "image": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(hub / "data" / "val-00000-of-00001.parquet"))
    spec = {"name": "vizwiz", "source": {"train": "files", "eval": "hub"}, "hub_id": {"eval": str(hub)},
            "files": {k: v for k, v in vizwiz_files.items() if k.endswith("_train")}, "n_train": 4, "n_support": 6,
            "n_eval": 5, "hub_cache_dir": str(tmp_path / "hf-cache")}
    out = tmp_path / "data"
    meta = prepare_task(spec, out, seed=0)
    evaluation = read_table(out / "eval.parquet").set_index("id")
    assert meta["source"]["eval"]["type"] == "hub" and len(evaluation) == 5
    assert list(evaluation.loc["VizWiz_val_00000003", "answers"]) == answers_of(3)
    assert open_image(evaluation.loc["VizWiz_val_00000003", "image"]).size == (7, 5)
