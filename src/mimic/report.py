"""The results report: one table and three plots over the run's models x tasks x methods.

:func:`build_report` reads, for every (model, task, method) of the run, the
``metrics.json`` and ``predictions.jsonl`` written by ``mimic evaluate`` and, for trained
methods, the ``train_log.csv`` written by ``mimic train``. The headline score (VQA accuracy,
CIDEr) is **recomputed from the predictions file** with :func:`mimic.metrics.score` under the
metric variant of ``eval.metric_variant`` (the one ``mimic evaluate`` used; the report fails when
``metrics.json`` names another), and the report fails when it disagrees with ``metrics.json`` by
more than :data:`TOLERANCE`: every number of the table comes from the predictions that produced
it. ``summary.csv`` and ``summary.md`` name the variant of every score.

:func:`write_report` writes, each file atomically (a temporary file, then ``os.replace``)::

    results/summary.csv                 one row per (model, task, seed, method): SUMMARY_COLUMNS
    results/summary.md                  a table per task, MimIC's gap recovery and latency ratio: mean and
                                        sample standard deviation over the run seeds (run.seeds), gap
                                        recovery computed per seed, then averaged

Latencies: ``latency_ms_per_query`` is the evaluate job's own wall time per query (jobs of a run
may overlap, so it is not a figure to compare across methods); the compared latencies come from
``results/latency/<model>/<task>.json`` (``mimic latency``: every method timed side by side in
one process on one batch, median over rotated rounds, on the first run seed), ``n/a`` where that
file is absent.
    results/plots/score_by_method.png   grouped bars per task (mean over seeds, error bars: sd)
    results/plots/training_curves.png   training loss per step of every trained method and seed
    results/plots/score_vs_shots.png    ICL by shots (random and RICES demonstrations), zero-shot at 0,
                                        each trained method as a horizontal line (mean; bars and bands: sd)
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mimic import paths
from mimic.atomic import atomic_write, atomic_write_text
from mimic.params import (
    ICL_REFERENCE,
    MIMIC_REFERENCE,
    ablation_changes,
    method_demos,
    method_type,
    run_methods,
    run_seeds,
)

TOLERANCE = 1e-6
SUMMARY_COLUMNS = (
    "model",
    "task",
    "seed",
    "method",
    "shots",
    "metric",
    "metric_variant",
    "score",
    "n_eval",
    "latency_ms_per_query",
    "latency_ms_side_by_side",
    "latency_ratio_side_by_side",
    "trainable_params",
    "fitted_params",
    "icl_agreement",
)
TRAIN_LOG_COLUMNS = ("step", "epoch", "loss", "lr")  # required; the loss terms a method has are read too
LOSS_COLUMNS = ("align_loss", "ce_loss", "kl_loss")
SUMMARY_CSV = paths.RESULTS / "summary.csv"
SUMMARY_MD = paths.RESULTS / "summary.md"
PLOTS = {
    "score_by_method": paths.RESULTS / "plots" / "score_by_method.png",
    "training_curves": paths.RESULTS / "plots" / "training_curves.png",
    "score_vs_shots": paths.RESULTS / "plots" / "score_vs_shots.png",
}


class ReportError(RuntimeError):
    """A missing or inconsistent input of the report; the message is one line naming the file."""


@dataclass
class Result:
    """One evaluated (model, task, run seed, method), its score recomputed from its predictions."""

    model: str
    task: str
    seed: int
    method: str
    method_type: str
    shots: int
    kind: str
    metric: str
    metric_variant: str
    score: float
    n_eval: int
    latency_ms_per_query: float | None
    trainable_params: int | None
    icl_agreement: float | None
    fitted_params: int | None = None
    skipped: object = None
    latency_ms_side_by_side: float | None = None  # mimic latency: every method on one batch, one process
    latency_ratio_side_by_side: float | None = None  # median per-round ratio to zero-shot
    demos: str = "random"  # an icl method's demonstrations: random | rices (mimic.params.method_demos)

    def row(self) -> dict:
        return {column: getattr(self, column) for column in SUMMARY_COLUMNS}


@dataclass
class Report:
    models: list[str]
    tasks: list[str]
    methods: list[str]
    results: list[Result]
    train_logs: dict[tuple[str, str, int, str], list[dict[str, float]]] = field(default_factory=dict)
    ablations: dict[str, str] = field(default_factory=dict)  # MimIC ablation -> what it changes
    seeds: list[int] = field(default_factory=lambda: [0])  # run.seeds, the first first

    def result(self, model: str, task: str, method: str, seed: int | None = None) -> Result | None:
        """One seed's result (default: the first seed's)."""
        seed = self.seeds[0] if seed is None else seed
        for r in self.results:
            if (r.model, r.task, r.seed, r.method) == (model, task, seed, method):
                return r
        return None

    def per_seed(self, model: str, task: str, method: str) -> list[Result]:
        """The method's results on every seed that has one, in run.seeds order."""
        found = (self.result(model, task, method, seed) for seed in self.seeds)
        return [r for r in found if r is not None]

    def score(self, model: str, task: str, method: str) -> Spread | None:
        """Mean and spread of the method's score over the seeds."""
        results = self.per_seed(model, task, method)
        return spread([r.score for r in results]) if results else None


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (None for one value) of a figure over the run seeds."""

    mean: float
    sd: float | None


def spread(values: list[float]) -> Spread:
    values = [float(v) for v in values]
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


# -- reading ---------------------------------------------------------------------------------


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
    return metric, float(score(kind, predictions, references, variant, caption_metrics=[metric])[metric])


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
        latency_ms_per_query=metrics.get("latency_ms_per_query"),
        trainable_params=metrics.get("trainable_params"),
        fitted_params=metrics.get("fitted_params"),
        icl_agreement=metrics.get("icl_agreement"),
        skipped=metrics.get("skipped"),
    )


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
    """Fill the side-by-side latency of (model, task)'s results (the first seed's: the one it times) from
    ``mimic latency``'s file, if there."""
    rel = paths.latency_file(model, task)
    if not (root / rel).is_file():
        return
    try:
        doc = json.loads((root / rel).read_text())
        timed, ratio_key = doc["methods"], f"ratio_to_{doc['baseline']}"
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{rel}: not a latency file of `mimic latency` ({exc!r}); rerun "
                          f"`mimic latency --model {model} --task {task}`") from None
    for r in results:
        if (r.model, r.task) == (model, task) and r.method in timed:
            r.latency_ms_side_by_side = timed[r.method]["ms_per_query"]
            r.latency_ratio_side_by_side = timed[r.method][ratio_key]


