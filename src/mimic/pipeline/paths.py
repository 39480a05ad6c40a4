"""Where every pipeline artifact lives. Snakemake rules, dvc.yaml and the CLI all agree on this.

Every run seed (``run.seeds``) is a replicate of the whole run, with its own data, demonstrations,
teacher, checkpoints and evaluations under a ``seed-<s>`` level:

    data/<task>/seed-<s>/{train,support,eval}.parquet, meta.json    mimic prepare
    data/<task>/seed-<s>/embeddings.safetensors                      mimic embed (RICES: icd.embedding)
    data/<task>/seed-<s>/icd.json                                    mimic sample-icd
    results/teacher/<model>/<task>/seed-<s>/manifest.json (+ shards) mimic extract-teacher
    results/checkpoints/<model>/<task>/seed-<s>/<method>/            mimic train  (mimic.safetensors,
                                                                     mimic_config.json, train_log.csv)
    results/eval/<model>/<task>/seed-<s>/<method>/predictions.jsonl  mimic evaluate
    results/eval/<model>/<task>/seed-<s>/<method>/metrics.json       mimic evaluate
    results/eval/<model>/<task>/seed-<s>/<method>/timing.json        mimic evaluate (wall time, memory)
    results/latency/<model>/<task>.json                              mimic latency (the first seed)
    results/summary.csv, summary.md, plots/*.png                     mimic report
    results/logs/<stage>/[seed-<s>/]<model>-<task>-<method>.log      every stage (last line: wall and CPU time,
                                                                     peak memory)
    results/settings/<stage>/...json                                 mimic validate (mimic.pipeline.stages): each
                                                                     stage's settings
    results/partial/teacher/<model>/<task>/seed-<s>/                 an unfinished teacher extraction (resumed)
    results/parts/teacher/<model>/<task>/seed-<s>/part-I-of-N.*      one job of a split extraction (teacher.jobs > 1)
    results/parts/eval/<model>/<task>/seed-<s>/<method>/part-I-of-N.* one job of a split evaluation (eval.jobs > 1)
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RESULTS = Path("results")


def seed_dir(seed: int) -> str:
    """The path level of one run seed (``run.seeds``)."""
    return f"seed-{int(seed)}"


def task_dir(task: str, *, seed: int) -> Path:
    return DATA / task / seed_dir(seed)


def split_table(task: str, split: str, *, seed: int) -> Path:
    return task_dir(task, seed=seed) / f"{split}.parquet"


def task_meta(task: str, *, seed: int) -> Path:
    return task_dir(task, seed=seed) / "meta.json"


def icd_file(task: str, *, seed: int) -> Path:
    return task_dir(task, seed=seed) / "icd.json"


def embeddings_file(task: str, *, seed: int) -> Path:
    return task_dir(task, seed=seed) / "embeddings.safetensors"


def teacher_dir(model: str, task: str, *, seed: int) -> Path:
    return RESULTS / "teacher" / model / task / seed_dir(seed)


def teacher_partial_dir(model: str, task: str, *, seed: int) -> Path:
    """Where an extraction keeps its finished shards until the cache is complete (resume)."""
    return RESULTS / "partial" / "teacher" / model / task / seed_dir(seed)


def part_name(part: int, jobs: int, ext: str) -> str:
    """The file of part ``part`` (0-based) of a ``jobs``-way split job (extraction or evaluation)."""
    return f"part-{part:05d}-of-{jobs:05d}.{ext}"


def teacher_parts_dir(model: str, task: str, *, seed: int) -> Path:
    """Where the jobs of a split teacher extraction put their parts until `mimic merge-teacher` joins them."""
    return RESULTS / "parts" / "teacher" / model / task / seed_dir(seed)


def eval_parts_dir(model: str, task: str, method: str, *, seed: int) -> Path:
    """Where the jobs of a split evaluation put their predictions until `mimic merge-evaluate` joins them."""
    return RESULTS / "parts" / "eval" / model / task / seed_dir(seed) / method


def teacher_manifest(model: str, task: str, *, seed: int) -> Path:
    return teacher_dir(model, task, seed=seed) / "manifest.json"


def checkpoint_dir(model: str, task: str, method: str, *, seed: int) -> Path:
    return RESULTS / "checkpoints" / model / task / seed_dir(seed) / method


def eval_dir(model: str, task: str, method: str, *, seed: int) -> Path:
    return RESULTS / "eval" / model / task / seed_dir(seed) / method


def predictions_file(model: str, task: str, method: str, *, seed: int) -> Path:
    return eval_dir(model, task, method, seed=seed) / "predictions.jsonl"


def metrics_file(model: str, task: str, method: str, *, seed: int) -> Path:
    return eval_dir(model, task, method, seed=seed) / "metrics.json"


def timing_file(model: str, task: str, method: str, *, seed: int) -> Path:
    """The evaluation's measurements (wall time per query, peak memory): the only file of the folder whose bytes
    differ between two identical runs."""
    return eval_dir(model, task, method, seed=seed) / "timing.json"


def latency_file(model: str, task: str) -> Path:
    """Every method of the run timed side by side on one batch (``mimic latency``)."""
    return RESULTS / "latency" / model / f"{task}.json"


def log_file(stage: str, *names: str) -> Path:
    return RESULTS / "logs" / stage / ("-".join(names) + ".log")
