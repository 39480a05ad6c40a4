"""What the report is made of: one result per (model, task, seed, method), the report, mean and sd, and where
the files go (:data:`SUMMARY_CSV`, :data:`SUMMARY_MD`, :data:`PLOTS`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from mimic.pipeline import paths

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
    "stored_kib",
)
TRAIN_LOG_COLUMNS = ("step", "epoch", "loss", "lr")  # required; the loss terms a method has are read too
LOSS_COLUMNS = ("align_loss", "ce_loss", "kl_loss")
SUMMARY_CSV = paths.RESULTS / "summary.csv"
SUMMARY_MD = paths.RESULTS / "summary.md"
PLOTS = {
    "score_by_method": paths.RESULTS / "plots" / "score_by_method.png",
    "training_curves": paths.RESULTS / "plots" / "training_curves.png",
    "score_vs_shots": paths.RESULTS / "plots" / "score_vs_shots.png",
    "score_vs_latency": paths.RESULTS / "plots" / "score_vs_latency.png",
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
    demos: str = "random"  # an icl method's demonstrations: random | rices (mimic.pipeline.params.method_demos)
    stored_kib: float | None = None  # mimic latency's efficiency table: the method's stored state (first seed)

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