# -- writing ---------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_summary_csv(report: Report, path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for result in report.results:
        writer.writerow([_cell(result.row()[c]) for c in SUMMARY_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def gap_recovery(mimic: float, zero: float, icl: float) -> float | None:
    """(mimic - zero) / (icl - zero): 1 when MimIC closes the whole zero-shot -> ICL gap."""
    return None if icl == zero else (mimic - zero) / (icl - zero)


def _zero_shot_method(report: Report) -> str | None:
    return next((r.method for r in report.results if r.method_type == "zero-shot"), None)


def comparisons(report: Report) -> list[dict]:
    """Per (model, task, trained method): zero-shot, ICL and the method's scores over the seeds, and its gap
    recovery computed on each seed against that seed's zero-shot and ICL, then averaged."""
    zero_method = _zero_shot_method(report)
    rows = []
    for model in report.models:
        for task in report.tasks:
            for method in report.methods:
                runs = report.per_seed(model, task, method)
                if not runs or runs[0].method_type in ("zero-shot", "icl"):
                    continue
                gaps = []
                for r in runs:
                    zero = report.result(model, task, zero_method, r.seed) if zero_method else None
                    icl = report.result(model, task, ICL_REFERENCE, r.seed)
                    gaps.append(gap_recovery(r.score, zero.score, icl.score) if zero and icl else None)
                defined = [g for g in gaps if g is not None]
                icl = report.result(model, task, ICL_REFERENCE)
                rows.append(
                    {
                        "model": model,
                        "task": task,
                        "method": method,
                        "zero": report.score(model, task, zero_method) if zero_method else None,
                        "icl": report.score(model, task, ICL_REFERENCE),
                        "icl_shots": icl.shots if icl else None,
                        "score": report.score(model, task, method),
                        "gaps": gaps,
                        "gap_recovery": spread(defined) if defined else None,
                        "latency_ratio": runs[0].latency_ratio_side_by_side,
                    }
                )
    return rows


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, Spread):
        return _fmt(value.mean, digits) + ("" if value.sd is None else f" ± {value.sd:.{digits}f}")
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _per_seed(values: list, digits: int = 2) -> str:
    return " / ".join(_fmt(v, digits) for v in values)


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def _task_headers(report: Report) -> list[str]:
    return [f"{task} ({next(r.metric for r in report.results if r.task == task)})" for task in report.tasks]


def _params_cell(r: Result) -> str:
    trained = _fmt(r.trainable_params if r.trainable_params is not None else 0)
    return f"{trained} + {_fmt(r.fitted_params)} fitted" if r.fitted_params else trained


def _seeds_line(report: Report) -> str:
    if len(report.seeds) == 1:
        return f"One run seed ({report.seeds[0]}): no spread."
    return (f"Over the {len(report.seeds)} run seeds {', '.join(map(str, report.seeds))} (run.seeds: data, "
            "demonstrations and training together): mean ± sample standard deviation.")


def method_table(report: Report) -> list[str]:
    """Every method but MimIC's ablations, one row per model and method, one score column per task."""
    methods = [m for m in report.methods if m not in report.ablations]
    lines = [
        "## Methods",
        "",
        "Every method on the same model, demonstrations, training queries and evaluation. Parameters: trained "
        "(+ fitted from forward passes, for Task / Function Vector and I2CL's context vectors). "
        + _seeds_line(report),
        "",
        "| model | method | type | shots | params | " + " | ".join(_task_headers(report)) + " |",
        "|---|---|---|---:|---:|" + "---:|" * len(report.tasks),
    ]
    for model in report.models:
        for method in methods:
            first = next(r for task in report.tasks for r in report.per_seed(model, task, method))
            scores = " | ".join(_fmt(report.score(model, task, method)) for task in report.tasks)
            lines.append(f"| {model} | {method} | {first.method_type} | {first.shots} | {_params_cell(first)} | "
                         f"{scores} |")
    return lines + [""]


def ablation_table(report: Report) -> list[str]:
    """MimIC and each of its ablations (one switch each), with the score change against MimIC."""
    if not report.ablations or MIMIC_REFERENCE not in report.methods:
        return []
    lines = [
        "## MimIC ablations",
        "",
        f"Each ablation changes one switch of `{MIMIC_REFERENCE}`; in brackets the change of the (mean) score "
        "against it.",
        "",
        "| model | method | change | params | " + " | ".join(_task_headers(report)) + " |",
        "|---|---|---|---:|" + "---:|" * len(report.tasks),
    ]
    for model in report.models:
        for method in [MIMIC_REFERENCE, *report.ablations]:
            cells = []
            for task in report.tasks:
                r, ref = report.score(model, task, method), report.score(model, task, MIMIC_REFERENCE)
                delta = f" ({r.mean - ref.mean:+.2f})" if method != MIMIC_REFERENCE else ""
                cells.append(_fmt(r) + delta)
            change = report.ablations.get(method, "(reference)")
            first = report.result(model, report.tasks[0], method)
            lines.append(f"| {model} | {method} | {change} | {_params_cell(first)} | {' | '.join(cells)} |")
    return lines + [""]


def summary_markdown(report: Report) -> str:
    from mimic.metrics import VARIANT_DESCRIPTIONS

    lines = [
        "# MimIC results",
        "",
        "Scores (x100) are recomputed from each `predictions.jsonl`. " + _seeds_line(report) + " Latency per "
        "query (first seed): side by side = every method timed in one process on one batch, the same number "
        "of generated tokens, median over rotated rounds (`mimic latency`); eval job = the evaluate job's own "
        "wall time (jobs may overlap: not for comparing). Metric variants:",
        "",
    ]
    variants = dict.fromkeys(r.metric_variant for r in report.results)
    lines += [f"- `{variant}`: {VARIANT_DESCRIPTIONS[variant]}" for variant in variants]
    lines.append("")
    lines += method_table(report) + ablation_table(report)
    several = len(report.seeds) > 1  # then a column of the per-seed values
    seeds = "/".join(map(str, report.seeds))
    for task in report.tasks:
        results = [r for r in report.results if r.task == task]
        kind, metric = results[0].kind, results[0].metric
        task_variants = ", ".join(dict.fromkeys(r.metric_variant for r in results))
        lines += [
            f"## {task} ({kind}, {metric}, {task_variants})",
            "",
            f"| model | method | shots | {metric} | " + (f"seeds {seeds} | " if several else "") + "n_eval | "
            "ms/query side by side | ratio to zero-shot | ms/query eval job | trainable params | ICL agreement % |",
            "|---|---|---:|---:|" + ("---:|" if several else "") + "---:|---:|---:|---:|---:|---:|",
        ]
        for model in report.models:
            for method in report.methods:
                runs = report.per_seed(model, task, method)
                if not runs:
                    continue
                r = runs[0]
                agreement = [x.icl_agreement for x in runs if x.icl_agreement is not None]
                lines.append(
                    f"| {model} | {method} | {r.shots} | {_fmt(report.score(model, task, method))} | "
                    + (f"{_per_seed([x.score for x in runs])} | " if several else "")
                    + f"{_per_seed([x.n_eval for x in runs])} | "
                    f"{_fmt(r.latency_ms_side_by_side, 1)} | {_ratio(r.latency_ratio_side_by_side)} | "
                    f"{_fmt(r.latency_ms_per_query, 1)} | {_fmt(r.trainable_params)} | "
                    f"{_fmt(spread(agreement) if agreement else None, 1)} |"
                )
        lines.append("")

    lines += [
        "## Trained methods against zero-shot and ICL",
        "",
        "gap recovery = (method - zero-shot) / (ICL - zero-shot), on each seed against that seed's zero-shot "
        f"and ICL, then averaged: 1 closes the whole gap to the `{ICL_REFERENCE}` teacher, 0 is no better than "
        "zero-shot. latency ratio = method / zero-shot, measured side by side (median of the per-round ratios).",
        "",
    ]
    rows = comparisons(report)
    if not rows:
        lines += ["No trained method in this run.", ""]
    else:
        lines += [
            "| model | task | method | zero-shot | ICL (shots) | method score | gap recovery | "
            + (f"gap, seeds {seeds} | " if several else "") + "latency ratio |",
            "|---|---|---|---:|---:|---:|---:|" + ("---:|" if several else "") + "---:|",
        ]
        for c in rows:
            icl = f"{_fmt(c['icl'])} ({c['icl_shots']})" if c["icl"] else "n/a"
            lines.append(
                f"| {c['model']} | {c['task']} | {c['method']} | {_fmt(c['zero'])} | {icl} | {_fmt(c['score'])} | "
                f"{_fmt(c['gap_recovery'])} | " + (f"{_per_seed(c['gaps'])} | " if several else "")
                + f"{_ratio(c['latency_ratio'])} |"
            )
        lines.append("")
    skipped = {(r.task, r.seed, json.dumps(r.skipped, sort_keys=True)): None
               for r in report.results if _any_skipped(r.skipped)}
    if skipped:
        lines += ["## Skipped samples", "", "Unreadable or malformed samples left out when the task was prepared:", ""]
        where = (lambda seed: f" (seed {seed})") if len(report.seeds) > 1 else (lambda seed: "")
        lines += [f"- {task}{where(seed)}: skipped = {value}" for task, seed, value in skipped]
        lines.append("")
    return "\n".join(lines)


def _any_skipped(value) -> bool:
    """Whether a metrics.json ``skipped`` value (a count, or counts per split) counts anything."""
    if isinstance(value, dict):
        return any(_any_skipped(v) for v in value.values())
    if isinstance(value, list | tuple):
        return len(value) > 0
    return bool(value)


def write_summary_md(report: Report, path: Path) -> None:
    text = summary_markdown(report)
    atomic_write_text(path, text)


# -- plots -----------------------------------------------------------------------------------


def _figure(n_panels: int, width: float = 5.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(max(n_panels, 1), 3)
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n_panels, 1))]
    return fig, axes


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def _sd(value: Spread) -> float:
    return value.sd or 0.0


