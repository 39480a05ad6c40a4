"""mimic report: summary table and plots over the run's models x tasks x methods.

Reads every results/eval/<model>/<task>/<method>/{metrics.json,predictions.jsonl} of the run
(and train_log.csv of trained methods), recomputes each headline score from its predictions
(failing when metrics.json disagrees), and writes results/summary.csv, results/summary.md and
results/plots/{score_by_method,training_curves,score_vs_shots,score_vs_latency}.png.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments


def add_arguments(parser) -> None:
    add_stage_arguments(parser)


def run(args) -> int:
    from mimic.errors import MimicError
    from mimic.io.logs import setup_logging
    from mimic.pipeline.params import load_params
    from mimic.report import ReportError, build_report, write_report

    log = setup_logging(args.log, "mimic.report")
    params = load_params(args.params)
    log.info("report over models %s x tasks %s", params["run"]["models"], params["run"]["tasks"])
    try:
        report = build_report(params, root=".", params_path=args.params)
    except ReportError as exc:
        raise MimicError(str(exc)) from None
    for r in report.results:
        log.info(
            "%s / %s / %s: %s = %.4f (recomputed from %d predictions)",
            r.model, r.task, r.method, r.metric, r.score, r.n_eval,
        )  # fmt: skip
    for path in write_report(report, root="."):
        log.info("wrote %s", path)
    return 0
