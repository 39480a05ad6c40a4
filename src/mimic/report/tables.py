"""The report's tables: summary.csv (one row per result) and summary.md (a method table, an ablation table, one
table per task; mean and sd over the seeds, MimIC's gap recovery and latency ratio)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mimic.io.atomic import atomic_write_text
from mimic.pipeline.params import (
    ICL_REFERENCE,
    MIMIC_REFERENCE,
)
from mimic.report.results import SUMMARY_COLUMNS, Report, Result, Spread, spread


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


def _per_task(values: list, show) -> str:
    """One cell for a figure of every task: the value once where the tasks agree, else each task's, in order."""
    shown = [show(v) for v in values]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def method_rows(report: Report) -> list[dict]:
    """The method table's figures: per model and method (MimIC's ablations left out), its parameters, stored state
    (KiB) and latency ratio to zero-shot per task (first seed, side by side; None where not measured) and its
    score per task (mean over the seeds)."""
    rows = []
    for model in report.models:
        for method in (m for m in report.methods if m not in report.ablations):
            firsts = [report.result(model, task, method) for task in report.tasks]
            first = next(r for r in firsts if r is not None)
            rows.append({"model": model, "method": method, "type": first.method_type, "shots": first.shots,
                         "params": _params_cell(first),
                         "stored_kib": [r.stored_kib if r else None for r in firsts],
                         "latency_ratio": [r.latency_ratio_side_by_side if r else None for r in firsts],
                         "scores": [report.score(model, task, method) for task in report.tasks]})
    return rows


def method_table(report: Report) -> list[str]:
    """Every method but MimIC's ablations, one row per model and method: parameters, stored state and latency
    ratio side by side, then one score column per task."""
    lines = [
        "## Methods",
        "",
        "Every method on the same model, demonstrations, training queries and evaluation. Parameters: trained "
        "(+ fitted from forward passes, for Task / Function Vector and I2CL's context vectors). Stored KiB: what "
        "the method keeps besides the model (its tensors as saved; ICL: the demonstrations' KV cache of one "
        "query) and latency ratio to zero-shot (side by side), from `mimic latency`, per task where they differ. "
        + _seeds_line(report),
        "",
        "| model | method | type | shots | params | stored KiB | latency ratio | " + " | ".join(_task_headers(report))
        + " |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(report.tasks),
    ]
    for row in method_rows(report):
        scores = " | ".join(_fmt(v) for v in row["scores"])
        lines.append(f"| {row['model']} | {row['method']} | {row['type']} | {row['shots']} | {row['params']} | "
                     f"{_per_task(row['stored_kib'], lambda v: _fmt(v, 1))} | "
                     f"{_per_task(row['latency_ratio'], _ratio)} | {scores} |")
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
