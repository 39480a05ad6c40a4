"""A real-model / real-task params file (paths pointing at fixtures in the official formats):
the pipeline plans its full DAG, and `mimic prepare` reads the fixtures through the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_loaders import (
    EVAL_IMAGES,
    FLICKR,
    TRAIN_IMAGES,
    VQA_FEATURES,
    flickr_captions,
    question_ids,
    vqa_hub_rows,
    write_flickr30k,
    write_hub_dir,
    write_images,
    write_vqa_json,
)
from test_pipeline_declarations import copy_workflow, plan

from mimic.cli import main
from mimic.data.schema import read_table

REPO = Path(__file__).resolve().parents[1]


def real_params(tmp_path, workdir) -> dict:
    raw = tmp_path / "raw"
    (raw / "vqav2").mkdir(parents=True)
    names = ("v2_OpenEnded_mscoco_{split}_questions.json", "v2_mscoco_{split}_annotations.json")
    qt, at = write_vqa_json(raw / "vqav2", "train2014", question_ids(TRAIN_IMAGES, 3), *names)
    qe, ae = write_vqa_json(raw / "vqav2", "val2014", question_ids(EVAL_IMAGES, 2), *names)
    coco = raw / "coco"
    write_images(coco / "train2014", (1, 2, 3, 4, 5))
    write_images(coco / "val2014", (6, 7), "COCO_val2014_")
    karpathy = {"images": [
        {"filepath": "train2014" if i <= 5 else "val2014",
         "filename": f"COCO_{'train2014' if i <= 5 else 'val2014'}_{i:012d}.jpg",
         "split": "train" if i <= 5 else "test", "cocoid": i,
         "sentences": [{"raw": f"caption {k} of image {i}."} for k in range(5)]}
        for i in range(1, 8)
    ]}
    (coco / "dataset_coco.json").write_text(json.dumps(karpathy))
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    model_dir = workdir / "hub" / "idefics2-8b-base"
    model_dir.mkdir(parents=True)  # stands in for a local copy of the hub model (its files' digest is a setting)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    params["models"]["idefics2-8b-base"]["path"] = str(model_dir)
    params["tasks"]["vqav2"] = {
        "loader": "vqav2", "kind": "vqa", "source": "files", "n_train": 4, "n_support": 8, "n_eval": 6,
        "on_bad_sample": "skip",
        "files": {"questions_train": str(qt), "annotations_train": str(at), "images_train": str(write_images(
            raw / "vqav2" / "train2014", TRAIN_IMAGES)), "questions_eval": str(qe), "annotations_eval": str(ae),
            "images_eval": str(write_images(raw / "vqav2" / "val2014", EVAL_IMAGES, "COCO_val2014_"))},
    }
    params["tasks"]["coco-karpathy"] = {
        "loader": "coco-karpathy", "kind": "caption", "source": "files", "n_train": 2, "n_support": 3,
        "n_eval": 2, "on_bad_sample": "fail",
        "files": {"karpathy_json": str(coco / "dataset_coco.json"), "images_dir": str(coco)},
    }
    # params.yaml's own flickr30k entry, its files pointed at a fixture in Karpathy's format
    karpathy, images = write_flickr30k(raw / "flickr30k")
    params["tasks"]["flickr30k"].update(files={"karpathy_json": str(karpathy), "images_dir": str(images)},
                                        n_train=2, n_support=3)  # fmt: skip
    params["run"].update(models=["idefics2-8b-base"], tasks=["vqav2", "coco-karpathy", "flickr30k"], seeds=[0])
    params["icd"]["shots"] = 2
    params["models"]["idefics2-8b-base"]["shots"] = 2  # the paper's 8, scaled down with icd.shots
    for method in ("icl-4", "icl-rices-4"):  # more shots than icd.shots
        params["run"]["untrained"].remove(method)
        del params["methods"][method]
    return params


@pytest.fixture
def workdir(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    params = real_params(tmp_path, workdir)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def test_real_params_plan_the_full_dag(workdir):
    jobs = plan(workdir)
    counts = Counter(job.rule for job in jobs)
    trained = len(yaml.safe_load((workdir / "params.yaml").read_text())["run"]["trained"])
    # 3 tasks; methods zero-shot, icl-1, icl-2, icl-rices-1, icl (untrained) and the trained ones
    assert counts == {"prepare": 3, "embed": 3, "sample_icd": 3, "extract_teacher": 3, "train": 3 * trained,
                      "evaluate": 3 * (5 + trained), "latency": 3,
                      "report": 1, "all": 1}
    assert any("--model idefics2-8b-base --task vqav2 --seed 0 --method mimic" in (j.command or "") for j in jobs)


def test_prepare_reads_the_official_files_through_the_cli(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    for task in ("vqav2", "coco-karpathy"):
        assert main(["prepare", "--params", "params.yaml", "--task", task]) == 0
    vqa = {s: read_table(workdir / "data" / "vqav2" / "seed-0" / f"{s}.parquet") for s in ("train", "support", "eval")}
    assert [len(vqa[s]) for s in ("train", "support", "eval")] == [4, 8, 6]
    assert all(len(a) == 10 for a in vqa["eval"]["answers"])
    coco = read_table(workdir / "data" / "coco-karpathy" / "seed-0" / "eval.parquet")
    assert len(coco) == 2 and all(len(a) == 5 for a in coco["answers"])


def test_prepare_flickr30k_through_the_cli(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["prepare", "--params", "params.yaml", "--task", "flickr30k", "--log", "prepare.log"]) == 0
    folder = workdir / "data" / "flickr30k" / "seed-0"
    tables = {s: read_table(folder / f"{s}.parquet") for s in ("train", "support", "eval")}
    train_photos = {str(p) for p, split in FLICKR.items() if split == "train"}
    assert len(tables["train"]) == 2 and len(tables["support"]) == 3
    assert set(tables["train"]["id"]) | set(tables["support"]["id"]) == train_photos  # disjoint, from train
    test_photos = [p for p, split in FLICKR.items() if split == "test"]
    assert list(tables["eval"]["id"]) == [str(p) for p in test_photos]  # the Karpathy test split, all of it
    assert [list(a) for a in tables["eval"]["answers"]] == [flickr_captions(p) for p in test_photos]
    meta = json.loads((workdir / "data" / "flickr30k" / "seed-0" / "meta.json").read_text())
    assert meta["loader"] == "flickr30k" and meta["source"]["eval"]["karpathy_splits"] == ["test"]


def test_vqav2_default_evaluates_the_papers_10k_question_ids(tmp_path, workdir, monkeypatch):
    """params.yaml's vqav2 entry as shipped (question_ids: vqav2-val-10k, n_eval: null, hub eval pool),
    with its paths and training sizes pointed at fixtures: val2014 questions whose ids are the first
    four of the shipped list (in another order) plus two that are not in it."""
    from mimic.data.resources import question_set

    listed = [int(q) for q in question_set("vqav2-val-10k")[1].split()]
    first = listed[:4]
    pairs = [(q // 1000, q) for q in (first[2], 999999001, first[0], first[3], 999999002, first[1])]
    hub = write_hub_dir(tmp_path / "lmms-lab-VQAv2", {"validation": vqa_hub_rows(pairs)}, VQA_FEATURES)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())["tasks"]["vqav2"]
    assert shipped["question_ids"] == "vqav2-val-10k" and shipped["n_eval"] is None
    train = params["tasks"]["vqav2"]["files"]
    params["tasks"]["vqav2"] = {
        **shipped, "hub_id": str(hub), "hub_cache_dir": str(tmp_path / "hf-cache"), "n_train": 4, "n_support": 8,
        "files": {k: train[k] for k in ("questions_train", "annotations_train", "images_train")},
    }  # fmt: skip
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(workdir)
    assert main(["prepare", "--params", "params.yaml", "--task", "vqav2", "--log", "prepare.log"]) == 0
    evaluation = read_table(workdir / "data" / "vqav2" / "seed-0" / "eval.parquet")
    assert list(evaluation["id"]) == [str(q) for q in first]  # the list's order, not the source's
    meta = json.loads((workdir / "data" / "vqav2" / "seed-0" / "meta.json").read_text())
    assert meta["skipped"]["eval"] == {"not in source": 10_000 - 4}
    assert meta["eval_question_ids"]["source"] == "vqav2-val-10k" and meta["eval_question_ids"]["count"] == 10_000
