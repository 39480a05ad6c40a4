"""The results report (this package): one table and four plots over the run's models x tasks x methods.

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

Latencies: ``latency_ms_per_query`` is the evaluate job's own wall time per query, read from the
evaluation's ``timing.json`` (jobs of a run may overlap, so it is not a figure to compare across
methods); the compared latencies come from
``results/latency/<model>/<task>.json`` (``mimic latency``: every method timed side by side in
one process on one batch, median over rotated rounds, on the first run seed), ``n/a`` where that
file is absent. These are the report's only figures that differ between two identical runs: the
latency columns of ``summary.csv`` and ``summary.md``, ``latency_ratio`` in ``results/metrics.json`` and the
score-vs-latency plot (timing-derived); every other byte of the report, the other plots included, is the same.
    results/plots/score_by_method.png   grouped bars per task (mean over seeds, error bars: sd)
    results/plots/training_curves.png   training loss per step of every trained method and seed
    results/plots/score_vs_shots.png    ICL by shots (random and RICES demonstrations), zero-shot at 0,
                                        each trained method as a horizontal line (mean; bars and bands: sd)
    results/plots/score_vs_latency.png  score (mean over seeds) against the side-by-side latency (ms per query,
                                        first seed): one labelled point per method, zero-shot (square) and ICL
                                        (triangles) marked apart; a task without mimic latency's file: no points

The method table of ``summary.md`` sets each method's parameters, stored state (KiB, from ``mimic latency``'s
efficiency table: its tensors as saved, ICL's demonstration KV cache) and latency ratio to zero-shot side by
side; ``summary.csv`` holds ``stored_kib`` per result (first seed).
"""


from mimic.report.load import build_report
from mimic.report.results import PLOTS, SUMMARY_COLUMNS, SUMMARY_CSV, SUMMARY_MD, TOLERANCE, Report, ReportError, Result
from mimic.report.tables import comparisons, gap_recovery
from mimic.report.write import write_report

__all__ = ["PLOTS", "SUMMARY_COLUMNS", "SUMMARY_CSV", "SUMMARY_MD", "TOLERANCE", "Report", "ReportError", "Result",
           "build_report", "comparisons", "gap_recovery", "write_report"]
