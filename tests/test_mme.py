"""MME through its loader, on fixtures in the official layouts (MME_Benchmark_release_version's subtask folders,
the lmms-lab/MME parquet), and its score: the official calculation.py (yes/no/other parsing, acc, acc+,
100 * (acc + acc+) per subtask, perception and cognition sums), hand-computed."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import pytest
from PIL import Image

from mimic.data.loaders import LOADERS, prepare_task
from mimic.data.schema import open_image, read_table
from mimic.metrics import HEADLINE, metric_variant, score, score_with_samples
from mimic.metrics.mme import mme_scores, parse_prediction

# subtask -> its images; artwork's files are split in images/ and questions_answers_YN/ as in the release
SUBTASKS = {"existence": ["e1.jpg", "e2.jpg", "e3.jpg"], "artwork": ["a1.jpg", "a2.png"],
            "code_reasoning": ["c1.png", "c2.png"]}


def picture(seed: int) -> Image.Image:
    return Image.new("RGB", (6, 4), (seed * 40 % 256, 90, 10))


def encoded(seed: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    picture(seed).save(buf, format=fmt)
    return buf.getvalue()


def questions_of(name: str) -> list[tuple[str, str]]:
    return [(f"Is there a {Path(name).stem} here? Please answer yes or no.", "Yes"),
            (f"Is there no {Path(name).stem} here? Please answer yes or no.", "No")]


def write_release(root: Path) -> Path:
    """MME_Benchmark_release_version/ with the official per-subtask layouts."""
    for n, (category, names) in enumerate(SUBTASKS.items()):
        folder = root / category
        split = category == "artwork"
        images, texts = (folder / "images", folder / "questions_answers_YN") if split else (folder, folder)
        images.mkdir(parents=True, exist_ok=True)
        texts.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            picture(n * 10 + k).save(images / name)
            lines = [f"{q}\t{a}" for q, a in questions_of(name)]
            (texts / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "eval_tool").mkdir()  # shipped beside the subtasks: not one
    return root


@pytest.fixture
def release(tmp_path) -> Path:
    return write_release(tmp_path / "MME_Benchmark_release_version")


def spec_of(root: Path, **sizes) -> dict:
    return {"name": "mme", "source": "files", "files": {"root": str(root)}, **sizes}


ALL_IDS = {f"{c}/{n}#{k}" for c, names in SUBTASKS.items() for n in names for k in (1, 2)}


def test_the_release_folders_give_every_question_zero_shot(tmp_path, release):
    assert LOADERS["mme"] is LOADERS["mme"]
    out = tmp_path / "data" / "mme"
    meta = prepare_task(spec_of(release, n_train=0, n_support=0, n_eval=None), out, seed=0)
    evaluation = read_table(out / "eval.parquet").set_index("id")
    assert meta["kind"] == "yes-no" and meta["sizes"] == {"train": 0, "support": 0, "eval": 14}
    assert set(evaluation.index) == ALL_IDS
    row = evaluation.loc["artwork/a2.png#2"]
    assert row["question"] == "Is there no a2 here? Please answer yes or no." and list(row["answers"]) == ["No"]
    assert row["category"] == "artwork" and row["image_name"] == "artwork/a2.png"
    assert open_image(row["image"]).size == (6, 4) and Path(row["image"]["path"]).parent.name == "images"
    assert list(evaluation.loc["existence/e1.jpg#1", "answers"]) == ["Yes"]


def test_holdout_takes_whole_images_out_of_evaluation_for_train_and_support(tmp_path, release):
    out = tmp_path / "data"
    meta = prepare_task(spec_of(release, holdout=3, n_train=2, n_support=None, n_eval=None), out, seed=5)
    tables = {role: read_table(out / f"{role}.parquet") for role in ("train", "support", "eval")}
    assert meta["sizes"] == {"train": 2, "support": 4, "eval": 8} and meta["pool_sizes"] == {"train": 6, "eval": 8}
    held = set(tables["train"]["image_name"]) | set(tables["support"]["image_name"])
    assert len(held) == 3 and not held & set(tables["eval"]["image_name"])  # both questions of an image together
    assert set(tables["train"]["id"]) | set(tables["support"]["id"]) | set(tables["eval"]["id"]) == ALL_IDS
    assert meta["source"]["train"]["part"] == "held out for train/support" and meta["source"]["train"]["holdout"] == 3
    again = prepare_task(spec_of(release, holdout=3, n_train=2, n_support=None, n_eval=None), tmp_path / "b", seed=5)
    assert again["sizes"] == meta["sizes"]
    assert list(read_table(tmp_path / "b" / "eval.parquet")["id"]) == list(tables["eval"]["id"])  # seeded


def test_training_needs_without_holdout_and_missing_files_are_one_line(tmp_path, release):
    with pytest.raises(ValueError) as err:
        prepare_task(spec_of(release, n_train=4, n_support=8, n_eval=None), tmp_path / "out", seed=0)
    message = str(err.value)
    assert "tasks.mme.holdout" in message and "n_train: 0 and n_support: 0" in message and "\n" not in message
    with pytest.raises(FileNotFoundError) as err:
        prepare_task(spec_of(tmp_path / "nowhere", n_train=0, n_support=0), tmp_path / "out", seed=0)
    message = str(err.value)
    assert "tasks.mme.files.root" in message and "Awesome-Multimodal-Large-Language-Models" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match=r"no subtask folder .* MME_Benchmark_release_version"):
        prepare_task(spec_of(release / "eval_tool", n_train=0, n_support=0), tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()


def test_hub_parquet_rows_give_the_same_questions(tmp_path, release):
    """lmms-lab/MME's layout: question_id = '<subtask>/<image file>', one row per question."""
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    rows = {"question_id": [], "image": [], "question": [], "answer": [], "category": []}
    for n, (category, names) in enumerate(SUBTASKS.items()):
        for k, name in enumerate(names):
            for question, answer in questions_of(name):
                rows["question_id"].append(f"{category}/{name}")
                rows["image"].append({"bytes": encoded(n * 10 + k, "PNG"), "path": None})
                rows["question"].append(question)
                rows["answer"].append(answer)
                rows["category"].append(category)
    features = datasets.Features({"question_id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "category": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(hub / "data" / "test-00000-of-00001.parquet"))
    spec = {"name": "mme", "source": "hub", "hub_id": str(hub), "hub_cache_dir": str(tmp_path / "cache"),
            "n_train": 0, "n_support": 0, "n_eval": None}
    prepare_task(spec, tmp_path / "hub-data", seed=0)
    prepare_task(spec_of(release, n_train=0, n_support=0, n_eval=None), tmp_path / "files-data", seed=0)
    from_hub = read_table(tmp_path / "hub-data" / "eval.parquet").set_index("id")
    from_files = read_table(tmp_path / "files-data" / "eval.parquet").set_index("id")
    assert set(from_hub.index) == ALL_IDS
    for column in ("question", "category", "image_name"):
        assert from_hub[column].to_dict() == from_files[column].to_dict()
    assert from_hub["answers"].map(list).to_dict() == from_files["answers"].map(list).to_dict()


def test_the_official_parser():
    assert [parse_prediction(t) for t in ("Yes", "no", "yes, there is", "Yes.", "not sure", "None of them",
                                          "I think so", "Unknown", "")] == [
        "yes", "no", "yes", "yes", "no", "no", "other", "other", "other"]
    assert parse_prediction("The answer is yes") == "other"  # only the first 4 characters are looked at


# (prediction of the "Yes" question, prediction of the "No" question) per image
PREDICTED = {"existence/e1.jpg": ("Yes", "No"), "existence/e2.jpg": ("yes, there is", "Yes"),
             "existence/e3.jpg": ("I think", "no"), "artwork/a1.jpg": ("No", "No"),
             "artwork/a2.png": ("Yes.", "not sure"), "code_reasoning/c1.png": ("Yes", "No"),
             "code_reasoning/c2.png": ("No", "Yes")}


def test_scores_against_a_hand_computation():
    """existence: right 2 + 1 + 1 of 6 questions, 1 of 3 images both right: 100 * (4/6 + 1/3) = 100;
    artwork: 1 + 2 of 4, 1 of 2 images: 100 * (3/4 + 1/2) = 125; code_reasoning: 2 of 4, 1 of 2: 100.
    Perception = 100 + 125 (existence, artwork), cognition = 100, total 325."""
    images = [name for name in PREDICTED for _ in (1, 2)]
    predictions = [p for pair in PREDICTED.values() for p in pair]
    answers = ["Yes", "No"] * len(PREDICTED)
    categories = [name.split("/")[0] for name in images]
    metrics, each = mme_scores(predictions, answers, categories, images)
    assert metrics["existence/acc"] == pytest.approx(400 / 6)
    assert metrics["existence/acc_plus"] == pytest.approx(100 / 3)
    assert metrics["existence"] == pytest.approx(100.0)
    assert metrics["artwork/acc"] == pytest.approx(75.0) and metrics["artwork/acc_plus"] == pytest.approx(50.0)
    assert metrics["artwork"] == pytest.approx(125.0) and metrics["code_reasoning"] == pytest.approx(100.0)
    assert metrics["perception"] == pytest.approx(225.0) and metrics["cognition"] == pytest.approx(100.0)
    assert metrics["mme_score"] == pytest.approx(325.0) and "count" not in metrics
    assert each == [100, 100, 100, 0, 0, 100, 0, 100, 100, 100, 100, 100, 0, 0]
    # the generic entry points evaluation and the report call, from prediction rows
    rows = [{"id": str(i), "category": c, "image_name": n}
            for i, (c, n) in enumerate(zip(categories, images, strict=True))]
    assert HEADLINE["yes-no"] == "mme_score" and metric_variant("yes-no") == "mme-official"
    generic, generic_each = score_with_samples("yes-no", predictions, [[a] for a in answers], rows=rows)
    assert generic == metrics and generic_each == each
    assert score("yes-no", predictions, [[a] for a in answers], rows=rows)["mme_score"] == pytest.approx(325.0)
    with pytest.raises(ValueError, match="lacks \\['image_name'\\]"):
        score("yes-no", predictions, [[a] for a in answers], rows=[{"category": c} for c in categories])


def test_mimic_evaluate_scores_generated_answers_with_the_mme_metric(tmp_path, monkeypatch):
    """prepare, sample-icd and evaluate (icl, zero-shot) on the shipped miniature model: the rows carry what the
    metric reads and metrics.json holds MME's scores of those predictions."""
    import json

    import yaml

    from mimic.cli import main

    repo, model = Path(__file__).resolve().parents[1], "mini-idefics2"
    root = write_release(tmp_path / "raw" / "MME_Benchmark_release_version")
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"][model]["path"] = str(repo / "models" / model)
    params["tasks"]["mme"].update(files={"root": str(root)}, holdout=3, n_train=2, n_support=None, n_eval=None)
    params["run"].update(models=[model], tasks=["mme"], untrained=["zero-shot"], trained=[])
    params["icd"].update(shots=2, draws=1, embedding=None)
    params["eval"].update(batch_size=4, max_new_tokens={"vqa": 10, "caption": 20, "yes-no": 3})
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", "mme"), ("sample-icd", "--task", "mme"),
                 ("evaluate", "--model", model, "--task", "mme", "--method", "icl")):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    # zero-shot: the random miniature model never says yes or no (every score 0); it answers "Yes" here,
    # so the scores are known: every "Yes" question right, every "No" one wrong: 100 * (1/2 + 0) per subtask
    import mimic.evaluation.predict as predict

    real = predict.generate_with_raw
    monkeypatch.setattr(predict, "generate_with_raw", lambda loaded, inputs, *a: [
        ("Yes", "Yes") for _ in real(loaded, inputs, *a)])
    assert main(["evaluate", "--model", model, "--task", "mme", "--method", "zero-shot", "--params",
                 "params.yaml"]) == 0
    folder = Path("results/eval") / model / "mme" / "seed-0" / "zero-shot"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    table = read_table(Path("data/mme/seed-0/eval.parquet")).set_index("id")
    assert len(rows) == 8 and [r["id"] for r in rows] == list(table.index)
    assert all(r["category"] == table.loc[r["id"], "category"] and r["image_name"] == table.loc[r["id"], "image_name"]
               for r in rows)
    want, each = mme_scores([r["prediction"] for r in rows], [r["answers"][0] for r in rows],
                            [r["category"] for r in rows], [r["image_name"] for r in rows])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["kind"] == "yes-no" and metrics["metric"] == "mme_score" and metrics["score"] == want["mme_score"]
    assert metrics["metrics"] == pytest.approx(want) and [r["score"] for r in rows] == each
    assert metrics["metric_variant"] == "mme-official"
    evaluated = sorted(set(table["category"]))
    assert all(metrics["metrics"][c] == pytest.approx(50.0) for c in evaluated) and len(evaluated) >= 2
    assert metrics["score"] == pytest.approx(50.0 * len(evaluated))
    assert metrics["metrics"]["cognition"] == pytest.approx(50.0 * ("code_reasoning" in evaluated))
    from mimic.report.load import score_predictions

    assert score_predictions("yes-no", rows) == ("mme_score", pytest.approx(metrics["score"]))  # what the report reads
