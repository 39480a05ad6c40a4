"""SEED-Bench (v1, image questions) through its loader, on fixtures in the official format (SEED-Bench.json and
the SEED-Bench-image folder) and lmms-lab/SEED-Bench's parquet layout; its score (multiple-choice accuracy,
overall and per question type, hand-computed); the likelihood ranking of the options against log-probabilities
summed by hand from the model's logits; and the whole path through the real `mimic evaluate` CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from PIL import Image

import mimic
from mimic.data.loaders import LOADERS, prepare_task
from mimic.data.schema import open_image, read_table
from mimic.metrics import HEADLINE, metric_variant, score_with_samples
from mimic.metrics.multiple_choice import choice_accuracy
from mimic.models.generation import encode_prompts
from mimic.models.likelihood import choose, option_log_likelihoods, rank_options

REPO = Path(__file__).resolve().parents[1]
MODEL = "mini-idefics2"
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def picture(n: int) -> Image.Image:
    return Image.new("RGB", (8, 8), ((n * 50) % 256, (n * 90) % 256, 60))


def question(n: int) -> dict:
    """Question n: an image question of type 1 + n % 3, its answer the letter n % 4; question 3 is a video one."""
    answer = "ABCD"[n % 4]
    return {"question_id": str(100 + n), "question": f"What colour is shape {n}?",
            "choice_a": COLOURS[n % 6], "choice_b": f"dark {COLOURS[(n + 1) % 6]}", "choice_c": "light grey square",
            "choice_d": COLOURS[(n + 3) % 6], "answer": answer, "question_type_id": 1 + n % 3,
            "data_id": f"img_{n}.jpg", "data_type": "image"}


def write_official(root: Path, n: int = 10) -> tuple[Path, Path]:
    images = root / "SEED-Bench-image"
    images.mkdir(parents=True)
    questions = []
    for k in range(n):
        entry = question(k)
        if k == 3:
            entry.update(data_type="video", question_type_id=10, data_id="v_3.mp4")
        else:
            picture(k).save(images / entry["data_id"])
        questions.append(entry)
    annotations = root / "SEED-Bench.json"
    annotations.write_text(json.dumps({"question_type": {"Scene Understanding": 1, "Instance Identity": 2,
                                                         "Instance Attributes": 3, "Action Recognition": 10},
                                       "questions": questions}))
    return annotations, images


@pytest.fixture
def official(tmp_path) -> dict:
    annotations, images = write_official(tmp_path / "seed")
    return {"annotations": str(annotations), "images": str(images)}


def test_the_official_json_gives_the_image_questions(tmp_path, official):
    assert LOADERS["seed-bench"] is LOADERS["seed_bench"]
    out = tmp_path / "data"
    spec = {"name": "seed-bench", "source": "files", "files": official, "n_train": 0, "n_support": 0, "n_eval": None}
    meta = prepare_task(spec, out, seed=0)
    evaluation = read_table(out / "eval.parquet").set_index("id")
    assert meta["kind"] == "multiple-choice" and meta["sizes"]["eval"] == 9  # the video question left out
    assert "103" not in evaluation.index
    row = evaluation.loc["106"]  # answer C, type 1
    assert list(row["choices"]) == ["red", "dark green", "light grey square", "yellow"]
    assert row["answer_letter"] == "C" and list(row["answers"]) == ["light grey square"]
    assert row["question_type_id"] == 1 and row["question_type"] == "Scene Understanding"
    assert open_image(row["image"]).size == (8, 8) and Path(row["image"]["path"]).name == "img_6.jpg"


def test_holdout_and_refusals(tmp_path, official):
    spec = {"name": "seed-bench", "source": "files", "files": official, "holdout": 4, "n_train": 2, "n_support": None,
            "n_eval": None}
    meta = prepare_task(spec, tmp_path / "data", seed=1)
    assert meta["sizes"] == {"train": 2, "support": 2, "eval": 5}
    held = set(read_table(tmp_path / "data" / "train.parquet")["data_id"]) | set(
        read_table(tmp_path / "data" / "support.parquet")["data_id"])
    assert not held & set(read_table(tmp_path / "data" / "eval.parquet")["data_id"])
    with pytest.raises(ValueError, match=r"tasks\.seed-bench\.holdout: N .* n_train: 0 and n_support: 0"):
        prepare_task({**spec, "holdout": 0}, tmp_path / "out", seed=0)
    with pytest.raises(ValueError, match=r"tasks\.seed-bench\.rank_by is 'max'; valid: \['mean', 'sum'\]"):
        prepare_task({**spec, "rank_by": "max"}, tmp_path / "out", seed=0)
    with pytest.raises(FileNotFoundError) as err:
        prepare_task({**spec, "files": {**official, "annotations": str(tmp_path / "no.json")}}, tmp_path / "out",
                     seed=0)
    message = str(err.value)
    assert "tasks.seed-bench.files.annotations" in message and "AILab-CVC/SEED-Bench" in message
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_hub_parquet_rows(tmp_path, official):
    """lmms-lab/SEED-Bench's layout: the image a list holding it, video rows left out."""
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    entries = [question(k) for k in range(6)]
    entries[3].update(data_type="video", question_type_id=10)
    rows = {key: [str(e[key]) if key != "question_type_id" else e[key] for e in entries] for key in entries[0]}
    buf = [io.BytesIO() for _ in entries]
    for k, b in enumerate(buf):
        picture(k).save(b, format="PNG")
    rows["image"] = [[{"bytes": b.getvalue(), "path": None}] for b in buf]
    features = datasets.Features({**{k: datasets.Value("string") for k in entries[0] if k != "question_type_id"},
                                  "question_type_id": datasets.Value("int64"),
                                  "image": datasets.Sequence(datasets.Image())})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(hub / "data" / "test-00000-of-00001.parquet"))
    spec = {"name": "seed-bench", "source": "hub", "hub_id": str(hub), "hub_cache_dir": str(tmp_path / "cache"),
            "n_train": 0, "n_support": 0, "n_eval": None}
    prepare_task(spec, tmp_path / "data", seed=0)
    evaluation = read_table(tmp_path / "data" / "eval.parquet").set_index("id")
    assert list(evaluation.index) == ["100", "101", "102", "104", "105"]
    assert evaluation.loc["105", "answer_letter"] == "B" and list(evaluation.loc["105", "answers"]) == ["dark red"]
    assert open_image(evaluation.loc["104", "image"]).getpixel((0, 0)) == picture(4).getpixel((0, 0))


