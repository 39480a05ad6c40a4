"""Real-dataset loaders on tiny fixtures written in each real on-disk format.

The hub code path runs ``datasets.load_dataset`` on local directories in the hub layout
(``data/<split>-00000-of-00001.parquet``, written by ``datasets`` itself), not on mocks.
"""

import hashlib
import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from mimic.data import loaders
from mimic.data.loaders import LOADERS, DataError, prepare_task, register_loader
from mimic.data.schema import open_image, read_table

# ----------------------------------------------------------------------------- fixtures in the real formats

TRAIN_IMAGES = (1, 2, 3, 4)  # COCO train2014 ids; three questions each
EVAL_IMAGES = (101, 102, 103)  # COCO val2014 ids; two questions each


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 160)).save(buf, format="JPEG")
    return buf.getvalue()


def write_images(directory: Path, ids, prefix: str = "COCO_train2014_") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        (directory / f"{prefix}{image_id:012d}.jpg").write_bytes(jpeg(image_id))
    return directory


def question_ids(image_ids, per_image: int) -> list[tuple[int, int]]:
    return [(image_id, image_id * 10 + j) for image_id in image_ids for j in range(per_image)]


def answers_of(qid: int) -> list[str]:
    return [f"answer {qid}"] * 7 + ["other"] * 3


def write_vqa_json(root: Path, split: str, pairs, questions_name: str, annotations_name: str) -> tuple[Path, Path]:
    """The official questions + annotations files for (image_id, question_id) pairs."""
    questions = {"questions": [{"image_id": i, "question": f"what is in {q}?", "question_id": q} for i, q in pairs]}
    annotations = {
        "annotations": [
            {
                "question_id": q,
                "image_id": i,
                "question_type": "what is",
                "answer_type": "other",
                "multiple_choice_answer": f"answer {q}",
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers_of(q))
                ],
            }
            for i, q in pairs
        ]
    }
    qpath = root / questions_name.format(split=split)
    apath = root / annotations_name.format(split=split)
    qpath.write_text(json.dumps(questions))
    apath.write_text(json.dumps(annotations))
    return qpath, apath


@pytest.fixture
def vqav2_files(tmp_path) -> dict:
    """VQAv2 official files: train2014 (12 questions) and val2014 (6 questions) + COCO-named images."""
    root = tmp_path / "vqav2"
    root.mkdir()
    qt, at = write_vqa_json(
        root, "train2014", question_ids(TRAIN_IMAGES, 3),
        "v2_OpenEnded_mscoco_{split}_questions.json", "v2_mscoco_{split}_annotations.json",
    )  # fmt: skip
    qe, ae = write_vqa_json(
        root, "val2014", question_ids(EVAL_IMAGES, 2),
        "v2_OpenEnded_mscoco_{split}_questions.json", "v2_mscoco_{split}_annotations.json",
    )  # fmt: skip
    return {
        "questions_train": str(qt),
        "annotations_train": str(at),
        "images_train": str(write_images(root / "train2014", TRAIN_IMAGES)),
        "questions_eval": str(qe),
        "annotations_eval": str(ae),
        "images_eval": str(write_images(root / "val2014", EVAL_IMAGES, "COCO_val2014_")),
    }


VQA_FEATURES = datasets.Features(
    {
        "question_type": datasets.Value("string"),
        "multiple_choice_answer": datasets.Value("string"),
        "answers": [
            {
                "answer": datasets.Value("string"),
                "answer_confidence": datasets.Value("string"),
                "answer_id": datasets.Value("int64"),
            }
        ],
        "image_id": datasets.Value("int64"),
        "answer_type": datasets.Value("string"),
        "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"),
        "image": datasets.Image(),
    }
)


def vqa_hub_rows(pairs) -> dict:
    rows = {name: [] for name in VQA_FEATURES}
    for image_id, qid in pairs:
        rows["question_type"].append("what is")
        rows["multiple_choice_answer"].append(f"answer {qid}")
        rows["answers"].append(
            [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers_of(qid))]
        )
        rows["image_id"].append(image_id)
        rows["answer_type"].append("other")
        rows["question_id"].append(qid)
        rows["question"].append(f"what is in {qid}?")
        rows["image"].append({"bytes": jpeg(image_id), "path": None})
    return rows


def write_hub_dir(root: Path, splits: dict[str, dict], features: datasets.Features, readme: str = "") -> Path:
    """A dataset repository in the hub layout: data/<split>-00000-of-00001.parquet (+ README.md)."""
    for split, rows in splits.items():
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    if readme:
        (root / "README.md").write_text(readme)
    return root


