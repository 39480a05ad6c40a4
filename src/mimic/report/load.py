"""Reading the run's results: metrics.json and predictions.jsonl of every (model, task, seed, method), the score
recomputed from the predictions and checked against metrics.json, the training logs and side-by-side latency."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from mimic.pipeline import paths
from mimic.pipeline.params import (
    ablation_changes,
    method_demos,
    method_type,
    run_methods,
    run_seeds,
)
from mimic.report.results import LOSS_COLUMNS, TOLERANCE, TRAIN_LOG_COLUMNS, Report, ReportError, Result


def _command(stage: str, params_path: str, model: str, task: str, method: str, seed: int) -> str:
    return f"mimic {stage} --params {params_path} --model {model} --task {task} --seed {seed} --method {method}"


def _require(path: Path, shown: Path, command: str) -> None:
    if not path.is_file():
        raise ReportError(f"{shown} is missing; it is made by `{command}` (or `snakemake --cores 4 all`)")


def read_jsonl(path: Path, shown: Path | None = None) -> list[dict]:
    rows = []
    with open(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{shown or path}: line {number} is not JSON ({exc.msg})") from None
    return rows


def score_predictions(
    kind: str, rows: list[dict], shown: Path | str = "predictions", variant: str = "official"
) -> tuple[str, float]:
    """The headline metric name and its value over ``rows`` (``{"id", "prediction", "answers"}``),
    VQA accuracy computed as ``variant`` (:data:`mimic.metrics.VQA_VARIANTS`) says."""
    from mimic.metrics import HEADLINE, score

    if kind not in HEADLINE:
        raise ReportError(f"{shown}: unknown task kind {kind!r}; known: {', '.join(HEADLINE)}")
    ids = [row.get("id") for row in rows]
    if len(set(ids)) != len(ids):
        raise ReportError(f"{shown}: ids are not unique")
    for number, row in enumerate(rows, start=1):
        missing = [key for key in ("id", "prediction", "answers") if key not in row]
        if missing:
            raise ReportError(f"{shown}: row {number} has no {', '.join(missing)}")
    predictions = [row["prediction"] for row in rows]
    references = [row["answers"] for row in rows]
    metric = HEADLINE[kind]  # only the headline (METEOR's Java start-up alone costs seconds per caption result)
    return metric, float(score(kind, predictions, references, variant, caption_metrics=[metric], rows=rows)[metric])


def load_result(params: dict, model: str, task: str, method: str, root: Path, params_path: str,
                seed: int) -> Result:
    metrics_rel = paths.metrics_file(model, task, method, seed=seed)
    predictions_rel = paths.predictions_file(model, task, method, seed=seed)
    command = _command("evaluate", params_path, model, task, method, seed)
    for rel in (metrics_rel, predictions_rel):
        _require(root / rel, rel, command)
    try:
        metrics = json.loads((root / metrics_rel).read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{metrics_rel}: not JSON ({exc.msg})") from None
    for key, expected in (("model", model), ("task", task), ("method", method)):
        if metrics.get(key) != expected:
            raise ReportError(f"{metrics_rel}: {key} = {metrics.get(key)!r}, expected {expected!r}")
    missing = [key for key in ("kind", "score", "shots") if key not in metrics]
    if missing:
        raise ReportError(f"{metrics_rel}: no {', '.join(missing)}")
    variant = _expected_variant(params, metrics["kind"], metrics_rel, params_path)
    if metrics.get("metric_variant") != variant:
        found = "no metric_variant"
        if "metric_variant" in metrics:
            found = f"metric_variant = {metrics['metric_variant']!r}"
        raise ReportError(
            f"{metrics_rel}: {found}, but eval.metric_variant in {params_path} makes it {variant!r}; rerun `{command}`"
        )

    rows = read_jsonl(root / predictions_rel, predictions_rel)
    if not rows:
        raise ReportError(f"{predictions_rel}: no predictions")
    metric, recomputed = score_predictions(metrics["kind"], rows, predictions_rel, params["eval"]["metric_variant"])
    if metrics.get("metric", metric) != metric:
        raise ReportError(
            f"{metrics_rel}: metric = {metrics['metric']!r}, expected {metric!r} for a {metrics['kind']} task"
        )
    claimed = metrics["score"]
    if not isinstance(claimed, int | float) or not abs(recomputed - claimed) <= TOLERANCE:
        raise ReportError(
            f"{metrics_rel}: score {claimed!r} disagrees with {recomputed!r} recomputed from {predictions_rel} "
            f"(tolerance {TOLERANCE:g}); rerun `{command}`"
        )
    n_eval = metrics.get("n_eval", len(rows))
    if n_eval != len(rows):
        raise ReportError(f"{metrics_rel}: n_eval = {n_eval} but {predictions_rel} has {len(rows)} predictions")
    return Result(
        model=model,
        task=task,
        seed=seed,
        method=method,
        method_type=method_type(params, method),
        demos=_demos(params, method),
        shots=int(metrics["shots"]),
        kind=metrics["kind"],
        metric=metric,
        metric_variant=variant,
        score=recomputed,
        n_eval=len(rows),
        latency_ms_per_query=_eval_job_latency(root, paths.timing_file(model, task, method, seed=seed), metrics,
                                               command),
        trainable_params=metrics.get("trainable_params"),
        fitted_params=metrics.get("fitted_params"),
        icl_agreement=metrics.get("icl_agreement"),
        skipped=metrics.get("skipped"),
    )


def _eval_job_latency(root: Path, rel: Path, metrics: dict, command: str) -> float | None:
    """The evaluate job's own mean wall time per query, from its timing.json (metrics.json held it before the
    measurements moved out of it; None where neither has it)."""
    if not (root / rel).is_file():
        return metrics.get("latency_ms_per_query")
    try:
        return json.loads((root / rel).read_text())["latency_ms_per_query"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{rel}: not a timing file of `mimic evaluate` ({exc!r}); rerun `{command}`") from None


def _demos(params: dict, method: str) -> str:
    """random | rices: which curve of the score-vs-shots plot an untrained method belongs to."""
    if method_demos(params, method) == "rices" or params["icd"].get("sampler") == "rices":
        return "rices"
    return "random"


def _expected_variant(params: dict, kind: str, shown: Path, params_path: str) -> str:
    from mimic.metrics import metric_variant

    try:
        return metric_variant(kind, params["eval"]["metric_variant"])
    except ValueError as exc:
        raise ReportError(f"{shown}: {exc} (eval.metric_variant in {params_path})") from None


def load_train_log(model: str, task: str, method: str, root: Path, params_path: str,
                   seed: int) -> list[dict[str, float]]:
    rel = paths.checkpoint_dir(model, task, method, seed=seed) / "train_log.csv"
    _require(root / rel, rel, _command("train", params_path, model, task, method, seed))
    with open(root / rel, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in TRAIN_LOG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportError(f"{rel}: no column {', '.join(missing)}; expected {', '.join(TRAIN_LOG_COLUMNS)}")
        columns = TRAIN_LOG_COLUMNS + tuple(c for c in LOSS_COLUMNS if c in (reader.fieldnames or []))
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                rows.append({c: float(row[c]) if row[c] not in ("", None) else math.nan for c in columns})
            except ValueError:
                raise ReportError(f"{rel}: line {number} holds a value that is not a number") from None
    return rows


def build_report(params: dict, root: str | Path = ".", params_path: str = "params.yaml") -> Report:
    """Read and check every input of the run's report (``root`` holds ``results/``)."""
    root = Path(root)
    run = params["run"]
    seeds = run_seeds(params)
    methods = run_methods(params)
    results = [
        load_result(params, model, task, method, root, params_path, seed)
        for model in run["models"]
        for task in run["tasks"]
        for seed in seeds
        for method in methods
    ]
    train_logs = {
        (model, task, seed, method): load_train_log(model, task, method, root, params_path, seed)
        for model in run["models"]
        for task in run["tasks"]
        for seed in seeds
        for method in run["trained"]
    }
    for model in run["models"]:
        for task in run["tasks"]:
            add_side_by_side_latency([r for r in results if r.seed == seeds[0]], model, task, root)
    return Report(list(run["models"]), list(run["tasks"]), methods, results, train_logs, ablation_changes(params),
                  seeds)


def add_side_by_side_latency(results: list[Result], model: str, task: str, root: Path) -> None:
    """Fill the side-by-side latency and the stored state of (model, task)'s results (the first seed's: the one it
    times) from ``mimic latency``'s file, if there (a file of an older version has no ``efficiency`` table)."""
    rel = paths.latency_file(model, task)
    if not (root / rel).is_file():
        return
    try:
        doc = json.loads((root / rel).read_text())
        timed, ratio_key = doc["methods"], f"ratio_to_{doc['baseline']}"
        stored = {m: row["stored_kib"] for m, row in (doc.get("efficiency") or {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{rel}: not a latency file of `mimic latency` ({exc!r}); rerun "
                          f"`mimic latency --model {model} --task {task}`") from None
    for r in results:
        if (r.model, r.task) == (model, task) and r.method in timed:
            r.latency_ms_side_by_side = timed[r.method]["ms_per_query"]
            r.latency_ratio_side_by_side = timed[r.method][ratio_key]
        if (r.model, r.task) == (model, task) and r.method in stored:
            r.stored_kib = stored[r.method]