def plot_score_by_method(report: Report, path: Path) -> None:
    fig, axes = _figure(len(report.tasks), width=max(5.0, 0.9 * len(report.methods) + 1.5))
    width = 0.8 / len(report.models)
    for ax, task in zip(axes, report.tasks, strict=True):
        for i, model in enumerate(report.models):
            scores = [report.score(model, task, m) for m in report.methods]
            xs = [x - 0.4 + width * (i + 0.5) for x in range(len(report.methods))]
            errors = [_sd(v) for v in scores] if len(report.seeds) > 1 else None
            ax.bar(xs, [v.mean for v in scores], width=width, yerr=errors, capsize=3, label=model)
        metric = next(r.metric for r in report.results if r.task == task)
        ax.set_title(task)
        ax.set_ylabel(metric)
        ax.set_xticks(range(len(report.methods)), report.methods, rotation=30, ha="right")
        ax.legend(fontsize="small")
    _save(fig, path)


def plot_training_curves(report: Report, path: Path) -> None:
    fig, axes = _figure(len(report.tasks))
    for ax, task in zip(axes, report.tasks, strict=True):
        curves = {key: rows for key, rows in report.train_logs.items() if key[1] == task}
        for (model, _, seed, method), rows in curves.items():
            if not rows:  # a fitted method: no training steps
                continue
            label = f"{model} / {method}" + (f" / seed {seed}" if len(report.seeds) > 1 else "")
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=label)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        if curves:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no trained method in this run", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)