@pytest.fixture
def vqav2_hub(tmp_path) -> Path:
    """lmms-lab/VQAv2-like parquet (answers as dicts, image bytes), with a train split for the test."""
    splits = {
        "train": vqa_hub_rows(question_ids(TRAIN_IMAGES, 3)),
        "validation": vqa_hub_rows(question_ids(EVAL_IMAGES, 2)),
    }
    return write_hub_dir(tmp_path / "lmms-lab-VQAv2", splits, VQA_FEATURES)


def base_spec(tmp_path, **overrides) -> dict:
    spec = {"name": "vqav2", "n_train": 4, "n_support": 5, "n_eval": 4, "hub_cache_dir": str(tmp_path / "hf-cache")}
    spec.update(overrides)
    return spec


def tables(out: Path) -> dict:
    return {role: read_table(out / f"{role}.parquet") for role in ("train", "support", "eval")}


def ids(table) -> set[str]:
    return set(table["id"])


def qids_as_str(image_ids, per_image) -> set[str]:
    return {str(q) for _, q in question_ids(image_ids, per_image)}


# ----------------------------------------------------------------------------- VQAv2


def test_vqav2_official_files(tmp_path, vqav2_files):
    out = tmp_path / "data" / "vqav2"
    spec = base_spec(tmp_path, source="files", files=vqav2_files)
    meta = prepare_task(spec, out, seed=0)
    t = tables(out)

    assert meta["sizes"] == {"train": 4, "support": 5, "eval": 4}
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["skipped_total"] == 0 and meta["pool_sizes"] == {"train": 12, "eval": 6}
    assert meta["source"]["train"]["type"] == "files"
    assert not ids(t["train"]) & ids(t["support"])  # disjoint roles from the training split
    assert ids(t["train"]) | ids(t["support"]) <= qids_as_str(TRAIN_IMAGES, 3)
    assert ids(t["eval"]) <= qids_as_str(EVAL_IMAGES, 2)  # evaluation from val2014
    row = t["eval"].iloc[0]
    assert row["answers"] == answers_of(int(row["id"])) and len(row["answers"]) == 10
    assert row["question"] == f"what is in {row['id']}?"
    assert row["image_id"] == int(row["id"]) // 10 and row["question_type"] == "what is"
    assert row["image"]["bytes"] is None and Path(row["image"]["path"]).name.startswith("COCO_val2014_")
    assert open_image(row["image"]).size == (8, 6)

    # Seeded: the same seed gives the same tables; the training queries do not depend on n_support.
    again = prepare_task(spec, tmp_path / "again", seed=0)
    assert again["sizes"] == meta["sizes"] and ids(tables(tmp_path / "again")["train"]) == ids(t["train"])
    prepare_task({**spec, "n_support": None}, tmp_path / "all-support", seed=0)
    rest = tables(tmp_path / "all-support")
    assert ids(rest["train"]) == ids(t["train"]) and len(rest["support"]) == 8
    draws = set()
    for seed in range(1, 6):
        prepare_task(spec, tmp_path / f"seed{seed}", seed=seed)
        draws.add(frozenset(ids(tables(tmp_path / f"seed{seed}")["train"])))
    assert len(draws) > 1


def test_vqav2_hub_parquet_layout(tmp_path, vqav2_hub):
    out = tmp_path / "out"
    meta = prepare_task(base_spec(tmp_path, hub_id=str(vqav2_hub), n_eval=None), out, seed=3)
    t = tables(out)
    assert meta["sizes"] == {"train": 4, "support": 5, "eval": 6}
    assert meta["source"]["eval"] == {
        "type": "hub", "hub_id": str(vqav2_hub), "splits": ["validation"], "config": None, "revision": None,
    }  # fmt: skip
    assert list(t["eval"]["id"]) == [str(q) for _, q in question_ids(EVAL_IMAGES, 2)]  # all, in source order
    row = t["train"].iloc[0]
    assert row["answers"] == answers_of(int(row["id"]))  # {answer, answer_confidence, answer_id} -> strings
    assert row["image"]["bytes"] == jpeg(int(row["image_id"]))  # image bytes kept from the parquet
    assert row["multiple_choice_answer"] == f"answer {row['id']}"
    assert not ids(t["train"]) & ids(t["support"])


def test_vqav2_embed_images(tmp_path, vqav2_files):
    out = tmp_path / "out"
    prepare_task(base_spec(tmp_path, source="files", files=vqav2_files, embed_images=True), out, seed=0)
    row = read_table(out / "train.parquet").iloc[0]
    assert row["image"]["bytes"] == jpeg(int(row["image_id"]))


# ----------------------------------------------------------------------------- OK-VQA

OKVQA_README = """---
configs:
- config_name: default
  data_files:
  - split: val2014
    path: data/val2014-*
---
"""


