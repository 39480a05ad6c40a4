"""The paper's experiment as one command, fixture-sized: `mimic preset paper reference fixture`, then
`snakemake all` in one copy of the pipeline and `dvc repro` in another.

The presets are the shipped ones (presets/paper.yaml: Idefics-9b and Idefics2-8b-base x VQAv2 / OK-VQA / COCO,
zero-shot, ICL, RICES, MimIC; presets/reference.yaml: the reference code's protocol), then a fixture overlay
written here: the model paths at tiny random Idefics / Idefics2 saved with their real processors, the task
files at fixtures in the official formats, every size scaled down, float32 on the CPU, the baselines but
MimIC left out (each adds a training per model and task; tests/test_methods_pipeline.py runs them all), and
OK-VQA's stemming off (its nltk data cannot be downloaded offline; tests/test_sample_logs.py runs the stemming
through `mimic evaluate`). Both tools must compute the same scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_loaders import EVAL_IMAGES, TRAIN_IMAGES, question_ids, write_images, write_vqa_json
from test_pipeline_declarations import copy_workflow

from mimic.tiny.families import tiny_family

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MODELS = {"idefics-9b": "idefics", "idefics2-8b-base": "idefics2"}
TASKS = ("vqav2", "okvqa", "coco-karpathy")


def write_fixtures(raw: Path) -> dict:
    """The official files of the three tasks (tiny) and the fixture preset pointing at them."""
    files = {}
    for task, names in (("vqav2", ("v2_OpenEnded_mscoco_{split}_questions.json", "v2_mscoco_{split}_annotations.json")),
                        ("okvqa", ("OpenEnded_mscoco_{split}_questions.json", "mscoco_{split}_annotations.json"))):
        (raw / task).mkdir(parents=True)
        qt, at = write_vqa_json(raw / task, "train2014", question_ids(TRAIN_IMAGES, 3), *names)
        qe, ae = write_vqa_json(raw / task, "val2014", question_ids(EVAL_IMAGES, 1), *names)
        files[task] = {"questions_train": str(qt), "annotations_train": str(at),
                       "images_train": str(write_images(raw / "coco" / "train2014", TRAIN_IMAGES)),
                       "questions_eval": str(qe), "annotations_eval": str(ae),
                       "images_eval": str(write_images(raw / "coco" / "val2014", EVAL_IMAGES, "COCO_val2014_"))}
    karpathy = {"images": [  # train 1-4, restval 5 (unused by the reference protocol), val 101-102, test 103
        {"filepath": "train2014" if i < 100 else "val2014",
         "filename": f"COCO_{'train2014' if i < 100 else 'val2014'}_{i:012d}.jpg",
         "split": {5: "restval", 101: "val", 102: "val", 103: "test"}.get(i, "train"), "cocoid": i,
         "sentences": [{"raw": f"caption {k} of image {i}."} for k in range(5)]}
        for i in (*TRAIN_IMAGES, 5, *EVAL_IMAGES)
    ]}
    write_images(raw / "coco" / "train2014", (5,))
    (raw / "coco" / "dataset_coco.json").write_text(json.dumps(karpathy))
    files["coco-karpathy"] = {"karpathy_json": str(raw / "coco" / "dataset_coco.json"), "images_dir": str(raw / "coco")}
    sizes = {"n_train": 2, "n_support": 6, "n_eval": 2}
    tasks = {task: {"files": files[task], **sizes, "on_bad_sample": "fail"} for task in TASKS}
    for task in ("vqav2", "okvqa"):
        tasks[task].update(source="files", question_ids=None) if task == "vqav2" else tasks[task].update(source="files")
    tasks["okvqa"]["stem"] = False
    tasks["coco-karpathy"]["n_support"] = 2  # Karpathy train: 4 images, 2 of them training queries
    small_train = {"epochs": 1, "batch_size": 2, "grad_accum": 1}
    return {
        "run": {"trained": ["mimic"]},
        "icd": {"shots": 2, "draws": 1, "embedding": "idefics2-8b-base"},
        "tasks": tasks,
        "teacher": {"batch_size": 2},
        "eval": {"batch_size": 2},
        "latency": {"queries": 2, "new_tokens": 2, "rounds": 1},
        "models": {name: {"path": f"models/{name}", "dtype": "float32", "shots": 2, "train": small_train,
                          "eval": {"max_new_tokens": {"vqa": 3, "caption": 4}}} for name in MODELS},
    }


def make_copy(root: Path, fixture: dict) -> Path:
    work = copy_workflow(root)
    shutil.copytree(REPO / "presets", work / "presets")
    (work / "presets" / "fixture.yaml").write_text(yaml.safe_dump(fixture, sort_keys=False))
    for name, family in MODELS.items():
        lm = tiny_family(family)
        lm.model.save_pretrained(work / "models" / name)
        lm.processor.save_pretrained(work / "models" / name)
    return work


def run(argv: list[str], cwd: Path, timeout: int = 1500) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def scores(work: Path) -> dict:
    out = {}
    for path in sorted((work / "results" / "eval").glob("*/*/seed-0/*/metrics.json")):
        doc = json.loads(path.read_text())
        out[(doc["model"], doc["task"], doc["method"])] = (doc["score"], doc["n_eval"], doc["metric_variant"])
    return out


def test_the_paper_preset_runs_under_snakemake_and_dvc_alike(tmp_path):
    fixture = write_fixtures(tmp_path / "raw")
    mimic = str(Path(sys.executable).parent / "mimic")
    works = {tool: make_copy(tmp_path / tool, fixture) for tool in ("snakemake", "dvc")}
    for work in works.values():
        out = run([mimic, "preset", "paper", "reference", "fixture"], work)
        assert "run.models" in out and "eval.stop" in out
        params = yaml.safe_load((work / "params.yaml").read_text())
        assert params["run"]["models"] == list(MODELS) and params["run"]["tasks"] == list(TASKS)
        assert params["eval"]["stop"] == "eos" and params["icd"]["sampler"] == "reference"
    run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], works["snakemake"])
    dvc = works["dvc"]
    run(["git", "init", "-q"], dvc)
    run([sys.executable, "-m", "dvc", "init", "-q"], dvc)
    run([sys.executable, "-m", "dvc", "repro"], dvc)

    by_tool = {tool: scores(work) for tool, work in works.items()}
    methods = {"zero-shot", "icl-rices", "icl", "mimic"}
    assert set(by_tool["snakemake"]) == {(m, t, x) for m in MODELS for t in TASKS for x in methods}
    assert by_tool["snakemake"] == by_tool["dvc"]
    for (_, task, _), (_, n_eval, variant) in by_tool["dvc"].items():
        assert n_eval == 2 and variant == ("reference" if task != "coco-karpathy" else "pycocoevalcap")
    # the reference protocol's COCO split: evaluation on Karpathy val (101, 102), not test (103)
    meta = json.loads((dvc / "data" / "coco-karpathy" / "seed-0" / "meta.json").read_text())
    assert meta["source"]["eval"]["karpathy_splits"] == ["val"]
    rows = [json.loads(line) for line in (dvc / "results" / "eval" / "idefics-9b" / "coco-karpathy" / "seed-0" /
                                          "zero-shot" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["101", "102"]
    summary = (dvc / "results" / "summary.csv").read_text()
    assert "idefics2-8b-base" in summary and "okvqa" in summary
