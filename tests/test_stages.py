"""The settings files (mimic.pipeline.stages): one per job, changing exactly when its results would change."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from mimic.pipeline.params import ParamsError, load_params
from mimic.pipeline.stages import RESULT_NEUTRAL, changed_settings, stage_instances, write_settings

REPO = Path(__file__).resolve().parents[1]
MODEL = "models/mini-idefics2"


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copytree(REPO / MODEL, tmp_path / MODEL)
    return tmp_path


@pytest.fixture(scope="module")
def params() -> dict:
    params = load_params(REPO / "params.yaml")
    params["run"].update(tasks=["shapes-vqa", "shapes-caption"], seeds=[0], untrained=["zero-shot", "icl-2"],
                         trained=["mimic"])
    return params


def edited(params: dict, key: str, value) -> dict:
    out = copy.deepcopy(params)
    *parents, last = key.strip().split(".")
    node = out
    for part in parents:
        node = node[part]
    assert node.get(last) != value, f"{key} is already {value!r}"
    node[last] = value
    return out


def names(paths) -> set[str]:
    return {str(p).removeprefix("results/settings/") for p in paths}


def test_one_settings_file_per_job_of_the_run(params, root):
    written = write_settings(params, root)
    assert len(written) == len(stage_instances(params)) == 2 + 2 + 2 + 2 + 2 + 2 * 4 + 2 + 1
    assert "train/mini-idefics2/shapes-vqa/seed-0/mimic.json" in names(written)
    doc = json.loads((root / "results/settings/train/mini-idefics2/shapes-vqa/seed-0/mimic.json").read_text())
    assert doc["settings"]["method"] == params["methods"]["mimic"]
    assert len(doc["settings"]["model"]["files"]) == 64  # the local model's digest
    assert write_settings(params, root) == []  # unchanged content is not rewritten


# An edit -> the settings files it changes (for shapes-vqa and shapes-caption of mini-idefics2).
EVALUATE = {f"evaluate/mini-idefics2/{{t}}/seed-0/{m}.json" for m in ("zero-shot", "icl-2", "icl", "mimic")}
TRAIN, TEACHER = "train/mini-idefics2/{t}/seed-0/mimic.json", "extract-teacher/mini-idefics2/{t}/seed-0.json"
LATENCY = "latency/mini-idefics2/{t}.json"  # a trained method's settings reach it through its checkpoint
EDITS = {
    "methods.mimic.train.lr": (3.0e-3, {TRAIN, "evaluate/mini-idefics2/{t}/seed-0/mimic.json"}),
    "methods.icl-2.shots": (3, {"evaluate/mini-idefics2/{t}/seed-0/icl-2.json", LATENCY}),
    "icd.seed": (1, {"sample-icd/{t}/seed-0.json", TEACHER, TRAIN, *EVALUATE, LATENCY}),
    "teacher.target": ("layer", {TEACHER, TRAIN}),
    "teacher.shard_size": (7, {TEACHER}),
    "eval.num_beams": (3, {*EVALUATE, LATENCY}),
    "latency.rounds": (3, {LATENCY}),
    "tasks.shapes-vqa.n_eval": (7, {"prepare/shapes-vqa/seed-0.json", "embed/shapes-vqa/seed-0.json"}),
    "icd.embedding": (None, {"embed/{t}/seed-0.json", "sample-icd/{t}/seed-0.json", TEACHER, TRAIN, *EVALUATE,
                             LATENCY}),
    # a second seed adds its own jobs; the first seed's are left as they are
    "run.seeds": ([0, 1], {f.replace("seed-0", "seed-1") for f in (
        "prepare/{t}/seed-0.json", "embed/{t}/seed-0.json", "sample-icd/{t}/seed-0.json", TEACHER, TRAIN,
        *EVALUATE)} | {"report.json"}),
    "run.seeds ": ([2], {f.replace("seed-0", "seed-2") for f in (  # another first seed: latency times it
        "prepare/{t}/seed-0.json", "embed/{t}/seed-0.json", "sample-icd/{t}/seed-0.json", TEACHER, TRAIN,
        *EVALUATE)} | {"report.json", LATENCY}),
    "eval.metric_variant": ("reference", {"report.json", *EVALUATE}),
}


@pytest.mark.parametrize("key", list(EDITS))
def test_an_edit_changes_exactly_the_settings_of_the_jobs_it_affects(params, root, key):
    write_settings(params, root)
    value, files = EDITS[key]
    tasks = ["shapes-vqa"] if key.startswith("tasks.") else ["shapes-vqa", "shapes-caption"]
    expected = {f.format(t=t) for f in files for t in tasks}
    assert names(changed_settings(edited(params, key, value), root)) == expected


def test_the_eval_length_of_one_task_kind_changes_only_that_kind(params, root):
    write_settings(params, root)
    changed = names(changed_settings(edited(params, "eval.max_new_tokens", {"vqa": 3, "caption": 20}), root))
    methods = ("zero-shot", "icl-2", "icl", "mimic")
    assert changed == {f"evaluate/mini-idefics2/shapes-vqa/seed-0/{m}.json" for m in methods}


@pytest.mark.parametrize("key", RESULT_NEUTRAL)
def test_result_neutral_settings_change_nothing(params, root, key):
    write_settings(params, root)
    value = {"teacher.batch_size": 3, "eval.batch_size": 5, "models.*.threads": 2, "models.*.device": "cuda:1",
             "teacher.jobs": 4, "eval.jobs": 3}[key]
    assert changed_settings(edited(params, key.replace("*", "mini-idefics2"), value), root) == {}


def test_the_model_enters_by_the_content_of_its_files(params, root):
    write_settings(params, root)
    model_jobs = {str(i.settings_file) for i in stage_instances(params)
                  if i.stage in ("embed", "extract-teacher", "train", "evaluate", "latency")}  # embed: its vision tower
    (root / MODEL / "README.md").write_text("notes")  # not read by loading: no change
    assert changed_settings(params, root) == {}
    weights = root / MODEL / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the weights, same size
    weights.write_bytes(bytes(data))
    assert {str(p) for p in changed_settings(params, root)} == model_jobs
    weights.unlink()
    with pytest.raises(ParamsError, match=rf"^params.yaml: models.mini-idefics2.path = {root / MODEL}: no weights "):
        changed_settings(params, root)


def test_a_missing_model_directory_names_the_key(params, tmp_path):
    with pytest.raises(ParamsError, match=r"models.mini-idefics2.path = .*models/mini-idefics2: no such directory"):
        write_settings(params, tmp_path)
    assert not (tmp_path / "results" / "settings").exists()  # nothing written when a check fails


def test_the_settings_of_the_default_params_yaml_are_valid_json_for_dvc(root):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for path in write_settings(params, root):
        doc = json.loads((root / path).read_text())
        assert doc["stage"] in ("prepare", "embed", "sample-icd", "extract-teacher", "train", "evaluate", "latency",
                                "report")