def test_okvqa_files_for_train_and_hub_for_eval(tmp_path):
    root = tmp_path / "okvqa"
    root.mkdir()
    qt, at = write_vqa_json(
        root, "train2014", question_ids(TRAIN_IMAGES, 3),
        "OpenEnded_mscoco_{split}_questions.json", "mscoco_{split}_annotations.json",
    )  # fmt: skip
    images = write_images(root / "train2014", TRAIN_IMAGES, prefix="")  # the plain 000000000001.jpg naming
    # lmms-lab/OK-VQA-like: string question ids, answers as plain strings, one val2014 split.
    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "question_type": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
        }
    )
    pairs = question_ids(EVAL_IMAGES, 2)
    rows = {
        "question_id": [str(q) for _, q in pairs],
        "image": [{"bytes": jpeg(i), "path": None} for i, _ in pairs],
        "question": [f"q{q}?" for _, q in pairs],
        "answers": [answers_of(q) for _, q in pairs],
        "question_type": ["other"] * len(pairs),
        "answer_type": ["other"] * len(pairs),
    }
    hub = write_hub_dir(tmp_path / "lmms-lab-OK-VQA", {"val2014": rows}, features, OKVQA_README)
    spec = {
        "name": "okvqa",
        "source": {"train": "files", "eval": "hub"},
        "hub_id": str(hub),
        "files": {"questions_train": str(qt), "annotations_train": str(at), "images_train": str(images)},
        "n_train": 3,
        "n_support": None,
        "n_eval": None,
        "hub_cache_dir": str(tmp_path / "hf-cache"),
    }
    meta = prepare_task(spec, tmp_path / "out", seed=1)
    t = tables(tmp_path / "out")
    assert meta["sizes"] == {"train": 3, "support": 9, "eval": 6}
    assert meta["source"]["train"]["type"] == "files" and meta["source"]["eval"]["splits"] == ["val2014"]
    assert ids(t["eval"]) == qids_as_str(EVAL_IMAGES, 2)
    assert all(len(a) == 10 for a in t["eval"]["answers"])
    assert ids(t["train"]) | ids(t["support"]) == qids_as_str(TRAIN_IMAGES, 3)


# ----------------------------------------------------------------------------- COCO Karpathy

KARPATHY = {  # cocoid -> Karpathy split
    1: "train", 2: "train", 3: "restval", 4: "restval", 5: "val", 6: "test", 7: "test", 8: "test",
}  # fmt: skip


def captions_of(cocoid: int) -> list[str]:
    return [f"Caption {k} of image {cocoid}." for k in range(5)]


@pytest.fixture
def coco_root(tmp_path) -> Path:
    """A COCO root with train2014/ and val2014/ (train ids in train2014, the rest in val2014)."""
    root = tmp_path / "coco"
    write_images(root / "train2014", [i for i, s in KARPATHY.items() if s == "train"], "COCO_train2014_")
    write_images(root / "val2014", [i for i, s in KARPATHY.items() if s != "train"], "COCO_val2014_")
    return root


def karpathy_entry(cocoid: int, split: str) -> dict:
    folder = "train2014" if split == "train" else "val2014"
    return {
        "filepath": folder,
        "filename": f"COCO_{folder}_{cocoid:012d}.jpg",
        "split": split,
        "cocoid": cocoid,
        "imgid": cocoid - 1,
        "sentids": list(range(5)),
        "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": cocoid - 1} for c in captions_of(cocoid)],
    }


def test_coco_karpathy_json(tmp_path, coco_root):
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [karpathy_entry(i, s) for i, s in KARPATHY.items()], "dataset": "coco"}))
    spec = {
        "name": "coco",
        "source": "files",
        "files": {"karpathy_json": str(karpathy), "images_dir": str(coco_root)},
        "n_train": 2,
        "n_support": None,
        "n_eval": None,
    }
    meta = prepare_task(spec, tmp_path / "out", seed=0)
    t = tables(tmp_path / "out")
    assert meta["loader"] == "coco-karpathy" and meta["kind"] == "caption"
    assert meta["sizes"] == {"train": 2, "support": 2, "eval": 3}
    assert ids(t["train"]) | ids(t["support"]) == {"1", "2", "3", "4"}  # restval counts as train
    assert ids(t["eval"]) == {"6", "7", "8"}  # the Karpathy test split; val (5) is unused
    row = t["eval"].iloc[0]
    assert row["question"] == "" and row["answers"] == captions_of(int(row["id"]))
    assert row["file_name"] == f"COCO_val2014_{int(row['id']):012d}.jpg" and row["image_id"] == int(row["id"])
    assert open_image(row["image"]).size == (8, 6)


