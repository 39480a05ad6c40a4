"""Every method type through the real pipeline on the smallest settings: snakemake all, then the report.

Runs `snakemake --cores 2 all` on a copy of the workflow with the shipped miniature model, one
small task and every `methods:` entry of params.yaml (each method type and each MimIC ablation)
in run.trained, then checks each checkpoint names its type, each metrics.json gives the
parameter counts of its config, the teacher cache is read only where a loss needs it, and the
report holds the method table and the ablation table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]
TASK = "shapes-vqa"


def shrink(params: dict) -> dict:
    trained = [name for name, entry in params["methods"].items() if entry["type"] not in ("zero-shot", "icl")]
    params["run"] = {"models": ["mini-idefics2"], "tasks": [TASK], "seeds": [0], "untrained": ["zero-shot"],
                     "trained": trained}
    params["tasks"][TASK].update(n_train=8, n_support=16, n_eval=4)
    params["icd"].update(shots=4, draws=1)
    for entry in params["methods"].values():
        if "train" in entry:
            entry["train"].update(epochs=1, batch_size=4)
        if "fit" in entry:
            entry["fit"].update(batch_size=4)
        if entry["type"] == "function-vector":
            entry["config"].update(cie_prompts=2)
    params["teacher"].update(shard_size=8, batch_size=4)
    params["eval"].update(batch_size=4)
    return params


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pipeline_copy, snakemake_all):
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    root = pipeline_copy(tmp_path_factory.mktemp("methods"), params)
    snakemake_all(root, timeout=1800)
    return root, params


def test_every_method_trains_evaluates_and_reports_its_parameters(run_dir):
    from mimic.methods import count_parameters, read_config
    from mimic.pipeline.params import FITTED_TYPES

    root, params = run_dir
    for name in params["run"]["trained"]:
        entry = params["methods"][name]
        ckpt = root / "results" / "checkpoints" / "mini-idefics2" / TASK / "seed-0" / name
        doc = json.loads((ckpt / "mimic_config.json").read_text())
        assert doc["type"] == entry["type"], name
        counts = count_parameters(read_config(ckpt))
        folder = root / "results" / "eval" / "mini-idefics2" / TASK / "seed-0" / name
        metrics = json.loads((folder / "metrics.json").read_text())
        assert (metrics["trainable_params"], metrics["fitted_params"]) == (counts["trainable"], counts["fitted"]), name
        summary = json.loads((ckpt / "train_summary.json").read_text())
        hp = entry.get("train", {})
        reads_teacher = hp.get("align_weight", 0) > 0 or hp.get("kl_weight", 0) > 0
        assert (summary["teacher_mode"] == "cached") == reads_teacher, name
        log = (ckpt / "train_log.csv").read_text().splitlines()
        extra = "icl_ce_loss," if hp.get("icl_ce_weight", 0) > 0 else ""  # STAVE's paired term
        assert log[0] == f"step,epoch,loss,align_loss,ce_loss,kl_loss,{extra}lr", name
        assert len(log) == (1 if entry["type"] in FITTED_TYPES else 3), name  # 8 / 4 = 2 steps


def test_the_report_has_the_method_and_ablation_tables(run_dir):
    root, params = run_dir
    text = (root / "results" / "summary.md").read_text()
    methods = text.split("## Methods")[1].split("## MimIC ablations")[0]
    ablations = text.split("## MimIC ablations")[1].split("\n## ")[0]
    for name in ("zero-shot", "icl", "mimic", "live", "task-vector", "function-vector", "mtv", "i2cl", "hificl",
                 "lora", "mimic-lora", "stave"):
        assert f"| {name} |" in methods, name
    assert "| mimic-mlp |" not in methods
    for name, change in (("mimic-mlp", "insert: 'attn' -> 'mlp'"), ("mimic-ce-only", "align_weight: 1.0 -> 0.0")):
        assert f"| {name} | {change} |" in ablations, name
    assert "| mimic | (reference) |" in ablations
