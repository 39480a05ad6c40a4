"""Per-sample logs (as lmms-eval's --log_samples): every predictions.jsonl row holds the question, the raw
generation, the post-processed answer that was scored and its own score, whose mean is the headline score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mimic.cli import main
from mimic.commands.stage_inputs import load_task
from mimic.metrics import score, score_with_samples
from mimic.metrics.vqa import vqa_accuracy
from mimic.models.generation import encode_prompts, generate_with_raw
from mimic.models.prompts import postprocess
from mimic.tiny.families import tiny_family, tiny_task

REPO = Path(__file__).resolve().parents[1]
MODEL = "mini-idefics2"


def _params(task: str) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[task], untrained=["zero-shot"], trained=[])
    params["tasks"][task].update(n_train=4, n_support=8, n_eval=5)
    params["methods"] = {k: v for k, v in params["methods"].items() if v.get("type") in ("zero-shot", "icl")}
    params["icd"].update(shots=4, draws=1, embedding=None)
    params["eval"].update(batch_size=2)
    return params


@pytest.mark.parametrize("task", ["shapes-vqa", "shapes-caption"])
def test_every_row_logs_question_generation_answer_and_its_score(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(task)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", task), ("sample-icd", "--task", task),
                 ("evaluate", "--model", MODEL, "--task", task, "--method", "icl")):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    folder = Path("results/eval") / MODEL / task / "seed-0" / "icl"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((folder / "metrics.json").read_text())
    data, _ = load_task(task, params, 0)
    kind = params["tasks"][task]["kind"]
    assert len(rows) == 5
    timing = json.loads((folder / "timing.json").read_text())  # the measurements: a file of their own
    assert list(timing["latency_ms"]) == sorted(r["id"] for r in rows)
    assert timing["latency_ms_per_query"] == pytest.approx(sum(timing["latency_ms"].values()) / len(rows), abs=1e-3)
    for row in rows:
        assert set(row) == {"id", "question", "generation", "prediction", "answers", "score"}
        assert row["question"] == data.by_id["eval"].loc[row["id"]]["question"]
        assert (row["question"] != "") == (kind == "vqa")
        stops = ["\n"]  # the mini model's prompt format cuts answers at a line break
        assert row["prediction"] == postprocess(row["generation"].replace("</s>", ""), stops)
        if kind == "vqa":
            assert row["score"] == pytest.approx(100 * vqa_accuracy(row["prediction"], row["answers"]), abs=1e-4)
    assert sum(r["score"] for r in rows) / len(rows) == pytest.approx(metrics["score"], abs=1e-3)
    assert metrics["score"] == pytest.approx(
        score(kind, [r["prediction"] for r in rows], [r["answers"] for r in rows])[metrics["metric"]])


def test_the_raw_generation_keeps_an_echoed_special_token_the_answer_drops():
    lm = tiny_family("idefics2")
    data, _ = tiny_task("vqa", n_train=2, n_support=4)
    inputs = encode_prompts(lm, "vqa", [data.query("train", q) for q in ("train-0", "train-1")])
    echo = lm.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert echo not in lm.stop_token_ids and echo != lm.pad_token_id
    lm.model.generation_config.suppress_tokens = [i for i in range(lm.model.config.text_config.vocab_size)
                                                  if i != echo]  # only the echo can be generated
    try:
        (raw, answer), _ = generate_with_raw(lm, inputs, max_new_tokens=3)
    finally:
        lm.model.generation_config.suppress_tokens = None
    assert raw == "<end_of_utterance>" * 3 and answer == ""


def test_a_captions_own_scores_average_to_the_corpus_cider():
    predictions = ["a red square on a table", "two blue circles", "a green triangle"]
    references = [["a red square", "a square that is red"], ["blue circles", "two circles, blue"],
                  ["a small triangle", "a green triangle on white"]]
    metrics, each = score_with_samples("caption", predictions, references)
    assert len(each) == 3 and sum(each) / 3 == pytest.approx(metrics["CIDEr"], abs=1e-9)
    assert metrics == score("caption", predictions, references)
    vqa, each = score_with_samples("vqa", ["red", "blue"], [["red"] * 10, ["red"] * 8 + ["blue"] * 2])
    assert each == pytest.approx([100.0, 60.0]) and vqa["vqa_accuracy"] == pytest.approx(80.0)


def test_rows_carry_the_image_id_of_real_tasks_and_none_where_it_is_missing():
    import pandas as pd

    from mimic.data.batches import TaskData
    from mimic.evaluation.predict import predict

    lm = tiny_family("idefics2")
    data, _ = tiny_task("vqa", n_train=3, n_support=4)
    train = data.tables["train"].copy()
    train["image_id"] = pd.array([139, pd.NA, 285], dtype="Int64")  # as the loaders store COCO image ids
    data = TaskData("vqa", {"eval": train, "support": data.tables["support"]})
    rows = predict(lm, data, list(train["id"]), None, 0, batch_size=2, max_new_tokens=2, num_beams=1, desc="t")
    assert [r.get("image_id") for r in rows] == [139, None, 285]
    assert [r["question"] for r in rows] == list(train["question"])
    assert all(json.loads(json.dumps(r)) == r for r in rows)  # plain JSON types


def test_eval_stop_eos_generates_past_the_newline_and_greedy_answers_stay_the_same():
    """eval.stop: eos decodes as the reference code (to EOS or max_new_tokens, cut afterwards); greedy decoding
    takes the same path up to the newline, so the answers equal those of stopping at the newline."""
    import transformers

    from mimic.models.loading import wrap_model

    path = REPO / "models" / MODEL
    model = transformers.AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = model.config.text_config.eos_token_id  # </s> only, as real checkpoints
    lm = wrap_model(model, transformers.AutoProcessor.from_pretrained(path))
    assert len(lm.stop_token_ids) == 2  # EOS and the newline token
    data, _ = tiny_task("vqa", n_train=4, n_support=4)
    queries = [data.query("train", q) for q in list(data.tables["train"]["id"])]
    inputs = encode_prompts(lm, "vqa", queries)
    stops = lm.prompt_format.stops("vqa")
    at_newline = generate_with_raw(lm, inputs, 6, stop_words=stops)
    at_eos = generate_with_raw(lm, inputs, 6, stop_words=stops, stop="eos")
    assert [a for _, a in at_eos] == [a for _, a in at_newline]
    assert all("\n" not in raw.rstrip("\n") for raw, _ in at_newline)  # ended at the first newline
    assert any("\n" in raw.rstrip("\n") for raw, _ in at_eos)  # went on past it
    with pytest.raises(ValueError, match=r"^eval.stop = 'never'; valid: \['newline', 'eos'\]$"):
        generate_with_raw(lm, inputs, 2, stop="never")



def test_stem_scores_the_stemmed_prediction_and_keeps_the_raw_generation(tmp_path, monkeypatch):
    """tasks.<t>.stem (OK-VQA's evaluation, the reference code's postprocess_generation,
    testbed/data/__init__.py:157-170 at 9eda50b: cut at the stop words, then stem): predictions.jsonl's
    `prediction` is the stemmed answer that was scored; the settings of evaluate change, prepare's do not."""
    pytest.importorskip("inflection")
    from mimic.metrics import okvqa_stem
    from mimic.pipeline.stages import result_settings

    task = "shapes-vqa"
    monkeypatch.chdir(tmp_path)
    # stand-ins for nltk's models (no nltk data offline): tokens upper-cased, plural tags on a final "S"
    stand_ins = (lambda text: text.upper().split(), lambda words: [(w, "NNS" if w.endswith("S") else "NN")
                                                                   for w in words], lambda word, pos: word)
    monkeypatch.setattr(okvqa_stem, "_nlp", lambda: stand_ins)
    params = _params(task)
    plain = result_settings(params, "prepare", task=task), result_settings(params, "evaluate", MODEL, task, "icl")
    params["tasks"][task]["stem"] = True
    assert result_settings(params, "prepare", task=task) == plain[0]
    assert result_settings(params, "evaluate", MODEL, task, "icl") == {**plain[1], "eval": {**plain[1]["eval"],
                                                                                            "stem": True}}
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", task), ("sample-icd", "--task", task),
                 ("evaluate", "--model", MODEL, "--task", task, "--method", "icl")):
        assert main([*argv, "--params", "params.yaml"]) == 0, argv
    rows = [json.loads(line) for line in
            (Path("results/eval") / MODEL / task / "seed-0" / "icl" / "predictions.jsonl").read_text().splitlines()]
    import inflection

    assert any(postprocess(r["generation"].replace("</s>", ""), ["\n"]) for r in rows)  # something to stem
    for row in rows:
        answer = postprocess(row["generation"].replace("</s>", ""), ["\n"])
        words = [inflection.singularize(w) if w.endswith("S") else w for w in answer.upper().split()]
        assert row["prediction"] == " ".join(words)
        assert row["score"] == pytest.approx(100 * vqa_accuracy(row["prediction"], row["answers"]), abs=1e-4)