def test_coco_hub_text_rows_and_hub_image_rows(tmp_path, coco_root):
    # yerevann/coco-karpathy-like: text only, images from images_dir; sentences as strings.
    text_features = datasets.Features(
        {
            "filepath": datasets.Value("string"),
            "sentids": datasets.Sequence(datasets.Value("int32")),
            "filename": datasets.Value("string"),
            "imgid": datasets.Value("int32"),
            "split": datasets.Value("string"),
            "sentences": datasets.Sequence(datasets.Value("string")),
            "cocoid": datasets.Value("int32"),
            "url": datasets.Value("string"),
        }
    )

    def text_rows(split_names):
        entries = [karpathy_entry(i, s) for i, s in KARPATHY.items() if s in split_names]
        return {
            "filepath": [e["filepath"] for e in entries],
            "sentids": [e["sentids"] for e in entries],
            "filename": [e["filename"] for e in entries],
            "imgid": [e["imgid"] for e in entries],
            "split": [e["split"] for e in entries],
            "sentences": [[s["raw"] for s in e["sentences"]] for e in entries],
            "cocoid": [e["cocoid"] for e in entries],
            "url": ["http://images.cocodataset.org/" + e["filename"] for e in entries],
        }

    yerevann = write_hub_dir(
        tmp_path / "yerevann-coco-karpathy",
        {"train": text_rows({"train", "restval"}), "validation": text_rows({"val"}), "test": text_rows({"test"})},
        text_features,
    )
    # lmms-lab/COCO-Caption-like: images inline, captions in `answer`, the image id in `id`.
    image_features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Sequence(datasets.Value("string")),
            "id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
        }
    )
    val_ids = [6, 7, 8]
    lmms = write_hub_dir(
        tmp_path / "lmms-lab-COCO-Caption",
        {
            "val": {
                "question_id": [f"COCO_val2014_{i:012d}.jpg" for i in val_ids],
                "image": [{"bytes": jpeg(i), "path": None} for i in val_ids],
                "question": ["Provide a one-sentence caption for the provided image."] * 3,
                "answer": [captions_of(i) for i in val_ids],
                "id": val_ids,
                "file_name": [f"COCO_val2014_{i:012d}.jpg" for i in val_ids],
            }
        },
        image_features,
    )
    spec = {
        "name": "coco",
        "source": "hub",
        "hub_id": {"train": str(yerevann), "eval": str(lmms)},
        "hub_splits": {"train": "train", "eval": "val"},
        "files": {"images_dir": str(coco_root)},
        "n_train": 1,
        "n_support": 3,
        "n_eval": 2,
        "hub_cache_dir": str(tmp_path / "hf-cache"),
    }
    meta = prepare_task(spec, tmp_path / "out", seed=0)
    t = tables(tmp_path / "out")
    assert meta["sizes"] == {"train": 1, "support": 3, "eval": 2}
    assert ids(t["train"]) | ids(t["support"]) == {"1", "2", "3", "4"}
    assert ids(t["eval"]) <= {"6", "7", "8"}
    train_row = t["train"].iloc[0]
    assert train_row["image"]["bytes"] is None and Path(train_row["image"]["path"]).is_file()
    eval_row = t["eval"].iloc[0]
    assert eval_row["image"]["bytes"] == jpeg(int(eval_row["id"])) and eval_row["answers"] == captions_of(
        int(eval_row["id"])
    )


# ----------------------------------------------------------------------------- bad records


@pytest.fixture
def broken_vqav2_files(vqav2_files) -> dict:
    """Train: image 2 deleted (3 questions), one question without annotation, one malformed entry.
    Eval: image 103 corrupted (2 questions)."""
    images = Path(vqav2_files["images_train"])
    (images / "COCO_train2014_000000000002.jpg").unlink()
    qpath = Path(vqav2_files["questions_train"])
    questions = json.loads(qpath.read_text())
    questions["questions"] += [
        {"image_id": 1, "question": "no annotation?", "question_id": 999},
        {"question": "no image id?", "question_id": 998},
    ]
    qpath.write_text(json.dumps(questions))
    (Path(vqav2_files["images_eval"]) / "COCO_val2014_000000000103.jpg").write_bytes(b"not a jpeg")
    return vqav2_files


def test_bad_records_skipped_and_counted(tmp_path, broken_vqav2_files, caplog):
    spec = base_spec(tmp_path, source="files", files=broken_vqav2_files, on_bad_sample="skip", n_support=None)
    meta = prepare_task({**spec, "n_eval": None}, tmp_path / "out", seed=0)
    t = tables(tmp_path / "out")
    train_skips = {}
    for role in ("train", "support"):
        for category, count in meta["skipped"][role].items():
            train_skips[category] = train_skips.get(category, 0) + count
    assert train_skips == {"missing image": 3, "no annotation": 1, "malformed record": 1}
    assert meta["skipped"]["eval"] == {"unreadable image": 2}
    assert meta["skipped_total"] == 7
    assert meta["sizes"] == {"train": 4, "support": 5, "eval": 4}  # 14 - 5 bad = 9 = 4 + 5; 6 - 2 = 4
    kept = ids(t["train"]) | ids(t["support"])
    assert not kept & {"20", "21", "22", "999", "998"} and not ids(t["eval"]) & {"1030", "1031"}
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["skipped_total"] == 7
    assert "skipped" in caplog.text


