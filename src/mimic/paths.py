"""Where every pipeline artifact lives. Snakemake rules, dvc.yaml and the CLI all agree on this.

    data/<task>/{train,support,eval}.parquet, meta.json     mimic prepare
    data/<task>/embeddings.safetensors                       mimic embed (RICES: icd.embedding)
    data/<task>/icd.json                                     mimic sample-icd
    results/teacher/<model>/<task>/manifest.json (+ shards)  mimic extract-teacher
    results/checkpoints/<model>/<task>/<method>/             mimic train  (mimic.safetensors,
                                                             mimic_config.json, train_log.csv)
    results/eval/<model>/<task>/<method>/predictions.jsonl   mimic evaluate
    results/eval/<model>/<task>/<method>/metrics.json        mimic evaluate
    results/summary.csv, summary.md, plots/*.png             mimic report
    results/logs/<stage>/<model>-<task>-<method>.log         every stage (last line: wall and CPU time, peak memory)
    results/settings/<stage>/...json                         mimic validate (mimic.stages): each stage's settings
    results/partial/teacher/<model>/<task>/                  an unfinished teacher extraction (resumed)
    results/parts/teacher/<model>/<task>/part-I-of-N.*       one job of a split extraction (teacher.jobs > 1)
    results/parts/eval/<model>/<task>/<method>/part-I-of-N.* one job of a split evaluation (eval.jobs > 1)
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RESULTS = Path("results")


def task_dir(task: str) -> Path:
    return DATA / task


def split_table(task: str, split: str) -> Path:
    return task_dir(task) / f"{split}.parquet"


def task_meta(task: str) -> Path:
    return task_dir(task) / "meta.json"


def icd_file(task: str) -> Path:
    return task_dir(task) / "icd.json"


def embeddings_file(task: str) -> Path:
    return task_dir(task) / "embeddings.safetensors"


def teacher_dir(model: str, task: str) -> Path:
    return RESULTS / "teacher" / model / task


def teacher_partial_dir(model: str, task: str) -> Path:
    """Where an extraction keeps its finished shards until the cache is complete (resume)."""
    return RESULTS / "partial" / "teacher" / model / task


def part_name(part: int, jobs: int, ext: str) -> str:
    """The file of part ``part`` (0-based) of a ``jobs``-way split job (extraction or evaluation)."""
    return f"part-{part:05d}-of-{jobs:05d}.{ext}"


def teacher_parts_dir(model: str, task: str) -> Path:
    """Where the jobs of a split teacher extraction put their parts until `mimic merge-teacher` joins them."""
    return RESULTS / "parts" / "teacher" / model / task


def eval_parts_dir(model: str, task: str, method: str) -> Path:
    """Where the jobs of a split evaluation put their predictions until `mimic merge-evaluate` joins them."""
    return RESULTS / "parts" / "eval" / model / task / method


def teacher_manifest(model: str, task: str) -> Path:
    return teacher_dir(model, task) / "manifest.json"


def checkpoint_dir(model: str, task: str, method: str) -> Path:
    return RESULTS / "checkpoints" / model / task / method


def eval_dir(model: str, task: str, method: str) -> Path:
    return RESULTS / "eval" / model / task / method


def predictions_file(model: str, task: str, method: str) -> Path:
    return eval_dir(model, task, method) / "predictions.jsonl"


def metrics_file(model: str, task: str, method: str) -> Path:
    return eval_dir(model, task, method) / "metrics.json"


def latency_file(model: str, task: str) -> Path:
    """Every method of the run timed side by side on one batch (``mimic latency``)."""
    return RESULTS / "latency" / model / f"{task}.json"


def log_file(stage: str, *names: str) -> Path:
    return RESULTS / "logs" / stage / ("-".join(names) + ".log")
