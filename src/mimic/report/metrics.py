"""The run's numeric metrics file for DVC (``results/metrics.json``): headline figures only, numbers only.

``dvc metrics show`` / ``diff`` and ``dvc exp show`` read it (dvc.yaml declares it as the one ``metrics:``
file), so their tables hold the figures a reader compares across experiments and nothing else::

    {"<model>": {"<task>": {"<method>": {"score": 33.0,             # headline score, mean over run.seeds
                                         "gap_recovery": 0.71,      # trained methods: (m - zero) / (icl - zero)
                                         "latency_ratio": 1.02}}}}  # trained methods: side-by-side, to zero-shot

A figure that is undefined (no zero-shot or ICL in the run, ICL equal to zero-shot, no latency file) is left out
rather than written as null. Strings and run metadata (metric variant, device, versions, commit) live in each
evaluation's ``metrics.json`` and in ``summary.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

from mimic.io.atomic import atomic_write_text
from mimic.pipeline import paths
from mimic.report.results import Report
from mimic.report.tables import comparisons

RUN_METRICS = paths.RESULTS / "metrics.json"


def run_metrics(report: Report) -> dict:
    """model -> task -> method -> {score, gap_recovery, latency_ratio} (numbers only, rounded to 4 digits)."""
    out: dict = {}
    for model in report.models:
        for task in report.tasks:
            for method in report.methods:
                score = report.score(model, task, method)
                if score is not None:
                    out.setdefault(model, {}).setdefault(task, {})[method] = {"score": round(score.mean, 4)}
    for row in comparisons(report):
        figures = out[row["model"]][row["task"]][row["method"]]
        if row["gap_recovery"] is not None:
            figures["gap_recovery"] = round(row["gap_recovery"].mean, 4)
        if row["latency_ratio"] is not None:
            figures["latency_ratio"] = round(row["latency_ratio"], 4)
    return out


def write_run_metrics(report: Report, path: str | Path = RUN_METRICS) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(run_metrics(report), indent=2) + "\n")
    return path