def test_bad_record_fails_clearly(tmp_path, broken_vqav2_files):
    spec = base_spec(tmp_path, source="files", files=broken_vqav2_files, n_train=None, n_support=20)
    with pytest.raises(DataError, match=r"bad record .* VQAv2 train split: .*on_bad_sample: skip"):
        prepare_task(spec, tmp_path / "out", seed=0)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_missing_image_message_names_the_file(tmp_path, vqav2_files):
    for path in Path(vqav2_files["images_eval"]).iterdir():
        if "000000000101" in path.name:
            path.unlink()
    spec = base_spec(tmp_path, source="files", files=vqav2_files, n_eval=None)
    with pytest.raises(DataError, match=r"missing image: no image file for image_id 101 .*val2014"):
        prepare_task(spec, tmp_path / "out", seed=0)


def test_too_few_records(tmp_path, vqav2_files):
    spec = base_spec(tmp_path, source="files", files=vqav2_files, n_eval=7)
    with pytest.raises(DataError, match=r"tasks\.vqav2\.n_eval asks for 7 records .* has only 6"):
        prepare_task(spec, tmp_path / "out", seed=0)


# ----------------------------------------------------------------------------- spec and source errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"questions": "x"}, r"unknown key tasks\.vqav2\.questions; valid keys are"),
        ({"source": "s3"}, r"tasks\.vqav2\.source .* 's3'; valid options are \['hub', 'files'\]"),
        ({"source": {"training": "files"}}, r"unknown pool 'training'"),
        ({"on_bad_sample": "ignore"}, r"on_bad_sample is 'ignore'; valid options are \['skip', 'fail'\]"),
        ({"n_train": -1}, r"tasks\.vqav2\.n_train must be a non-negative integer"),
        ({"n_train": True}, r"tasks\.vqav2\.n_train must be a non-negative integer"),
        ({"n_train": None, "n_support": None}, r"cannot both be null"),
        ({"kind": "caption"}, r"tasks\.vqav2\.kind is 'caption' but the vqav2 loader makes 'vqa' tasks"),
        ({"files": {"questions": "x"}}, r"unknown key tasks\.vqav2\.files\.questions; valid keys are"),
        ({"source": "hub"}, r"tasks\.vqav2\.hub_id \(a string\) is required"),
        ({"hub_splits": {"test": "x"}}, r"hub_splits must be a mapping with keys"),
        ({"verify_images": "yes"}, r"verify_images must be true or false"),
        ({"loader": "gqa"}, r"unknown loader 'gqa' .* known loaders: \["),
        ({"name": ""}, r"needs a 'name'"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(loaders, "PLUGIN_MODULES", ())
    spec = {"name": "vqav2", "source": "files", "n_train": 1, "n_support": 1, "n_eval": 1, **overrides}
    with pytest.raises(ValueError, match=message):
        prepare_task(spec, tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()


def test_coco_karpathy_splits_are_validated(tmp_path):
    spec = {"name": "coco", "source": "files", "n_train": 1, "n_support": 1, "karpathy_splits": {"eval": ["tset"]}}
    with pytest.raises(ValueError, match=r"tasks\.coco\.karpathy_splits\.eval must list Karpathy splits"):
        prepare_task(spec, tmp_path / "out", seed=0)


def test_missing_files_name_the_setting_and_the_download(tmp_path, vqav2_files):
    files = {**vqav2_files, "questions_train": str(tmp_path / "nowhere.json")}
    spec = base_spec(tmp_path, source="files", files=files)
    with pytest.raises(FileNotFoundError, match=r"VQAv2: train questions file .*nowhere\.json not found; "
                       r"set tasks\.vqav2\.files\.questions_train in params\.yaml or download "
                       r"v2_OpenEnded_mscoco_train2014_questions\.json from https://visualqa\.org"):  # fmt: skip
        prepare_task(spec, tmp_path / "out", seed=0)
    files = {k: v for k, v in vqav2_files.items() if k != "annotations_eval"}
    with pytest.raises(ValueError, match=r"tasks\.vqav2\.files\.annotations_eval is required"):
        prepare_task(base_spec(tmp_path, source="files", files=files), tmp_path / "out", seed=0)
    files = {**vqav2_files, "images_train": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match=r"no COCO images .* set tasks\.vqav2\.files\.images_train"):
        prepare_task(base_spec(tmp_path, source="files", files=files), tmp_path / "out", seed=0)


def test_script_based_hub_repo_is_explained(tmp_path):
    repo = tmp_path / "VQAv2"
    repo.mkdir()
    (repo / "VQAv2.py").write_text("import datasets\n")  # a loading script, as HuggingFaceM4/VQAv2 has
    with pytest.raises(DataError, match=r"loading-script dataset, which datasets>=4 .* parquet repository"):
        prepare_task(base_spec(tmp_path, hub_id=str(repo)), tmp_path / "out", seed=0)


def test_unreachable_hub_is_explained(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = r"could not load 'lmms-lab/VQAv2' split 'train' from the hub .*local directory"
    with pytest.raises(DataError, match=message):
        prepare_task(base_spec(tmp_path, hub_id="lmms-lab/VQAv2"), tmp_path / "out", seed=0)


def test_missing_hub_split_and_unknown_columns(tmp_path, vqav2_hub):
    spec = base_spec(tmp_path, hub_id=str(vqav2_hub), hub_splits={"eval": "val2014"})
    with pytest.raises(DataError, match=r"has no split 'val2014' .*set tasks\.vqav2\.hub_splits\.eval"):
        prepare_task(spec, tmp_path / "out", seed=0)
    odd = write_hub_dir(
        tmp_path / "odd",
        {"train": {"qid_x": [1], "text": ["q?"]}, "validation": {"qid_x": [2], "text": ["q?"]}},
        datasets.Features({"qid_x": datasets.Value("int64"), "text": datasets.Value("string")}),
    )
    with pytest.raises(DataError, match=r"lacks columns for id: one of .*its columns are \['qid_x', 'text'\]"):
        prepare_task(base_spec(tmp_path, hub_id=str(odd)), tmp_path / "out", seed=0)


def test_train_and_eval_from_the_same_split_are_refused(tmp_path, vqav2_hub):
    spec = base_spec(tmp_path, hub_id=str(vqav2_hub), hub_splits={"train": "validation"}, n_train=1, n_support=1)
    with pytest.raises(DataError, match="the training and evaluation pools are the same data"):
        prepare_task(spec, tmp_path / "out", seed=0)
    # The same questions under another name (e.g. a renamed copy) are caught by their ids.
    spec = base_spec(tmp_path, hub_id=str(vqav2_hub), hub_splits={"train": ["validation", "train"]}, n_train=12)
    with pytest.raises(DataError, match=r"the training and evaluation splits share ids \(e\.g\. \['10"):
        prepare_task({**spec, "n_support": 0, "n_eval": None}, tmp_path / "out", seed=0)


# ----------------------------------------------------------------------------- registry


def test_registered_loaders_and_plugins(tmp_path, monkeypatch):
    assert {"vqav2", "okvqa", "coco-karpathy"} <= set(LOADERS)
    monkeypatch.setattr(loaders.registry, "LOADERS", dict(LOADERS))
    monkeypatch.setattr(loaders, "LOADERS", loaders.registry.LOADERS)

    @register_loader("toy")
    def prepare_toy(spec, out_dir, seed):
        return {"task": spec["name"], "out": str(out_dir), "seed": seed}

    assert prepare_task({"name": "mine", "loader": "toy"}, tmp_path, seed=7) == {
        "task": "mine", "out": str(tmp_path), "seed": 7,
    }  # fmt: skip
    assert prepare_task({"name": "toy"}, tmp_path, seed=1)["task"] == "toy"  # dispatch on the name

    def other(spec, out_dir, seed):
        return {}

    with pytest.raises(ValueError, match="already registered"):
        register_loader("toy")(other)


# ----------------------------------------------------------------------------- question_ids (VQA evaluation sets)

EVAL_QIDS = [q for _, q in question_ids(EVAL_IMAGES, 2)]  # 1010, 1011, 1020, 1021, 1030, 1031


def test_question_ids_file_fixes_the_eval_questions_and_their_order(tmp_path, vqav2_files):
    listed = [1031, 1010, 1021, 1030]
    ids_file = tmp_path / "eval_ids.txt"
    ids_file.write_text("\n".join(str(q) for q in listed) + "\n\n")  # a trailing blank line is ignored
    spec = base_spec(tmp_path, source="files", files=vqav2_files, question_ids=str(ids_file), n_eval=None)
    meta = prepare_task(spec, tmp_path / "out", seed=0)
    t = tables(tmp_path / "out")
    assert list(t["eval"]["id"]) == [str(q) for q in listed]  # exactly these, in the file's order
    assert [a for a in t["eval"]["answers"]] == [answers_of(q) for q in listed]
    assert meta["sizes"]["eval"] == 4 and meta["skipped"]["eval"] == {}
    digest = hashlib.sha256("".join(f"{q}\n" for q in listed).encode()).hexdigest()
    assert meta["eval_question_ids"] == {"source": str(ids_file), "count": 4, "sha256": digest}
    # The training side is drawn as without question_ids.
    plain = prepare_task(base_spec(tmp_path, source="files", files=vqav2_files), tmp_path / "plain", seed=0)
    assert ids(tables(tmp_path / "plain")["train"]) == ids(t["train"]) and "eval_question_ids" not in plain

    # n_eval: the first n usable ids of the list; a list in params.yaml works the same.
    meta = prepare_task({**spec, "question_ids": listed, "n_eval": 2}, tmp_path / "two", seed=5)
    assert list(tables(tmp_path / "two")["eval"]["id"]) == ["1031", "1010"]
    assert meta["eval_question_ids"]["source"] == "a list in params.yaml"


def test_question_ids_on_hub_rows(tmp_path, vqav2_hub):
    listed = ["1021", "01010", 1031]  # strings, a leading zero and an int all name hub question ids (int64)
    meta = prepare_task(base_spec(tmp_path, hub_id=str(vqav2_hub), question_ids=listed, n_eval=None), tmp_path / "o", 0)
    assert list(tables(tmp_path / "o")["eval"]["id"]) == ["1021", "1010", "1031"]
    assert meta["eval_question_ids"]["count"] == 3


def test_question_ids_missing_from_the_source(tmp_path, vqav2_files):
    listed = [1010, 9999, 1020, 8888, 7777]
    spec = base_spec(tmp_path, source="files", files=vqav2_files, question_ids=listed, n_eval=None)
    with pytest.raises(DataError) as info:
        prepare_task(spec, tmp_path / "out", seed=0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "VQAv2: 3 of the 5 question ids of tasks.vqav2.question_ids (a list in params.yaml) are not in the VQAv2 "
        "eval split, e.g. 9999; "
    )
    assert "tasks.vqav2.on_bad_sample: skip" in message and not (tmp_path / "out" / "meta.json").exists()

    meta = prepare_task({**spec, "on_bad_sample": "skip"}, tmp_path / "skip", seed=0)
    assert list(tables(tmp_path / "skip")["eval"]["id"]) == ["1010", "1020"]
    assert meta["skipped"]["eval"] == {"not in source": 3} and meta["skipped_total"] == 3
    # Asking for more than the listed ids can give names the list in the message.
    with pytest.raises(DataError, match=r"n_eval asks for 3 records but the VQAv2 eval split restricted to "
                       r"tasks\.vqav2\.question_ids has only 2 usable ones"):  # fmt: skip
        prepare_task({**spec, "on_bad_sample": "skip", "n_eval": 3}, tmp_path / "three", seed=0)


def test_question_ids_bad_records_are_skipped_like_others(tmp_path, broken_vqav2_files):
    # Image 103 is corrupt: its questions 1030, 1031 are bad records of the listed set.
    spec = base_spec(tmp_path, source="files", files=broken_vqav2_files, on_bad_sample="skip", n_support=None)
    meta = prepare_task({**spec, "question_ids": [1031, 1011, 1030, 1020], "n_eval": None}, tmp_path / "out", 0)
    assert list(tables(tmp_path / "out")["eval"]["id"]) == ["1011", "1020"]
    assert meta["skipped"]["eval"] == {"unreadable image": 2}


def test_shipped_vqav2_val_10k_set():
    from mimic.data.loaders.question_ids import resolve_question_ids
    from mimic.data.resources import QUESTION_SETS, question_set

    entry, text = question_set("vqav2-val-10k")
    assert hashlib.sha256(text.encode()).hexdigest() == entry.sha256 == QUESTION_SETS["vqav2-val-10k"].sha256
    listed = resolve_question_ids("vqav2-val-10k", "VQAv2", "tasks.vqav2.question_ids")
    assert listed.source == "vqav2-val-10k" and len(listed.ids) == len(set(listed.ids)) == 10_000
    assert listed.ids[:3] == ("393226000", "262162015", "262162017") and listed.ids[-1] == "524282004"
    assert all(q.isdigit() for q in listed.ids)
    assert len({int(q) // 1000 for q in listed.ids}) == 8_489  # VQAv2 question id = image id * 1000 + k


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vqav2-val-5k", r"tasks\.vqav2\.question_ids = 'vqav2-val-5k' is neither a shipped question set "
                         r"\(vqav2-val-10k\) nor an existing file"),
        ([1010, 1011, 1010], r"tasks\.vqav2\.question_ids \(a list in params\.yaml\) lists question id 1010 more "
                             r"than once"),
        (["1010", "01010"], r"lists question id 1010 more than once"),
        ([], r"tasks\.vqav2\.question_ids \(a list in params\.yaml\) lists no question ids"),
        ([1010, True], r"tasks\.vqav2\.question_ids holds True; question ids are integers or non-empty strings"),
        ({"eval": "x"}, r"tasks\.vqav2\.question_ids must be a shipped question set .* got dict"),
    ],
)
def test_question_ids_errors_name_the_key(tmp_path, vqav2_files, value, message):
    spec = base_spec(tmp_path, source="files", files=vqav2_files, question_ids=value)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_task(spec, tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()


def test_question_ids_belong_to_vqa_tasks(tmp_path):
    spec = {"name": "coco", "source": "files", "n_train": 1, "n_support": 1, "question_ids": [1]}
    with pytest.raises(ValueError, match=r"unknown key tasks\.coco\.question_ids"):
        prepare_task(spec, tmp_path / "out", seed=0)


# ----------------------------------------------------------------------------- Flickr30k (Karpathy split)

FLICKR = {  # Flickr photo id -> Karpathy split (dataset_flickr30k.json has train, val and test)
    1000092795: "train", 10002456: "train", 1000268201: "train", 1000344755: "train", 1000366164: "train",
    1000523639: "val", 1000919630: "val", 10010052: "test", 1001465944: "test", 1001545525: "test",
}  # fmt: skip


def flickr_captions(photo: int) -> list[str]:
    return [f"A person in photo {photo} does thing {k} ." for k in range(5)]


def write_flickr30k(root: Path, splits: dict[int, str] = FLICKR) -> tuple[Path, Path]:
    """Karpathy's dataset_flickr30k.json (its real layout: no filepath, no cocoid) and flickr30k-images/."""
    images = root / "flickr30k-images"
    images.mkdir(parents=True, exist_ok=True)
    entries, sentid = [], 0
    for imgid, (photo, split) in enumerate(splits.items()):
        (images / f"{photo}.jpg").write_bytes(jpeg(photo % 97))
        sentences = []
        for raw in flickr_captions(photo):
            tokens = raw.lower().rstrip(" .").split()
            sentences.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entries.append({"sentids": [s["sentid"] for s in sentences], "imgid": imgid, "sentences": sentences,
                        "split": split, "filename": f"{photo}.jpg"})  # fmt: skip
    path = root / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return path, images


def test_flickr30k_karpathy_json(tmp_path):
    karpathy, images = write_flickr30k(tmp_path / "flickr30k")
    spec = {
        "name": "flickr30k", "kind": "caption", "source": "files", "n_train": 2, "n_support": None, "n_eval": None,
        "files": {"karpathy_json": str(karpathy), "images_dir": str(images)},
    }  # fmt: skip
    meta = prepare_task(spec, tmp_path / "out", seed=0)
    t = tables(tmp_path / "out")
    assert meta["loader"] == "flickr30k" and meta["kind"] == "caption"
    assert meta["sizes"] == {"train": 2, "support": 3, "eval": 3}
    assert meta["source"]["train"]["karpathy_splits"] == ["train"] and meta["source"]["eval"]["karpathy_splits"] == [
        "test"
    ]
    train_photos = {str(p) for p, s in FLICKR.items() if s == "train"}
    assert ids(t["train"]) | ids(t["support"]) == train_photos and not ids(t["train"]) & ids(t["support"])
    assert list(t["eval"]["id"]) == ["10010052", "1001465944", "1001545525"]  # Karpathy test, in file order
    row = t["eval"].iloc[0]
    assert row["question"] == "" and row["answers"] == flickr_captions(10010052)
    assert row["image_id"] == 10010052 and row["file_name"] == "10010052.jpg"
    assert Path(row["image"]["path"]) == (images / "10010052.jpg").resolve()
    assert open_image(row["image"]).size == (8, 6)

    meta = prepare_task({**spec, "karpathy_splits": {"eval": ["val"]}}, tmp_path / "val", seed=0)
    assert ids(tables(tmp_path / "val")["eval"]) == {"1000523639", "1000919630"}


def test_flickr30k_reads_files_only_and_checks_its_splits(tmp_path):
    karpathy, images = write_flickr30k(tmp_path / "flickr30k")
    spec = {"name": "flickr30k", "n_train": 1, "n_support": 1,
            "files": {"karpathy_json": str(karpathy), "images_dir": str(images)}}  # fmt: skip
    with pytest.raises(ValueError, match=r"Flickr30k: tasks\.flickr30k\.source must be files"):
        prepare_task({**spec, "source": {"train": "files", "eval": "hub"}, "hub_id": "x/y"}, tmp_path / "o", 0)
    with pytest.raises(ValueError, match=r"karpathy_splits\.train must list Karpathy splits from "
                       r"\['train', 'val', 'test'\], got \['restval'\]"):  # fmt: skip
        prepare_task({**spec, "source": "files", "karpathy_splits": {"train": "restval"}}, tmp_path / "o", 0)
    (images / "1000092795.jpg").unlink()
    with pytest.raises(DataError, match=r"Flickr30k: bad record .* missing image: image file .*1000092795\.jpg"):
        prepare_task({**spec, "source": "files", "n_train": None, "n_support": 5}, tmp_path / "o", 0)
    assert not (tmp_path / "o").exists()
