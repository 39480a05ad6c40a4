"""mimic.pipeline.dvc.forget_resplit_outputs: Snakemake's records of outputs made under another
teacher.jobs / eval.jobs are dropped (so the job is judged by mtime, by its settings file), the
others kept. Records are written as Snakemake writes them (.snakemake/metadata/<urlsafe base64 of
the output path>, JSON with the rule and its inputs); tests/test_slurm.py shows the effect on a real
Snakemake plan.
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from mimic.pipeline.dvc import forget_resplit_outputs

MANIFEST = "results/teacher/m/t/manifest.json"
PREDICTIONS = "results/eval/m/t/icl/predictions.jsonl"
CHECKPOINT = "results/checkpoints/m/t/mimic/mimic.safetensors"


def record(root: Path, output: str, rule: str, inputs: list[str]) -> None:
    (root / output).parent.mkdir(parents=True, exist_ok=True)
    (root / output).write_text("x")
    meta = root / ".snakemake" / "metadata" / urlsafe_b64encode(output.encode()).decode()
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"rule": rule, "input": inputs, "endtime": (root / output).stat().st_mtime}))


def parts(folder: str, jobs: int, ext: str) -> list[str]:
    return ["data/t/icd.json", *(f"{folder}/part-{i:05d}-of-{jobs:05d}.{ext}" for i in range(jobs))]


def params(teacher_jobs: int, eval_jobs: int) -> dict:
    return {"teacher": {"jobs": teacher_jobs}, "eval": {"jobs": eval_jobs}}


@pytest.mark.parametrize(("teacher_rule", "teacher_split", "eval_rule", "eval_split", "now", "dropped"), [
    ("extract_teacher", None, "evaluate", None, (1, 1), set()),
    ("extract_teacher", None, "evaluate", None, (4, 1), {MANIFEST}),
    ("extract_teacher", None, "evaluate", None, (1, 3), {PREDICTIONS}),
    ("merge_teacher", 4, "merge_evaluate", 3, (4, 3), set()),
    ("merge_teacher", 4, "merge_evaluate", 3, (2, 3), {MANIFEST}),
    ("merge_teacher", 4, "merge_evaluate", 3, (4, 1), {PREDICTIONS}),
    ("merge_teacher", 4, "merge_evaluate", 3, (1, 2), {MANIFEST, PREDICTIONS}),
])
def test_only_records_of_another_split_are_dropped(tmp_path, teacher_rule, teacher_split, eval_rule, eval_split, now,
                                                   dropped):
    record(tmp_path, MANIFEST, teacher_rule,
           parts("results/parts/teacher/m/t", teacher_split, "safetensors") if teacher_split else ["data/t/icd.json"])
    record(tmp_path, PREDICTIONS, eval_rule,
           parts("results/parts/eval/m/t/icl", eval_split, "json") if eval_split else ["data/t/icd.json"])
    record(tmp_path, CHECKPOINT, "train", ["data/t/icd.json"])
    assert set(forget_resplit_outputs(params(*now), tmp_path)) == dropped
    left = {p.name for p in (tmp_path / ".snakemake" / "metadata").iterdir()}
    assert left == {urlsafe_b64encode(o.encode()).decode() for o in {MANIFEST, PREDICTIONS, CHECKPOINT} - dropped}
    assert forget_resplit_outputs(params(*now), tmp_path) == []  # what is left belongs to this split