def test_accuracy_overall_and_per_question_type():
    """6 questions: type 1 right 2 of 3, type 2 right 1 of 2, type 3 right 0 of 1: overall 3/6."""
    predictions = ["A", "b", "C", "D", "A", "B"]
    letters = ["A", "B", "D", "D", "B", "C"]
    types = ["Scene Understanding", "Scene Understanding", "Scene Understanding", "Instance Identity",
             "Instance Identity", "Instance Attributes"]
    metrics, each = choice_accuracy(predictions, letters, types)
    assert metrics == {"accuracy": 50.0, "accuracy/Instance Attributes": 0.0, "accuracy/Instance Identity": 50.0,
                       "accuracy/Scene Understanding": pytest.approx(200 / 3)}
    assert each == [100.0, 100.0, 0.0, 100.0, 0.0, 0.0]
    rows = [{"answer_letter": a, "question_type": t} for a, t in zip(letters, types, strict=True)]
    assert HEADLINE["multiple-choice"] == "accuracy" and metric_variant("multiple-choice") == "likelihood-ranking"
    assert score_with_samples("multiple-choice", predictions, [["x"]] * 6, rows=rows) == (metrics, each)


def mini_loaded():
    from mimic.models.adapters import adapter_for
    from mimic.models.loading import LoadedModel
    from mimic.models.prompts import PromptFormat
    from mimic.tiny.mini.build import build_model, build_processor, build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, seed=1).eval()
    return LoadedModel("mini", model, build_processor(tok), adapter_for(model), PromptFormat(), torch.device("cpu"),
                       [tok.eos_token_id], tok.pad_token_id)


def by_hand(loaded, query, option: str, demos=()) -> tuple[float, int]:
    """The option's summed log-probability from the full logits of its own unpadded sequence."""
    with_option = encode_prompts(loaded, "multiple-choice", [query], demos=[list(demos)], answers=[option])
    prompt = encode_prompts(loaded, "multiple-choice", [query], demos=[list(demos)])
    n = with_option["input_ids"].shape[1] - prompt["input_ids"].shape[1]
    with torch.no_grad():
        logits = loaded.model(**with_option).logits[0].float()
    ids = with_option["input_ids"][0]
    total = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(len(ids) - n, len(ids)))
    return total, n


