"""Run seeds (run.seeds): every seed is a replicate of the whole run, with its own data, demonstrations
and training, under its own seed-<s> folders; the report gives mean and spread over them."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mimic.cli import main
from mimic.pipeline import paths
from mimic.pipeline.params import load_params, run_seeds, seeded
from mimic.pipeline.stages import result_settings, settings_file, stage_instances

REPO = Path(__file__).resolve().parents[1]
TASK = "shapes-names-vqa"


def test_a_run_seed_moves_every_seed_of_params_yaml_by_itself():
    params = load_params(REPO / "params.yaml")
    params["methods"]["task-vector"]["fit"]["seed"] = 5
    params["models"]["idefics2-8b-base"]["train"]["seed"] = 3
    before = copy.deepcopy(params)

    assert seeded(params, 0) == params
    two = seeded(params, 2)
    assert params == before  # a copy: params.yaml's values are left as they are
    assert (two["seed"], two["icd"]["seed"]) == (params["seed"] + 2, params["icd"]["seed"] + 2)
    assert two["methods"]["mimic"]["train"]["seed"] == params["methods"]["mimic"]["train"]["seed"] + 2
    assert two["methods"]["live"]["train"]["seed"] == params["methods"]["live"]["train"]["seed"] + 2
    assert two["methods"]["task-vector"]["fit"]["seed"] == 7
    assert two["models"]["idefics2-8b-base"]["train"]["seed"] == 5
    # nothing else changes
    for entry in (two, params):
        entry["seed"] = entry["icd"]["seed"] = 0
        for section in [*entry["methods"].values(), *entry["models"].values()]:
            for key in ("train", "fit"):
                if isinstance(section.get(key), dict) and "seed" in section[key]:
                    section[key]["seed"] = 0
    assert two == params


def test_every_seed_has_its_own_jobs_and_settings_and_latency_times_the_first():
    params = load_params(REPO / "params.yaml")
    params["run"].update(tasks=[TASK], seeds=[3, 1], untrained=["zero-shot"], trained=["mimic"])
    instances = stage_instances(params)
    per_stage = {}
    for instance in instances:
        per_stage.setdefault(instance.stage, []).append(dict(instance.names))
    assert per_stage["prepare"] == [{"task": TASK, "seed": 3}, {"task": TASK, "seed": 1}]
    assert per_stage["train"] == [{"model": "mini-idefics2", "task": TASK, "seed": s, "method": "mimic"}
                                  for s in (3, 1)]
    assert len(per_stage["evaluate"]) == 2 * 3  # zero-shot, icl, mimic on both seeds
    assert per_stage["latency"] == [{"model": "mini-idefics2", "task": TASK}]
    assert settings_file("train", "mini-idefics2", TASK, "mimic", seed=3) == Path(
        f"results/settings/train/mini-idefics2/{TASK}/seed-3/mimic.json")
    assert settings_file("prepare", task=TASK, seed="1") == Path(f"results/settings/prepare/{TASK}/seed-1.json")

    train = result_settings(params, "train", "mini-idefics2", TASK, "mimic", seed=3)
    assert train["method"]["train"]["seed"] == params["methods"]["mimic"]["train"]["seed"] + 3
    assert train["icd"]["seed"] == params["icd"]["seed"] + 3
    assert result_settings(params, "prepare", task=TASK, seed=1)["seed"] == params["seed"] + 1
    # what a command computes from its seeded params is what the settings file of that seed holds
    assert result_settings(seeded(params, 3), "train", "mini-idefics2", TASK, "mimic") == train


def write_small_params(root: Path, seeds: list[int], seed: int = 0) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = seed
    params["run"].update(tasks=[TASK], seeds=seeds)
    params["tasks"][TASK].update(n_train=6, n_support=10, n_eval=4)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def read_split(root: Path, seed: int, split: str) -> pd.DataFrame:
    return pd.read_parquet(root / paths.split_table(TASK, split, seed=seed))


def test_prepare_of_seed_s_is_prepare_of_params_yaml_with_its_seed_moved_by_s(tmp_path, monkeypatch):
    run, alone = tmp_path / "run", tmp_path / "alone"
    for folder in (run, alone):
        folder.mkdir()
    write_small_params(run, seeds=[0, 2])
    write_small_params(alone, seeds=[0], seed=2)  # the same data, as seed 0 of a params.yaml with seed: 2

    monkeypatch.chdir(run)
    for seed in (0, 2):
        assert main(["prepare", "--params", "params.yaml", "--task", TASK, "--seed", str(seed)]) == 0
    monkeypatch.chdir(alone)
    assert main(["prepare", "--params", "params.yaml", "--task", TASK]) == 0  # --seed: the first of run.seeds

    for split in ("train", "support", "eval"):
        replicate, reference = read_split(run, 2, split), read_split(alone, 0, split)
        assert replicate.drop(columns="image").equals(reference.drop(columns="image"))
        assert not replicate.drop(columns="image").equals(read_split(run, 0, split).drop(columns="image"))
    assert (run / "data" / TASK / "seed-0" / "meta.json").is_file()
    assert not (run / "data" / TASK / "train.parquet").exists()


def test_a_seed_outside_run_seeds_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_small_params(tmp_path, seeds=[0, 1])
    assert main(["prepare", "--params", "params.yaml", "--task", TASK, "--seed", "4"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mimic prepare: error: params.yaml: --seed 4 is not in run.seeds = [0, 1]; add it there (each seed's "
        "settings and outputs are declared from that list)"
    ]
    assert not (tmp_path / "data").exists()


def test_the_default_run_has_two_seeds():
    assert run_seeds(load_params(REPO / "params.yaml")) == [0, 1]


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1]])
def test_bad_run_seeds_are_refused(tmp_path, seeds):
    from mimic.pipeline.params import ParamsError

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"]["seeds"] = seeds
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamsError, match=r"run\.seeds"):
        load_params(path)
