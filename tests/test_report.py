"""`mimic report` on hand-made evaluation outputs whose scores are easy to compute by hand.

VQA accuracy (x100, official leave-one-out over 10 human answers): a prediction equal to 10
identical answers scores 100, a prediction matching none scores 0, and a prediction matching 2
of 10 answers scores (2 * 1/3 + 8 * 2/3) / 10 = 60.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mimic.cli import main
from mimic.pipeline.params import load_params
from mimic.report import (
    SUMMARY_COLUMNS,
    ReportError,
    build_report,
    gap_recovery,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "mini-idefics2"
TASKS = ("shapes-vqa", "shapes-vqa-transfer")

# Four questions whose ten human answers are: red x10, blue x10, green x10, red x2 + blue x8.
ANSWERS = [["red"] * 10, ["blue"] * 10, ["green"] * 10, ["red"] * 2 + ["blue"] * 8]
# predictions per method -> the score computed by hand
PREDICTIONS = {
    "zero-shot": (["two big red circles", "a blue square", "green crosses", "nothing"], 0.0),
    "icl-1": (["red", "blue", "yellow", "purple"], 50.0),
    "icl": (["red", "blue", "green", "white"], 75.0),
    "mimic": (["red", "blue", "black", "red"], (100 + 100 + 0 + 60) / 4),  # 65.0
}
SHOTS = {"zero-shot": 0, "icl-1": 1, "icl": 8, "mimic": 8}
LATENCY = {"zero-shot": 10.0, "icl-1": 18.0, "icl": 40.0, "mimic": 11.0}


def write_params(root: Path, metric_variant: str = "official", seeds: tuple[int, ...] = (0,)) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"] = {"models": [MODEL], "tasks": list(TASKS), "seeds": list(seeds), "untrained": ["zero-shot", "icl-1"],
                     "trained": ["mimic"]}
    params["eval"]["metric_variant"] = metric_variant
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def write_eval(
    root: Path, task: str, method: str, predictions: list[str], score: float, metric_variant: str = "official",
    seed: int = 0, older: bool = False,
) -> Path:
    """An evaluation's files as `mimic evaluate` writes them: its measurements in timing.json (``older``: in
    metrics.json and each prediction, as before they moved out)."""
    out = root / "results" / "eval" / MODEL / task / f"seed-{seed}" / method
    out.mkdir(parents=True, exist_ok=True)
    measured = {"latency_ms_per_query": LATENCY[method], "peak_memory_mb": 100.0}
    with open(out / "predictions.jsonl", "w") as fh:
        for i, (prediction, answers) in enumerate(zip(predictions, ANSWERS, strict=True)):
            row = {"id": f"{task}-{i}", "prediction": prediction, "answers": answers}
            fh.write(json.dumps({**row, "latency_ms": LATENCY[method]} if older else row) + "\n")
    if not older:
        latency = {f"{task}-{i}": LATENCY[method] for i in range(len(predictions))}
        (out / "timing.json").write_text(json.dumps({**measured, "latency_ms": latency}))
    metrics = {
        "model": MODEL,
        "task": task,
        "method": method,
        "method_type": {"zero-shot": "zero-shot", "mimic": "mimic"}.get(method, "icl"),
        "shots": SHOTS[method],
        "kind": "vqa",
        "metric": "vqa_accuracy",
        "metric_variant": metric_variant,
        "score": score,
        "n_eval": len(predictions),
        **(measured if older else {}),
        "trainable_params": 204 if method == "mimic" else 0,
        "icl_agreement": None if method == "icl" else 0.5,
        "skipped": {"train": 0, "support": 0, "eval": 1 if method == "icl-1" else 0},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out / "metrics.json"


def write_train_log(root: Path, task: str, method: str = "mimic", seed: int = 0) -> None:
    out = root / "results" / "checkpoints" / MODEL / task / f"seed-{seed}" / method
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_log.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "epoch", "loss", "align_loss", "ce_loss", "lr"])
        for step in range(1, 11):
            writer.writerow([step, (step - 1) // 5, 2.0 / step, 1.0 / step, 2.0 / step, 5e-3])


# `mimic latency` of the first task: ms per query and the median per-round ratio to zero-shot
SIDE_BY_SIDE = {"zero-shot": (9.0, 1.0), "icl-1": (15.0, 1.61), "icl": (30.0, 3.2), "mimic": (9.5, 1.04)}
# and its efficiency table's stored state in KiB (ICL: the demonstrations' KV cache; MimIC: 264 float32 numbers)
STORED_KIB = {"zero-shot": 0.0, "icl-1": 10.0, "icl": 80.0, "mimic": 1.031}


def write_latency(root: Path, task: str, efficiency: bool = True) -> None:
    path = root / "results" / "latency" / MODEL / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    methods = {m: {"ms_per_query": ms, "ratio_to_zero-shot": ratio} for m, (ms, ratio) in SIDE_BY_SIDE.items()}
    doc = {"baseline": "zero-shot", "methods": methods}
    if efficiency:  # a file of an older version has none
        doc["efficiency"] = {m: {"type": "x", "ttft_ms": 1.0, "forced_ms": 2.0, "forced_ratio": 1.0, "peak_mib": 0.5,
                                 "stored_kib": kib} for m, kib in STORED_KIB.items()}
    path.write_text(json.dumps(doc))


@pytest.fixture
def run_dir(tmp_path):
    params_path = write_params(tmp_path)
    for task in TASKS:
        for method, (predictions, score) in PREDICTIONS.items():
            write_eval(tmp_path, task, method, predictions, score)
        write_train_log(tmp_path, task)
    write_latency(tmp_path, TASKS[0])  # none for the second task: its side-by-side cells are empty
    return tmp_path, params_path


def test_summary_numbers_are_recomputed_from_predictions(run_dir):
    root, params_path = run_dir
    params = load_params(params_path)
    written = write_report(build_report(params, root=root), root=root)

    with open(root / "results" / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        rows = list(reader)
    assert [(r["task"], r["method"]) for r in rows] == [
        (task, method) for task in TASKS for method in ("zero-shot", "icl-1", "icl", "mimic")
    ]
    for row in rows:
        assert row["model"] == MODEL
        assert float(row["score"]) == pytest.approx(PREDICTIONS[row["method"]][1], abs=1e-9)
        assert int(row["shots"]) == SHOTS[row["method"]]
        assert row["metric"] == "vqa_accuracy" and row["metric_variant"] == "official"
        assert int(row["n_eval"]) == 4
        assert float(row["latency_ms_per_query"]) == LATENCY[row["method"]]  # the evaluate job's own
        if row["task"] == TASKS[0]:
            ms, ratio = SIDE_BY_SIDE[row["method"]]
            assert (float(row["latency_ms_side_by_side"]), float(row["latency_ratio_side_by_side"])) == (ms, ratio)
        else:
            assert row["latency_ms_side_by_side"] == row["latency_ratio_side_by_side"] == ""
    assert {r["method"]: r["icl_agreement"] for r in rows}["icl"] == ""  # null stays empty

    md = (root / "results" / "summary.md").read_text()
    for task in TASKS:
        assert f"## {task} (vqa, vqa_accuracy, official)" in md
    assert "- `official`: VQA accuracy of the current official VQA evaluation (GT-Vision-Lab/VQA" in md
    assert "`reference`" not in md
    assert md.count("skipped = ") == 2  # icl-1's count, once per task
    assert '- shapes-vqa: skipped = {"eval": 1, "support": 0, "train": 0}' in md
    # gap recovery (65 - 0) / (75 - 0) = 0.87; the latency ratio measured side by side, not 11 / 10 of the jobs
    assert f"| mini-idefics2 | {TASKS[0]} | mimic | 0.00 | 75.00 (8) | 65.00 | 0.87 | 1.04x |" in md
    assert f"| mini-idefics2 | {TASKS[1]} | mimic | 0.00 | 75.00 (8) | 65.00 | 0.87 | n/a |" in md
    assert "| mini-idefics2 | mimic | 8 | 65.00 | 4 | 9.5 | 1.04x | 11.0 | 204 | 0.5 |" in md

    for name in ("score_by_method", "training_curves", "score_vs_shots", "score_vs_latency"):
        png = root / "results" / "plots" / f"{name}.png"
        assert png in written
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p for p in (root / "results").rglob("*.tmp")]
    assert leftovers == []


def test_evaluations_of_an_older_version_give_the_same_report(run_dir, tmp_path_factory):
    """Before the measurements moved to timing.json, metrics.json held the eval job's latency (and each
    prediction its own): such outputs give the same report, byte for byte."""
    root, params_path = run_dir
    params = load_params(params_path)
    write_report(build_report(params, root=root), root=root)
    older = tmp_path_factory.mktemp("older")
    write_params(older)
    for task in TASKS:
        for method, (predictions, score) in PREDICTIONS.items():
            write_eval(older, task, method, predictions, score, older=True)
        write_train_log(older, task)
    write_latency(older, TASKS[0])
    assert not list(older.rglob("timing.json"))
    write_report(build_report(params, root=older), root=older)
    for name in ("summary.csv", "summary.md", "metrics.json"):
        assert (older / "results" / name).read_bytes() == (root / "results" / name).read_bytes(), name


def test_a_damaged_timing_file_names_itself_and_the_command(run_dir):
    root, params_path = run_dir
    timing = root / "results" / "eval" / MODEL / TASKS[0] / "seed-0" / "mimic" / "timing.json"
    timing.write_text("{")
    with pytest.raises(ReportError, match=r"timing\.json: not a timing file of `mimic evaluate`.*rerun `mimic "
                                          r"evaluate --params .* --method mimic`"):
        build_report(load_params(params_path), root=root)


def test_gap_recovery():
    assert gap_recovery(65.0, 0.0, 75.0) == pytest.approx(65 / 75)
    assert gap_recovery(30.0, 20.0, 40.0) == pytest.approx(0.5)
    assert gap_recovery(30.0, 20.0, 20.0) is None  # no gap to recover


def test_cli_writes_the_outputs_and_the_log(run_dir, monkeypatch):
    root, _ = run_dir
    monkeypatch.chdir(root)
    assert main(["report", "--params", "params.yaml", "--log", "results/logs/report/report.log"]) == 0
    for rel in ("summary.csv", "summary.md", "plots/score_by_method.png", "logs/report/report.log"):
        assert (root / "results" / rel).is_file()
    assert "recomputed from 4 predictions" in (root / "results/logs/report/report.log").read_text()


def test_fails_loudly_when_metrics_disagree_with_predictions(run_dir, monkeypatch):
    root, params_path = run_dir
    metrics_path = write_eval(root, "shapes-vqa", "icl", PREDICTIONS["icl"][0], 75.0 + 1e-3)
    with pytest.raises(ReportError) as info:
        build_report(load_params(params_path), root=root)
    message = str(info.value)
    assert "\n" not in message
    assert str(metrics_path.relative_to(root)) in message
    assert "disagrees with 75.0 recomputed from" in message

    monkeypatch.chdir(root)
    log = root / "report.log"
    assert main(["report", "--params", "params.yaml", "--log", str(log)]) == 2  # an expected failure: one line
    assert "disagrees" in log.read_text()
    assert not (root / "results" / "summary.csv").exists()


def test_within_tolerance_is_accepted(run_dir):
    root, params_path = run_dir
    write_eval(root, "shapes-vqa", "icl", PREDICTIONS["icl"][0], 75.0 + 1e-8)
    report = build_report(load_params(params_path), root=root)
    assert report.result(MODEL, "shapes-vqa", "icl").score == pytest.approx(75.0, abs=1e-12)


def test_missing_metrics_names_the_file_and_the_command(run_dir):
    root, params_path = run_dir
    (root / "results/eval" / MODEL / "shapes-vqa-transfer/seed-0/icl-1/metrics.json").unlink()
    with pytest.raises(ReportError) as info:
        build_report(load_params(params_path), root=root)
    assert str(info.value) == (
        f"results/eval/{MODEL}/shapes-vqa-transfer/seed-0/icl-1/metrics.json is missing; it is made by "
        f"`mimic evaluate --params params.yaml --model {MODEL} --task shapes-vqa-transfer --seed 0 --method icl-1` "
        "(or `snakemake --cores 4 all`)"
    )


def test_missing_train_log_names_mimic_train(run_dir):
    root, params_path = run_dir
    (root / "results/checkpoints" / MODEL / "shapes-vqa/seed-0/mimic/train_log.csv").unlink()
    with pytest.raises(ReportError, match=r"train_log.csv is missing; it is made by `mimic train --params"):
        build_report(load_params(params_path), root=root)


def test_metrics_of_another_method_are_refused(run_dir):
    root, params_path = run_dir
    path = root / "results/eval" / MODEL / "shapes-vqa/seed-0/icl-1/metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "method": "icl-2"}))
    with pytest.raises(ReportError, match=r"icl-1/metrics.json: method = 'icl-2', expected 'icl-1'"):
        build_report(load_params(params_path), root=root)


def test_scores_follow_the_metric_variant_of_params(run_dir):
    """A prediction "Red." for ten answers "red": 0 under the official code (identical answers are
    compared as they are), 1 under the reference code (always normalised)."""
    root, params_path = run_dir
    icl = ["Red.", "blue", "green", "white"]
    write_eval(root, "shapes-vqa", "icl", icl, (0 + 100 + 100 + 0) / 4)
    report = build_report(load_params(params_path), root=root)
    assert report.result(MODEL, "shapes-vqa", "icl").score == 50.0

    (root / "reference").mkdir()
    reference_params = write_params(root / "reference", metric_variant="reference")
    with pytest.raises(ReportError) as info:  # every metrics.json still says official
        build_report(load_params(reference_params), root=root, params_path="reference/params.yaml")
    assert str(info.value) == (
        f"results/eval/{MODEL}/shapes-vqa/seed-0/zero-shot/metrics.json: metric_variant = 'official', but "
        "eval.metric_variant in reference/params.yaml makes it 'reference'; rerun `mimic evaluate --params "
        f"reference/params.yaml --model {MODEL} --task shapes-vqa --seed 0 --method zero-shot`"
    )
    for task in TASKS:
        for method, (predictions, score) in PREDICTIONS.items():
            if (task, method) == ("shapes-vqa", "icl"):
                predictions, score = icl, (100 + 100 + 100 + 0) / 4
            write_eval(root, task, method, predictions, score, metric_variant="reference")
    report = build_report(load_params(reference_params), root=root)
    assert report.result(MODEL, "shapes-vqa", "icl").score == 75.0
    write_report(report, root=root)
    rows = list(csv.DictReader((root / "results" / "summary.csv").open()))
    assert {r["metric_variant"] for r in rows} == {"reference"}
    md = (root / "results" / "summary.md").read_text()
    assert "## shapes-vqa (vqa, vqa_accuracy, reference)" in md
    assert "- `reference`: VQA accuracy of the MimIC reference code" in md and "`official`" not in md


def test_metrics_without_a_variant_are_refused(run_dir):
    root, params_path = run_dir
    path = root / "results/eval" / MODEL / "shapes-vqa/seed-0/icl/metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["metric_variant"]  # written before the variants existed
    path.write_text(json.dumps(metrics))
    with pytest.raises(ReportError, match=r"icl/metrics.json: no metric_variant, but eval.metric_variant in "
                       r"params.yaml makes it 'official'; rerun `mimic evaluate"):  # fmt: skip
        build_report(load_params(params_path), root=root)


def test_score_vs_shots_draws_random_and_rices_curves_and_each_trained_method(run_dir, monkeypatch):
    from mimic.report import plots as report_plots

    root, params_path = run_dir
    params = yaml.safe_load(params_path.read_text())
    params["run"]["untrained"] = ["zero-shot", "icl-1", "icl-rices-1"]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    SHOTS["icl-rices-1"], LATENCY["icl-rices-1"] = 1, 18.0
    try:
        for task in TASKS:  # RICES found the right colour for three of the four queries
            write_eval(root, task, "icl-rices-1", ["red", "blue", "green", "purple"], 75.0)
        report = build_report(load_params(params_path), root=root)
    finally:
        del SHOTS["icl-rices-1"], LATENCY["icl-rices-1"]
    assert {r.method: r.demos for r in report.results if r.task == TASKS[0]} == {
        "zero-shot": "random", "icl-1": "random", "icl-rices-1": "rices", "icl": "random", "mimic": "random"}
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig))
    report_plots.plot_score_vs_shots(report, root / "plot.png")
    ax = figures[0].axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines[f"{MODEL} ICL (random)"] == ([0, 1, 8], [0.0, 50.0, 75.0])  # zero-shot, icl-1, icl
    assert lines[f"{MODEL} ICL (RICES)"] == ([0, 1], [0.0, 75.0])  # zero-shot, icl-rices-1
    assert lines[f"{MODEL} mimic"][1] == [65.0, 65.0]  # a horizontal line at MimIC's score


# A second seed: ICL right on all four questions (blue matches 8 of 10 answers: 100), MimIC on three (75).
SEED_1 = {
    "zero-shot": PREDICTIONS["zero-shot"],
    "icl-1": PREDICTIONS["icl-1"],
    "icl": (["red", "blue", "green", "blue"], 100.0),
    "mimic": (["red", "blue", "green", "nothing"], 75.0),
}


def test_two_seeds_give_mean_and_spread_and_gap_recovery_per_seed_then_averaged(tmp_path, monkeypatch):
    from mimic.report import plots as report_plots
    from mimic.report import tables as report_tables

    params_path = write_params(tmp_path, seeds=(0, 1))
    for task in TASKS:
        for seed, table in ((0, PREDICTIONS), (1, SEED_1)):
            for method, (predictions, score) in table.items():
                write_eval(tmp_path, task, method, predictions, score, seed=seed)
            write_train_log(tmp_path, task, seed=seed)
    write_latency(tmp_path, TASKS[0])
    report = build_report(load_params(params_path), root=tmp_path)
    write_report(report, root=tmp_path)

    with open(tmp_path / "results" / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["task"], r["seed"], r["method"]) for r in rows] == [
        (task, seed, method)
        for task in TASKS
        for seed in ("0", "1")
        for method in ("zero-shot", "icl-1", "icl", "mimic")
    ]
    assert [float(r["score"]) for r in rows if r["method"] == "mimic"] == [65.0, 75.0, 65.0, 75.0]
    # the side-by-side latency belongs to the seed it timed, the first
    timed = [r["latency_ms_side_by_side"] for r in rows if r["task"] == TASKS[0] and r["method"] == "mimic"]
    assert timed == ["9.5", ""]

    md = (tmp_path / "results" / "summary.md").read_text()
    assert "Over the 2 run seeds 0, 1 (run.seeds" in md
    # mean and sample sd: icl (75 + 100) / 2 = 87.5, |75 - 100| / sqrt(2) = 17.68; mimic 70 and 7.07
    # the method table: parameters, stored KiB and latency ratio side by side (per task: the second has no
    # latency file), then the scores
    assert f"| {MODEL} | icl | icl | 8 | 0 | 80.0 / n/a | 3.20x / n/a | 87.50 ± 17.68 | 87.50 ± 17.68 |" in md
    assert f"| {MODEL} | mimic | 8 | 70.00 ± 7.07 | 65.00 / 75.00 | 4 / 4 | 9.5 | 1.04x |" in md
    # gap recovery per seed: 65 / 75 = 0.867 and 75 / 100 = 0.75; mean 0.808, sd 0.117 / sqrt(2) = 0.082
    # (not the gap of the means, 70 / 87.5 = 0.80)
    assert (f"| {MODEL} | {TASKS[0]} | mimic | 0.00 ± 0.00 | 87.50 ± 17.68 (8) | 70.00 ± 7.07 | 0.81 ± 0.08 | "
            "0.87 / 0.75 | 1.04x |") in md
    gap = next(c for c in report_tables.comparisons(report) if c["task"] == TASKS[0])["gap_recovery"]
    assert gap.mean == pytest.approx((65 / 75 + 0.75) / 2) and gap.sd == pytest.approx((65 / 75 - 0.75) / 2**0.5)

    # results/metrics.json, DVC's metrics: the same figures as numbers only (means over the seeds)
    run_metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert run_metrics == {MODEL: {
        TASKS[0]: {"zero-shot": {"score": 0.0}, "icl-1": {"score": 50.0}, "icl": {"score": 87.5},
                   "mimic": {"score": 70.0, "gap_recovery": round((65 / 75 + 0.75) / 2, 4), "latency_ratio": 1.04}},
        TASKS[1]: {"zero-shot": {"score": 0.0}, "icl-1": {"score": 50.0}, "icl": {"score": 87.5},
                   "mimic": {"score": 70.0, "gap_recovery": round((65 / 75 + 0.75) / 2, 4)}},  # no latency file
    }}

    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig))
    report_plots.plot_score_vs_shots(report, tmp_path / "plot.png")
    ax = figures[0].axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines[f"{MODEL} ICL (random)"] == [0.0, 50.0, 87.5]  # the means over the seeds
    assert lines[f"{MODEL} mimic"] == [70.0, 70.0]
    bars = [c for c in ax.containers if c.has_yerr]  # the ICL curve's error bars: one sd
    segments = bars[0].lines[2][0].get_segments()
    assert [round(float(s[1][1] - s[0][1]), 4) for s in segments] == [0.0, 0.0, round(2 * 25 / 2**0.5, 4)]


def test_the_method_table_sets_parameters_stored_state_and_latency_ratio_side_by_side(run_dir):
    root, params_path = run_dir
    write_latency(root, TASKS[1])  # now both tasks have the same figures: one value per cell
    report = build_report(load_params(params_path), root=root)
    write_report(report, root=root)
    md = (root / "results" / "summary.md").read_text()
    table = md.split("## Methods")[1].split("\n## ")[0]
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert header == ("| model | method | type | shots | params | stored KiB | latency ratio | "
                      "shapes-vqa (vqa_accuracy) | shapes-vqa-transfer (vqa_accuracy) |")
    rows = [line for line in table.splitlines() if line.startswith(f"| {MODEL} |")]
    assert rows == [
        f"| {MODEL} | zero-shot | zero-shot | 0 | 0 | 0.0 | 1.00x | 0.00 | 0.00 |",
        f"| {MODEL} | icl-1 | icl | 1 | 0 | 10.0 | 1.61x | 50.00 | 50.00 |",
        f"| {MODEL} | icl | icl | 8 | 0 | 80.0 | 3.20x | 75.00 | 75.00 |",
        f"| {MODEL} | mimic | mimic | 8 | 204 | 1.0 | 1.04x | 65.00 | 65.00 |",
    ]
    csv_rows = list(csv.DictReader((root / "results" / "summary.csv").open()))
    assert {r["method"]: float(r["stored_kib"]) for r in csv_rows if r["task"] == TASKS[0]} == STORED_KIB

    write_latency(root, TASKS[1], efficiency=False)  # a latency file of an older version: no stored state
    md = summary_md(root, params_path)
    assert f"| {MODEL} | mimic | mimic | 8 | 204 | 1.0 / n/a | 1.04x | 65.00 | 65.00 |" in md


def summary_md(root: Path, params_path: Path) -> str:
    write_report(build_report(load_params(params_path), root=root), root=root)
    return (root / "results" / "summary.md").read_text()


def test_score_vs_latency_has_one_point_per_method_at_the_table_numbers(run_dir, monkeypatch):
    from mimic.report import plots as report_plots

    root, params_path = run_dir
    report = build_report(load_params(params_path), root=root)
    write_report(report, root=root)
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig))
    report_plots.plot_score_vs_latency(report, root / "plot.png")
    timed, untimed = figures[0].axes  # one panel per task; the second task has no latency file
    points = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), line.get_marker())
              for line in timed.get_lines()}
    # the numbers of summary.csv: side-by-side ms per query against the score, one point per method of the run
    rows = [r for r in csv.DictReader((root / "results" / "summary.csv").open()) if r["task"] == TASKS[0]]
    assert {name: (x, y) for name, (x, y, _) in points.items()} == {
        r["method"]: ([float(r["latency_ms_side_by_side"])], [float(r["score"])]) for r in rows}
    assert points["zero-shot"][:2] == ([9.0], [0.0]) and points["mimic"][:2] == ([9.5], [65.0])  # by hand
    markers = {name: marker for name, (_, _, marker) in points.items()}
    assert markers == {"zero-shot": "s", "icl-1": "^", "icl": "^", "mimic": "o"}  # zero-shot and ICL marked
    assert sorted(t.get_text() for t in timed.texts) == sorted(points)  # each point labelled
    assert untimed.get_lines() == [] and "no side-by-side latency" in untimed.texts[0].get_text()