def test_likelihood_ranking_equals_a_hand_computation_with_and_without_a_shift():
    loaded = mini_loaded()
    queries = [(picture(k), question(k)["question"]) for k in range(3)]
    options = [[question(k)[c] for c in ("choice_a", "choice_b", "choice_c", "choice_d")] for k in range(3)]
    demos = [[(picture(7), "What colour is shape 7?", "blue")]] * 3

    def check(with_demos: bool) -> list[dict]:
        d = demos if with_demos else None
        batched = option_log_likelihoods(loaded, "multiple-choice", queries, options, demos=d)  # left-padded batch
        hand = [[by_hand(loaded, q, o, demos[0] if with_demos else ()) for o in opts]
                for q, opts in zip(queries, options, strict=True)]
        for got, want in zip(batched, hand, strict=True):
            assert [n for _, n in got] == [n for _, n in want]
            assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=1e-4)
        rows = rank_options(loaded, "multiple-choice", queries, options, demos=d, rank_by="sum")
        means = rank_options(loaded, "multiple-choice", queries, options, demos=d, rank_by="mean")
        for k, (want, row, mean_row) in enumerate(zip(hand, rows, means, strict=True)):
            best_sum = max(range(4), key=lambda i: want[i][0])
            best_mean = max(range(4), key=lambda i: want[i][0] / want[i][1])
            assert row["prediction"] == "ABCD"[best_sum] and row["generation"] == options[k][best_sum]
            assert mean_row["prediction"] == "ABCD"[best_mean]
        return rows

    plain = check(False)
    check(True)
    shift = mimic.attach(loaded.model)
    with torch.no_grad():
        shift.v.normal_(0, 1.0)
    shifted = check(False)  # the attached method's forward is what is ranked
    mimic.detach(loaded.model)
    assert [r["option_scores"] for r in shifted] != [r["option_scores"] for r in plain]


def test_choose_mean_and_sum_and_ties():
    assert choose([(-6.0, 3), (-4.0, 1), (-9.0, 9)], "mean") == (2, [-2.0, -4.0, -1.0])
    assert choose([(-6.0, 3), (-4.0, 1), (-9.0, 9)], "sum") == (1, [-6.0, -4.0, -9.0])
    assert choose([(-2.0, 1), (-2.0, 1)], "sum")[0] == 0  # a tie goes to the earlier option


def test_mimic_evaluate_ranks_the_options_through_the_cli(tmp_path, monkeypatch):
    """prepare, sample-icd and evaluate (zero-shot and 2-shot icl) on the shipped miniature model; every
    prediction is the option of highest mean log-probability computed by hand."""
    from mimic.cli import main
    from mimic.commands.stage_inputs import load_task
    from mimic.models.loading import load_model
    from mimic.report.load import score_predictions

    annotations, images = write_official(tmp_path / "raw", n=12)
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["tasks"]["seed-bench"].update(files={"annotations": str(annotations), "images": str(images)},
                                         holdout=5, n_train=2, n_support=None, n_eval=None)
    params["run"].update(models=[MODEL], tasks=["seed-bench"], untrained=["zero-shot"], trained=[])
    params["icd"].update(shots=2, draws=1, embedding=None)
    params["eval"].update(batch_size=2)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", "seed-bench"), ("sample-icd", "--task", "seed-bench"),
                 ("evaluate", "--model", MODEL, "--task", "seed-bench", "--method", "icl"),
                 ("evaluate", "--model", MODEL, "--task", "seed-bench", "--method", "zero-shot")):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    data, icd = load_task("seed-bench", params, 0)
    loaded = load_model(MODEL, params["models"][MODEL]["path"])
    for method, shots in (("zero-shot", 0), ("icl", 2)):
        folder = Path("results/eval") / MODEL / "seed-bench" / "seed-0" / method
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and [r["id"] for r in rows] == list(data.tables["eval"]["id"])
        for row in rows:
            record = data.by_id["eval"].loc[row["id"]]
            demos = [data.demo(s) for s in icd["eval"][row["id"]][:shots]]
            hand = [by_hand(loaded, data.query("eval", row["id"]), o, demos) for o in record["choices"]]
            best = max(range(4), key=lambda i: hand[i][0] / hand[i][1])
            assert row["prediction"] == "ABCD"[best] and row["generation"] == record["choices"][best]
            assert row["answer_letter"] == record["answer_letter"] and row["question_type"] == record["question_type"]
        metrics = json.loads((folder / "metrics.json").read_text())
        right = [r["prediction"] == r["answer_letter"] for r in rows]
        assert metrics["kind"] == "multiple-choice" and metrics["metric"] == "accuracy"
        assert metrics["score"] == pytest.approx(100 * sum(right) / 6)
        assert metrics["metric_variant"] == "likelihood-ranking"
        assert "accuracy/Scene Understanding" in metrics["metrics"]
        assert score_predictions("multiple-choice", rows) == ("accuracy", pytest.approx(metrics["score"]))  # report
