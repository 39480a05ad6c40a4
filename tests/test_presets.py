"""Presets (presets/<name>.yaml, `mimic preset`): laid over params.yaml key by key, checked in full (data files
included) before params.yaml is written, comments kept; a failing preset leaves params.yaml byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mimic.cli import main
from mimic.pipeline.params import load_params, method_hp, teacher_shots
from mimic.pipeline.presets import changed_keys, dump_round_trip, overlay, round_trip_yaml

REPO = Path(__file__).resolve().parents[1]


def test_overlay_merges_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"p": 1, "q": 2}}, "b": 3}
    preset = {"a": {"y": [9], "z": {"q": 5}, "new": None}, "c": {"k": 1}}
    assert overlay(base, preset) == {"a": {"x": 1, "y": [9], "z": {"p": 1, "q": 5}, "new": None}, "b": 3,
                                     "c": {"k": 1}}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"p": 1, "q": 2}}, "b": 3}  # not modified
    assert changed_keys(base, overlay(base, preset)) == ["a.y", "a.z.q", "a.new", "c"]


def test_params_yaml_reads_and_writes_back_byte_for_byte():
    """What `mimic preset` rewrites keeps every other line of params.yaml as it is."""
    text = (REPO / "params.yaml").read_text()
    rt = round_trip_yaml()
    assert dump_round_trip(rt, rt.load(text)) == text


def _workdir(tmp_path: Path) -> Path:
    """A pipeline root: params.yaml, its schema, the shipped presets and the miniature model."""
    for name in ("params.yaml", "presets", "workflow/schemas"):
        src, dst = REPO / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return tmp_path


def _touch_data_files(root: Path, params: dict) -> None:
    """Empty stand-ins at every tasks.*.files path (the check is about presence)."""
    for entry in params["tasks"].values():
        for key, value in (entry.get("files") or {}).items():
            path = root / value
            path.parent.mkdir(parents=True, exist_ok=True)
            if key.startswith("images") or key == "images_dir":
                path.mkdir(exist_ok=True)
            else:
                path.touch()


def test_mimic_preset_writes_the_checked_merge_and_keeps_comments(tmp_path, monkeypatch, capsys):
    root = _workdir(tmp_path)
    monkeypatch.chdir(root)
    (root / "presets" / "wider.yaml").write_text("eval: {batch_size: 4, max_new_tokens: {vqa: 7}}\nicd: {shots: 6}\n")
    before_text = Path("params.yaml").read_text()
    before = yaml.safe_load(before_text)
    assert main(["preset", "wider", "--dry-run"]) == 0
    assert Path("params.yaml").read_text() == before_text  # a dry run writes nothing
    assert main(["preset", "wider"]) == 0
    out = capsys.readouterr().out
    assert "eval.batch_size" in out and "eval.max_new_tokens.vqa" in out and "icd.shots" in out
    after_text = Path("params.yaml").read_text()
    assert yaml.safe_load(after_text) == overlay(before, {"eval": {"batch_size": 4, "max_new_tokens": {"vqa": 7}},
                                                          "icd": {"shots": 6}})
    assert "# MimIC pipeline parameters: the one file to edit." in after_text  # comments kept
    assert "# k: the ICL teacher's demonstrations" in after_text
    assert len(after_text.splitlines()) == len(before_text.splitlines())  # values changed in place
    load_params("params.yaml")


@pytest.mark.parametrize("preset, message", [
    ("icd: {shots: 0}\n", "icd.shots = 0: must be >= 1"),
    ("run: {tasks: [vqav2]}\n",
     "tasks.vqav2.files.questions_train = 'raw/vqav2/v2_OpenEnded_mscoco_train2014_questions.json': no such file "
     "or folder; download it from https://visualqa.org/download.html"),
    ("eval: {stop: never}\n", "eval.stop = 'never': must be one of newline, eos"),
])
def test_a_failing_preset_is_one_line_and_leaves_params_yaml_as_it_was(tmp_path, monkeypatch, capsys, preset,
                                                                       message):
    root = _workdir(tmp_path)
    monkeypatch.chdir(root)
    (root / "presets" / "bad.yaml").write_text(preset)
    before = Path("params.yaml").read_bytes()
    assert main(["preset", "bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert Path("params.yaml").read_bytes() == before


def test_unknown_preset_names_the_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(_workdir(tmp_path))
    assert main(["preset", "papper"]) == 2
    assert "preset 'papper': no such preset; known: newer-methods, paper, reference" in capsys.readouterr().err


def test_the_paper_presets_apply_and_hold_the_papers_and_the_reference_codes_values(tmp_path, monkeypatch):
    """presets/paper.yaml: the paper's runs; presets/reference.yaml over it: the reference code's values
    (Kamichanw/MimIC 9eda50b; file and line in the preset's comments and docs/deviations.md)."""
    root = _workdir(tmp_path)
    monkeypatch.chdir(root)
    _touch_data_files(root, yaml.safe_load(Path("params.yaml").read_text()))
    assert main(["preset", "paper"]) == 0
    paper = load_params("params.yaml")
    assert paper["run"]["models"] == ["idefics-9b", "idefics2-8b-base"]
    assert paper["run"]["tasks"] == ["vqav2", "okvqa", "coco-karpathy"]
    assert {"zero-shot", "icl-rices"} <= set(paper["run"]["untrained"]) and "mimic" in paper["run"]["trained"]
    assert (teacher_shots(paper, "idefics-9b"), teacher_shots(paper, "idefics2-8b-base")) == (32, 8)
    hp9, hp2 = method_hp(paper, "mimic", "idefics-9b"), method_hp(paper, "mimic", "idefics2-8b-base")
    assert (hp9["epochs"], hp2["epochs"], hp9["lr"], hp2["lr"]) == (10, 5, 5e-3, 5e-3)  # the paper's text
    assert paper["tasks"]["okvqa"]["stem"] is True  # OK-VQA's own evaluation stems (the answers are stemmed)
    assert paper["eval"]["num_beams"] == 1 and paper["models"]["idefics-9b"]["eval"]["num_beams"] == 3

    assert main(["preset", "reference"]) == 0
    ref = load_params("params.yaml")
    assert teacher_shots(ref, "idefics-9b") == 16  # scripts/run_mimic.sh: -s 16
    for model in ("idefics-9b", "idefics2-8b-base"):
        hp = method_hp(ref, "mimic", model)
        assert hp["batch_size"] * hp["grad_accum"] == 16  # 2 per device x 2 accumulation x 4 GPUs
        assert hp["lr"] == 5e-3 and ref["models"][model]["dtype"] == "float16"
    assert ref["tasks"]["coco-karpathy"]["karpathy_splits"] == {"train": ["train"], "eval": ["val"]}
    assert ref["tasks"]["okvqa"]["stem"] is True and ref["tasks"]["vqav2"].get("stem") is None
    assert (ref["eval"]["stop"], ref["eval"]["metric_variant"], ref["icd"]["sampler"]) == ("eos", "reference",
                                                                                          "reference")
    assert ref["methods"]["mimic"]["train"]["ce_tokens"] == "prompt"
    # what the reference preset changed, and nothing else
    assert set(changed_keys(paper, ref)) == {
        "icd.sampler", "icd.draws", "icd.target_answer", "eval.stop", "eval.metric_variant", "eval.batch_size",
        "tasks.coco-karpathy.karpathy_splits", "models.idefics-9b.dtype", "models.idefics-9b.shots",
        "models.idefics-9b.train.grad_accum", "models.idefics2-8b-base.dtype",
        "models.idefics2-8b-base.train.grad_accum", "methods.mimic.train.ce_tokens",
        "methods.mimic-per-layer.shift.magnitude_init"}


def test_the_newer_methods_preset_puts_stave_hificl_and_mtv_beside_mimic_at_their_papers_settings(tmp_path,
                                                                                                 monkeypatch):
    root = _workdir(tmp_path)
    monkeypatch.chdir(root)
    _touch_data_files(root, yaml.safe_load(Path("params.yaml").read_text()))
    assert main(["preset", "paper", "newer-methods"]) == 0
    params = load_params("params.yaml")
    assert params["run"]["models"] == ["idefics2-8b-base"]
    assert params["run"]["tasks"] == ["vqav2", "okvqa", "coco-karpathy", "vizwiz"]
    assert set(params["run"]["trained"]) == {"mimic", "stave", "hificl", "mtv", "live", "i2cl"}
    assert params["run"]["untrained"] == ["zero-shot", "icl-rices"]  # the paper preset's, kept
    assert params["icd"]["shots"] == teacher_shots(params, "idefics2-8b-base") == 8
    # MTV's fit is the paper's (MtvConfig's defaults) with 4 shots per prompt, as mtv_eval.py's --num_shot
    from dataclasses import fields

    from mimic.methods.mtv import MtvConfig
    defaults = {f.name: f.default for f in fields(MtvConfig) if f.name in ("iterations", "steps", "samples",
                                                                            "best_of", "lr")}
    config = params["methods"]["mtv"]["config"]
    assert {k: config[k] for k in defaults} == defaults and config["shots"] == 4
    # each method keeps its own learning rate; the model's epochs and batch apply to all (the paper preset's rule)
    assert method_hp(params, "stave", "idefics2-8b-base")["lr"] == 1e-3
    assert method_hp(params, "hificl", "idefics2-8b-base")["lr"] == 5e-3
    assert {method_hp(params, m, "idefics2-8b-base")["epochs"] for m in ("stave", "hificl", "mimic")} == {5}
