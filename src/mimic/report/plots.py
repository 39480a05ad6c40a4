"""The report's plots: score by method, training curves, score against shots (error bars: sd over the seeds)."""

from __future__ import annotations

import math
from pathlib import Path

from mimic.io.atomic import atomic_write
from mimic.report.results import Report, Spread


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


MARKERS = {"zero-shot": "s", "icl": "^"}  # method type -> marker; every trained or fitted method: "o"


def latency_points(report: Report, task: str) -> list[tuple[str, str, str, float, float]]:
    """``(model, method, type, ms per query side by side, mean score)`` of every method of ``task`` that
    ``mimic latency`` timed (first seed), in the report's order."""
    points = []
    for model in report.models:
        for method in report.methods:
            r = report.result(model, task, method)
            if r is not None and r.latency_ms_side_by_side is not None:
                points.append((model, method, r.method_type, r.latency_ms_side_by_side,
                               report.score(model, task, method).mean))
    return points


def plot_score_vs_latency(report: Report, path: Path) -> None:
    """Score against latency (ms per query, side by side): one point per method of the run, labelled; zero-shot
    (squares) and ICL (triangles) marked apart from the trained and fitted methods (circles)."""
    from matplotlib import colormaps

    colors = colormaps["tab10"]
    fig, axes = _figure(len(report.tasks))
    for ax, task in zip(axes, report.tasks, strict=True):
        points = latency_points(report, task)
        for model, method, kind, ms, score in points:
            color = "black" if kind == "zero-shot" else colors(report.models.index(model) % 10)
            filled = kind not in MARKERS
            ax.plot([ms], [score], MARKERS.get(kind, "o"), color=color, markerfacecolor=color if filled else "none",
                    markersize=8, label=f"{model} / {method}" if len(report.models) > 1 else method)
            ax.annotate(method, (ms, score), textcoords="offset points", xytext=(5, 4), fontsize="small")
        metric = next(r.metric for r in report.results if r.task == task)
        ax.set_title(task)
        ax.set_xlabel("latency, ms per query (side by side; first seed)")
        ax.set_ylabel(metric)
        if points:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no side-by-side latency (mimic latency)", ha="center", va="center",
                    transform=ax.transAxes)
    _save(fig, path)
