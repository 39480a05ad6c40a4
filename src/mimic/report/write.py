"""Writing the whole report, every file atomically."""

from __future__ import annotations

from pathlib import Path

from mimic.report.metrics import RUN_METRICS, write_run_metrics
from mimic.report.plots import (
    plot_score_by_method,
    plot_score_vs_latency,
    plot_score_vs_shots,
    plot_training_curves,
)
from mimic.report.results import PLOTS, SUMMARY_CSV, SUMMARY_MD, Report
from mimic.report.tables import write_summary_csv, write_summary_md


def write_report(report: Report, root: str | Path = ".") -> list[Path]:
    """Write the summary table, the markdown report, the run's numeric metrics for DVC and the four plots under
    ``root``."""
    root = Path(root)
    write_summary_csv(report, root / SUMMARY_CSV)
    write_run_metrics(report, root / RUN_METRICS)
    write_summary_md(report, root / SUMMARY_MD)
    plot_score_by_method(report, root / PLOTS["score_by_method"])
    plot_training_curves(report, root / PLOTS["training_curves"])
    plot_score_vs_shots(report, root / PLOTS["score_vs_shots"])
    plot_score_vs_latency(report, root / PLOTS["score_vs_latency"])
    return [root / SUMMARY_CSV, root / SUMMARY_MD, root / RUN_METRICS, *(root / p for p in PLOTS.values())]
