"""A real-model / real-task params file (paths pointing at fixtures in the official formats):
the pipeline plans its full DAG, and `mimic prepare` reads the fixtures through the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from test_loaders import EVAL_IMAGES, TRAIN_IMAGES, question_ids, write_images, write_vqa_json
from test_pipeline_declarations import copy_workflow, plan

from mimic.cli import main
from mimic.data.schema import read_table


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
    model_dir.mkdir(parents=True)  # stands in for a local copy of the hub model
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
    params["run"].update(models=["idefics2-8b-base"], tasks=["vqav2", "coco-karpathy"])
    params["icd"]["shots"] = 2
    params["run"]["untrained"].remove("icl-4")
    del params["methods"]["icl-4"]
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
    # 2 tasks; methods zero-shot, icl-1, icl-2, icl (untrained) and mimic (trained)
    assert counts == {"prepare": 2, "sample_icd": 2, "extract_teacher": 2, "train": 2, "evaluate": 10,
                      "report": 1, "all": 1}
    assert any("--model idefics2-8b-base --task vqav2 --method mimic" in (j.command or "") for j in jobs)


def test_prepare_reads_the_official_files_through_the_cli(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    for task in ("vqav2", "coco-karpathy"):
        assert main(["prepare", "--params", "params.yaml", "--task", task]) == 0
    vqa = {s: read_table(workdir / "data" / "vqav2" / f"{s}.parquet") for s in ("train", "support", "eval")}
    assert [len(vqa[s]) for s in ("train", "support", "eval")] == [4, 8, 6]
    assert all(len(a) == 10 for a in vqa["eval"]["answers"])
    coco = read_table(workdir / "data" / "coco-karpathy" / "eval.parquet")
    assert len(coco) == 2 and all(len(a) == 5 for a in coco["answers"])
