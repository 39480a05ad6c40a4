"""Nothing computed is thrown away: a failing scorer keeps the generations, a rerun scores them without
generating, and a missing external tool (Java) is named before anything is generated.

The stages run in-process (``mimic.cli.main``) on the shipped miniature model in a scratch directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import mimic.commands.stage_inputs
import mimic.evaluation.predict
import mimic.metrics
from mimic.cli import main

REPO = Path(__file__).resolve().parents[1]
MODEL, VQA, CAPTION = "mini-idefics2", "shapes-vqa", "shapes-caption"


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[VQA], untrained=["zero-shot"], trained=[], seeds=[0])
    for task in (VQA, CAPTION):
        params["tasks"][task].update(n_train=8, n_support=8, n_eval=5)
    params["icd"].update(shots=2, draws=1, embedding=None)
    params["eval"].update(batch_size=2)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([*argv, "--params", "params.yaml"])
    return code, capsys.readouterr().err


def error_line(err: str, command: str) -> str:
    """The one error line of a failed command (stderr also carries its progress log), no traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"mimic {command}: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def evaluate(capsys, task: str, method: str) -> tuple[int, str]:
    return cli(capsys, "evaluate", "--model", MODEL, "--task", task, "--method", method)


def outputs(task: str, method: str) -> dict[str, bytes]:
    folder = Path("results/eval") / MODEL / task / "seed-0" / method
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))}


KEPT = Path("results/parts/eval") / MODEL / VQA / "seed-0" / "zero-shot" / "part-00000-of-00001.json"


def test_a_failing_scorer_keeps_the_generations_and_a_rerun_scores_them_without_generating(workdir, capsys,
                                                                                        monkeypatch):
    for stage in ("prepare", "sample-icd"):
        assert cli(capsys, stage, "--task", VQA)[0] == 0
    assert evaluate(capsys, VQA, "icl")[0] == 0
    assert evaluate(capsys, VQA, "zero-shot")[0] == 0
    good = outputs(VQA, "zero-shot")
    first = [json.loads(line) for line in good["predictions.jsonl"].decode().splitlines()]
    assert not KEPT.parent.exists()  # a successful evaluation leaves no kept generations behind, nor their folder

    def crashed_scorer(*args, **kwargs):
        raise RuntimeError("the scorer crashed\nwith a second line")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mimic.metrics, "score_with_samples", crashed_scorer)
        code, err = evaluate(capsys, VQA, "zero-shot")
    assert code == 2
    line = error_line(err, "evaluate")
    assert "RuntimeError: the scorer crashed" in line and str(KEPT) in line
    assert outputs(VQA, "zero-shot") == good  # the previous results, byte for byte
    kept = json.loads(KEPT.read_text())
    assert [r["prediction"] for r in kept["rows"]] == [r["prediction"] for r in first]

    def no_generation(*args, **kwargs):
        raise AssertionError("the rerun generated again")

    monkeypatch.setattr(mimic.evaluation.predict, "predict", no_generation)
    monkeypatch.setattr(mimic.commands.stage_inputs, "load_stage_model", no_generation)
    code, err = evaluate(capsys, VQA, "zero-shot")
    assert code == 0 and "kept in" in err and "nothing is generated" in err
    rescored = [json.loads(line) for line in outputs(VQA, "zero-shot")["predictions.jsonl"].decode().splitlines()]
    fields = ("id", "prediction", "generation", "score")
    assert [{k: r[k] for k in fields} for r in rescored] == [{k: r[k] for k in fields} for r in first]
    assert json.loads(outputs(VQA, "zero-shot")["metrics.json"])["score"] == json.loads(good["metrics.json"])["score"]
    # the same predictions give the same bytes; only timing.json differs: the measurements of the run that
    # generated the kept rows (each carries its latency_ms, as in a kept file of an older version), not of this one
    again = outputs(VQA, "zero-shot")
    assert again.keys() == good.keys() and all(again[k] == good[k] for k in good if k != "timing.json")
    assert json.loads(again["timing.json"])["latency_ms"] == {r["id"]: r["latency_ms"] for r in kept["rows"]}
    assert not KEPT.exists()


def test_kept_generations_of_other_settings_are_generated_again(workdir, capsys, monkeypatch):
    for stage in ("prepare", "sample-icd"):
        assert cli(capsys, stage, "--task", VQA)[0] == 0
    assert evaluate(capsys, VQA, "icl")[0] == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mimic.metrics, "score_with_samples", lambda *a, **k: 1 / 0)
        assert evaluate(capsys, VQA, "zero-shot")[0] == 2
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["eval"]["max_new_tokens"]["vqa"] = 1  # other settings: the kept generations no longer apply
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    calls = []
    real = mimic.evaluation.predict.predict
    monkeypatch.setattr(mimic.evaluation.predict, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert evaluate(capsys, VQA, "zero-shot")[0] == 0
    assert calls == [1]
    rows = [json.loads(line) for line in outputs(VQA, "zero-shot")["predictions.jsonl"].decode().splitlines()]
    assert all(len(r["generation"].split()) <= 1 for r in rows)


@pytest.fixture()
def no_java(tmp_path, monkeypatch):
    """PATH without java (a bin folder holding only what the test needs)."""
    empty = tmp_path / "bin-without-java"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("java") is None


def test_missing_java_is_named_before_anything_is_generated(workdir, capsys, monkeypatch, no_java):
    for stage in ("prepare", "sample-icd"):
        assert cli(capsys, stage, "--task", CAPTION)[0] == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although scoring cannot run")

    monkeypatch.setattr(mimic.commands.stage_inputs, "load_stage_model", no_model)
    code, err = evaluate(capsys, CAPTION, "icl")
    assert code == 2 and "Java on PATH" in error_line(err, "evaluate")
    assert not (Path("results/eval") / MODEL / CAPTION).exists()


def test_validate_names_java_when_a_caption_task_is_in_the_run(workdir, capsys, no_java):
    assert cli(capsys, "validate")[0] == 0  # the run's only task is a VQA task: Java is not needed
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["run"]["tasks"] = [VQA, CAPTION]
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, err = cli(capsys, "validate")
    assert code == 2 and "caption metrics need Java on PATH" in error_line(err, "validate")


def test_info_reads_the_default_model_through_params(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = json.loads((REPO / "models" / MODEL / "config.json").read_text())
    text = config["text_config"]
    heads = text["num_attention_heads"]
    expected = f"{MODEL}: {text['num_hidden_layers']} layers x {heads} heads x head_dim {text['hidden_size'] // heads}"
    for argv in (["info", "--model", MODEL], ["info", "--model", str(REPO / "models" / MODEL)]):
        capsys.readouterr()
        assert main([*argv, "--params", "params.yaml"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == expected.replace(MODEL, argv[2], 1)


def test_info_on_an_unknown_model_is_one_line(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = cli(capsys, "info", "--model", "no-such-model")
    assert code == 2 and "'no-such-model'" in error_line(err, "info")
