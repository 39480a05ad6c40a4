"""params.yaml: the real file validates; every bad file fails with one line naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mimic.pipeline.params import (
    ICL_REFERENCE,
    TRAINED_TYPES,
    UNTRAINED_TYPES,
    ParamsError,
    check_params,
    is_trained,
    load_params,
    load_schema,
    method_demos,
    method_shots,
    model_source,
    run_methods,
    schema_path,
    trained_methods,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


UNTRAINED = ["zero-shot", "icl-1", "icl-2", "icl-4", "icl-rices-1", "icl-rices-4"]
TRAINED = ["mimic"]


def test_the_real_params_yaml_validates(params):
    assert run_methods(params) == [*UNTRAINED, "icl", *TRAINED]
    assert trained_methods(params) == ["mimic", "mimic-mlp", "mimic-per-layer", "mimic-constant", "mimic-ce-only",
                                       "mimic-align-only", "live", "task-vector", "function-vector", "mtv", "i2cl",
                                       "hificl", "lora", "mimic-lora", "stave"]
    assert schema_path() == REPO / "workflow" / "schemas" / "params.schema.yaml"


def test_the_schema_is_valid_and_knows_exactly_the_method_types():
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    types = schema["$defs"]["method"]["properties"]["type"]["enum"]
    assert sorted(types) == sorted(UNTRAINED_TYPES + TRAINED_TYPES)
    assert not set(UNTRAINED_TYPES) & set(TRAINED_TYPES)


def test_helpers(params):
    shots = {"hificl": 0, "lora": 0}  # they learn from the answers alone; every other trained method from 8 shots
    want = [0, 1, 2, 4, 1, 4, 8] + [shots.get(m, 8) for m in TRAINED]
    assert [method_shots(params, m) for m in run_methods(params)] == want
    assert [is_trained(params, m) for m in run_methods(params)] == [False] * 7 + [True] * len(TRAINED)
    assert [method_demos(params, m) for m in run_methods(params)] == (["sampler"] * 4 + ["rices"] * 2
                                                                      + ["sampler"] * (1 + len(TRAINED)))
    assert model_source(params, "mini-idefics2") == "models/mini-idefics2"
    assert model_source(params, "idefics2-8b-base") == "HuggingFaceM4/idefics2-8b-base"
    local = copy.deepcopy(params)
    local["models"]["idefics2-8b-base"]["path"] = "/models/idefics2"
    assert model_source(local, "idefics2-8b-base") == "/models/idefics2"  # a local path wins
    with pytest.raises(ParamsError, match=r"models.nope: unknown model; known: mini-idefics2, "):
        model_source(params, "nope")


def _set(key: str, value):
    """A mutation setting a dotted key (None as value deletes it)."""

    def mutate(p):
        *parents, last = key.split(".")
        for part in parents:
            p = p[part]
        if value is None:
            del p[last]
        else:
            p[last] = value

    return mutate


BAD = {
    "unknown top-level key": (
        _set("training", {"lr": 1}),
        "params.yaml: training: unknown top-level key; known: eval, icd, latency, methods, models, run, seed, tasks, "
        "teacher",
    ),
    "unknown key in a section": (
        _set("teacher.cache_dir", "x"),
        "params.yaml: teacher.cache_dir: unknown key; known: batch_size, dtype, jobs, logits_topk, mode, shard_size, "
        "target",
    ),
    "reference sampler without a draw per epoch": (
        lambda p: p["icd"].update(sampler="reference", draws=2),
        "params.yaml: icd.draws = 2: the reference sampler draws fresh demonstrations every epoch, so it needs "
        "draws >= methods.mimic.train.epochs = 20 (mimic)",
    ),
    "unknown training key": (
        _set("methods.mimic.train.learning_rate", 1.0e-3),
        "params.yaml: methods.mimic.train.learning_rate: unknown key; known: align_weight, batch_size, ce_tokens, "
        "ce_weight, decay_bias, epochs, grad_accum, lr, max_grad_norm, seed, warmup_ratio, weight_decay",
    ),
    "bad teacher mode": (
        _set("teacher.mode", "cache"),
        "params.yaml: teacher.mode = 'cache': must be one of cached, online",
    ),
    "bad teacher target": (
        _set("teacher.target", "hidden"),
        "params.yaml: teacher.target = 'hidden': must be one of mlp, layer, attn",
    ),
    "bad method type": (
        _set("methods.mimic.type", "prefix-tuning"),
        "params.yaml: methods.mimic.type = 'prefix-tuning': must be one of zero-shot, icl, mimic, live, task-vector, "
        "function-vector, mtv, i2cl, hificl, lora, mimic-lora, stave",
    ),
    "bad insertion point": (
        _set("methods.mimic.shift.insert", "ffn"),
        "params.yaml: methods.mimic.shift.insert = 'ffn': must be one of attn, mlp",
    ),
    "bad task kind": (
        _set("tasks.vqav2.kind", "qa"),
        "params.yaml: tasks.vqav2.kind = 'qa': must be one of vqa, caption, yes-no, multiple-choice",
    ),
    "negative lr": (_set("methods.mimic.train.lr", -1), "params.yaml: methods.mimic.train.lr = -1: must be > 0"),
    "zero lr": (_set("methods.mimic.train.lr", 0), "params.yaml: methods.mimic.train.lr = 0: must be > 0"),
    "lr written 1e-3": (
        _set("methods.mimic.train.lr", "1e-3"),
        "params.yaml: methods.mimic.train.lr = '1e-3': must be a number "
        "(write 1.0e-3: YAML 1.1 reads 1e-3 as a string)",
    ),
    "warmup ratio 1": (
        _set("methods.mimic.train.warmup_ratio", 1.0),
        "params.yaml: methods.mimic.train.warmup_ratio = 1.0: must be < 1",
    ),
    "zero epochs": (_set("methods.mimic.train.epochs", 0), "params.yaml: methods.mimic.train.epochs = 0: must be >= 1"),
    "zero batch size": (_set("eval.batch_size", 0), "params.yaml: eval.batch_size = 0: must be >= 1"),
    "zero beams": (_set("eval.num_beams", 0), "params.yaml: eval.num_beams = 0: must be >= 1"),
    "unknown metric variant": (
        _set("eval.metric_variant", "vqaEval-2016"),
        "params.yaml: eval.metric_variant = 'vqaEval-2016': must be one of official, reference",
    ),
    "zero icl shots": (_set("methods.icl-2.shots", 0), "params.yaml: methods.icl-2.shots = 0: must be >= 1"),
    "zero icd shots": (_set("icd.shots", 0), "params.yaml: icd.shots = 0: must be >= 1"),
    "fractional shots": (_set("icd.shots", 2.5), "params.yaml: icd.shots = 2.5: must be an integer"),
    "missing required key": (_set("icd.draws", None), "params.yaml: icd.draws: required key is missing"),
    "missing training section": (
        _set("methods.mimic.train", None),
        "params.yaml: methods.mimic.train: required key is missing",
    ),
    "shots on zero-shot": (
        _set("methods.zero-shot.shots", 2),
        "params.yaml: methods.zero-shot.shots: not a key of a method of type zero-shot; known: type",
    ),
    "a name unusable in paths": (
        _set("tasks.vqa/v2", {"loader": "vqav2", "kind": "vqa", "n_train": 1, "n_support": 1, "n_eval": 1}),
        "params.yaml: tasks: name 'vqa/v2' must be letters, digits, '_' and '-' (it is used in paths, wildcards "
        "and DVC keys)",
    ),
    "unknown task in run.tasks": (
        _set("run.tasks", ["shapes-vqa", "vqa2"]),
        "params.yaml: run.tasks[1] = 'vqa2': unknown task; known: shapes-names-vqa, shapes-names-caption, "
        "shapes-names-transfer, shapes-vqa, shapes-caption, shapes-vqa-transfer, vqav2, okvqa, vizwiz, mme, "
        "seed-bench, coco-karpathy, flickr30k",
    ),
    "unknown model in run.models": (
        _set("run.models", ["idefics3"]),
        "params.yaml: run.models[0] = 'idefics3': unknown model; known: mini-idefics2, idefics-9b, idefics2-8b-base",
    ),
    "unknown method in run.untrained": (
        _set("run.untrained", ["zero_shot"]),
        "params.yaml: run.untrained[0] = 'zero_shot': unknown method; "
        "known: zero-shot, icl-1, icl-2, icl-4, icl-rices-1, icl-rices-2, icl-rices-4, icl, mimic, mimic-mlp, "
        "mimic-per-layer, mimic-constant, mimic-ce-only, mimic-align-only, live, task-vector, function-vector, mtv, "
        "i2cl, hificl, lora, mimic-lora, stave",
    ),
    "duplicate task in run.tasks": (
        _set("run.tasks", ["shapes-vqa", "shapes-vqa"]),
        'params.yaml: run.tasks = ["shapes-vqa", "shapes-vqa"]: has duplicates (shapes-vqa)',
    ),
    "trained method listed as untrained": (
        _set("run.untrained", ["zero-shot", "mimic"]),
        "params.yaml: run.untrained[1] = 'mimic': a trained method (type mimic); list it under run.trained",
    ),
    "untrained method listed as trained": (
        _set("run.trained", ["icl-4"]),
        "params.yaml: run.trained[0] = 'icl-4': an untrained method (type icl); list it under run.untrained",
    ),
    "the reference listed": (
        _set("run.untrained", ["icl"]),
        "params.yaml: run.untrained[0] = 'icl': the reference method always runs; remove it from run.untrained",
    ),
    "no reference method": (
        _set("methods.icl", None),
        "params.yaml: methods.icl: missing; define the reference method `icl: {type: icl}`, every other method is "
        "compared to it",
    ),
    "reference of another type": (
        _set("methods.icl", {"type": "zero-shot"}),
        "params.yaml: methods.icl.type = 'zero-shot': must be icl (the reference)",
    ),
    "infinite learning rate": (
        _set("methods.mimic.train.lr", float("inf")),
        "params.yaml: methods.mimic.train.lr = .inf: must be a finite number",
    ),
    "nan learning rate": (
        _set("methods.mimic.train.lr", float("nan")),
        "params.yaml: methods.mimic.train.lr = .nan: must be a finite number",
    ),
    "negative infinite weight": (
        _set("methods.mimic.train.ce_weight", float("-inf")),
        "params.yaml: methods.mimic.train.ce_weight = -.inf: must be a finite number",
    ),
    "RICES demonstrations without an embedding": (
        _set("icd.embedding", None),
        "params.yaml: methods.icl-rices-1.demos = rices: needs icd.embedding (a key of `models` or a CLIP hub id)",
    ),
    "RICES sampler without an embedding": (
        lambda p: (p["icd"].update(embedding=None, sampler="rices"), p["run"].update(untrained=[])),
        "params.yaml: icd.sampler = rices: needs icd.embedding (a key of `models` or a CLIP hub id)",
    ),
    "unknown demonstration kind": (
        _set("methods.icl-1.demos", "nearest"),
        "params.yaml: methods.icl-1.demos = 'nearest': must be one of random, rices",
    ),
    "shots above the demonstration pool": (
        _set("icd.shots", 600),
        "params.yaml: icd.shots = 600: more than tasks.shapes-names-vqa.n_support = 512, the demonstration pool each "
        "query draws its 600 demonstrations from; lower icd.shots or raise n_support",
    ),
    "unknown key in a method's training": (
        _set("methods.mimic.train.momentum", 0.9),
        "params.yaml: methods.mimic.train.momentum: unknown key; known: align_weight, batch_size, ce_tokens, "
        "ce_weight, decay_bias, epochs, grad_accum, lr, max_grad_norm, seed, warmup_ratio, weight_decay",
    ),
    "a word for a number": (_set("methods.mimic.train.lr", "fast"),
                            "params.yaml: methods.mimic.train.lr = 'fast': must be a number"),
    "negative epochs": (_set("methods.mimic.train.epochs", -1),
                        "params.yaml: methods.mimic.train.epochs = -1: must be >= 1"),
    "no evaluation queries": (
        _set("tasks.shapes-vqa.n_eval", 0),
        "params.yaml: tasks.shapes-vqa.n_eval = 0: must be >= 1",
    ),
    "icl shots above icd.shots": (
        _set("methods.icl-4.shots", 16),
        "params.yaml: methods.icl-4.shots = 16: must be <= icd.shots = 8 (the demonstrations sampled per query)",
    ),
    "model with neither path nor hub_id": (
        _set("models.idefics-9b.hub_id", None),
        "params.yaml: models.idefics-9b: needs a local `path` or a hub `hub_id` (both are missing or null)",
    ),
    "nothing to train": (
        lambda p: p["methods"]["mimic"]["train"].update(align_weight=0.0, ce_weight=0.0),
        "params.yaml: methods.mimic.train: align_weight and ce_weight are both 0, so there is nothing to train",
    ),
    "log names that collide": (
        lambda p: (
            p["models"].update(
                {"m-shapes": {"path": "models/x", "dtype": "float32"}, "m": {"path": "y", "dtype": "float32"}}
            ),
            p["tasks"].update({"vqa": dict(p["tasks"]["shapes-vqa"])}),
            p["run"].update(models=["m-shapes", "m"], tasks=["vqa", "shapes-vqa"]),
        ),
        "params.yaml: run: m-shapes x vqa and m x shapes-vqa share the log file "
        "results/logs/extract-teacher/seed-<s>/m-shapes-vqa.log; rename one of them",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_params_fail_with_one_line_naming_the_key(params, case):
    mutate, expected = BAD[case]
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(ParamsError) as info:
        check_params(bad)
    assert str(info.value) == expected
    assert "\n" not in str(info.value)


def test_yaml_infinities_are_read_and_refused(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("      lr: 5.0e-2 ", "      lr: .inf ")
    assert "lr: .inf" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"methods.mimic.train.lr = .inf: must be a finite number$"):
        load_params(tmp_path / "params.yaml")


def test_load_params_reports_yaml_problems_with_the_file_name(tmp_path):
    text = (REPO / "params.yaml").read_text()
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text(text + "\nseed: 1\n")
    with pytest.raises(ParamsError, match=rf"^{duplicated}: line \d+: duplicate key 'seed'$"):
        load_params(duplicated)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("seed: 0 ", "seed: [0 ", 1))
    with pytest.raises(ParamsError, match=rf"^{broken}: line \d+: expected ',' or '\]', but got '<scalar>'$"):
        load_params(broken)
    with pytest.raises(ParamsError, match=r"nope.yaml: no such file"):
        load_params(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ParamsError, match=r"empty.yaml: \(top level\) = null: must be a mapping"):
        load_params(empty)


def test_the_file_name_is_in_the_message(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["methods"]["mimic"]["train"]["lr"] = -1
    path = tmp_path / "my-params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"^.*my-params.yaml: methods.mimic.train.lr = -1: must be > 0$"):
        load_params(path)


def test_a_run_without_trained_methods_is_valid(params):
    only_icl = copy.deepcopy(params)
    only_icl["run"].update(untrained=[], trained=[])
    check_params(only_icl)
    assert run_methods(only_icl) == [ICL_REFERENCE]


def test_the_per_model_protocol_overrides_the_shared_settings():
    from mimic.pipeline.params import eval_settings, processor_settings, prompt_preset, teacher_shots, train_settings

    params = load_params(REPO / "params.yaml")
    params["icd"]["shots"] = 32
    assert teacher_shots(params, "idefics-9b") == 32 and teacher_shots(params, "idefics2-8b-base") == 8
    assert teacher_shots(params, "mini-idefics2") == 32  # no override: icd.shots
    assert method_shots(params, "icl", "idefics2-8b-base") == 8 and method_shots(params, "icl-2", "idefics-9b") == 2
    assert method_shots(params, "mimic", "idefics-9b") == 32
    hp = train_settings(params, "idefics2-8b-base", "mimic")
    assert (hp["epochs"], hp["lr"]) == (5, 5.0e-3)
    assert hp["ce_weight"] == params["methods"]["mimic"]["train"]["ce_weight"]
    assert train_settings(params, "mini-idefics2", "mimic") == params["methods"]["mimic"]["train"]
    ev = eval_settings(params, "idefics-9b")
    assert ev["num_beams"] == 3 and ev["max_new_tokens"] == {"vqa": 10, "caption": 20}
    assert ev["batch_size"] == params["eval"]["batch_size"]
    assert eval_settings(params, "mini-idefics2") == params["eval"]
    assert prompt_preset(params, "idefics-9b") == "reference" and prompt_preset(params, "mini-idefics2") == "clean"
    assert processor_settings(params, "idefics2-8b-base") == {"do_image_splitting": False}


def test_a_run_models_teacher_shots_must_fit_the_sampled_demonstrations():
    params = load_params(REPO / "params.yaml")
    params["run"]["models"] = ["idefics-9b"]
    with pytest.raises(ParamsError, match=r"models.idefics-9b.shots = 32: must be <= icd.shots = 8"):
        check_params(params)
    params["icd"]["shots"] = 32
    check_params(params)


def test_the_commented_method_comparison_is_a_valid_run_with_stave_and_mtv():
    """params.yaml's one-line switch to the method comparison (README: "one commented line away") names methods
    that exist, in the list their type belongs to, and holds the newer rows (STAVE, MTV) beside MimIC."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    line = next(x for x in lines if x.strip().startswith("# trained: [mimic, mimic-ce-only"))
    comparison = yaml.safe_load(line.strip()[2:])["trained"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"]["trained"] = comparison
    check_params(params)
    assert {"mimic", "stave", "mtv"} <= set(comparison)
    assert [params["methods"][m]["type"] for m in ("stave", "mtv")] == ["stave", "mtv"]