def plot_score_vs_shots(report: Report, path: Path) -> None:
    """ICL by shots (random and RICES), zero-shot at 0, trained methods as horizontal lines: means over the
    seeds, with error bars (ICL) and bands (trained) of one standard deviation."""
    from matplotlib import colormaps

    colors = colormaps["tab10"]
    fig, axes = _figure(len(report.tasks))
    for ax, task in zip(axes, report.tasks, strict=True):
        for i, model in enumerate(report.models):
            color = colors(i % 10)
            first = [r for r in report.results if r.model == model and r.task == task and r.seed == report.seeds[0]]
            stats = {r.method: report.score(model, task, r.method) for r in first}
            zero = [(r.shots, stats[r.method]) for r in first if r.method_type == "zero-shot"]
            for demos, style in (("random", "o-"), ("rices", "s--")):
                icl = [(r.shots, stats[r.method]) for r in first if r.method_type == "icl" and r.demos == demos]
                points = sorted(zero + icl, key=lambda p: p[0])
                if icl:
                    xs, means = [p[0] for p in points], [p[1].mean for p in points]
                    name = "RICES" if demos == "rices" else "random"
                    ax.plot(xs, means, style, color=color, label=f"{model} ICL ({name})")
                    if len(report.seeds) > 1:
                        ax.errorbar(xs, means, yerr=[_sd(p[1]) for p in points], fmt="none", ecolor=color, capsize=3)
            others = [r for r in first
                      if r.method_type not in ("zero-shot", "icl") and r.method not in report.ablations]
            for j, r in enumerate(others):
                line_color = colors((j + 1) % 10) if len(report.models) == 1 else color
                value = stats[r.method]
                ax.axhline(value.mean, color=line_color, linestyle=("--", ":", "-.")[j % 3],
                           label=f"{model} {r.method}")
                if value.sd:
                    ax.axhspan(value.mean - value.sd, value.mean + value.sd, color=line_color, alpha=0.12)
        metric = next(r.metric for r in report.results if r.task == task)
        ax.set_title(task)
        ax.set_xlabel("shots (0 = zero-shot)")
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    _save(fig, path)


def write_report(report: Report, root: str | Path = ".") -> list[Path]:
    """Write the summary table, the markdown report and the three plots under ``root``."""
    root = Path(root)
    write_summary_csv(report, root / SUMMARY_CSV)
    write_summary_md(report, root / SUMMARY_MD)
    plot_score_by_method(report, root / PLOTS["score_by_method"])
    plot_training_curves(report, root / PLOTS["training_curves"])
    plot_score_vs_shots(report, root / PLOTS["score_vs_shots"])
    return [root / SUMMARY_CSV, root / SUMMARY_MD, *(root / p for p in PLOTS.values())]
