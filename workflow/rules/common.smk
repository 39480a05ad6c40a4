"""What the rules need to know about params.yaml; all of it comes from mimic.params."""

import re

from mimic.params import ICL_REFERENCE, is_trained, load_params, needs_teacher, run_methods, trained_methods

# The `mimic` commands read params.yaml itself: refuse a config that differs from it
# (--config / --configfile overrides), and fail early with mimic.params' one-line errors.
if config != load_params("params.yaml"):
    raise WorkflowError("the mimic commands read params.yaml: edit it instead of overriding it with --config/--configfile")


def one_of(names):
    """A wildcard regex matching exactly these names (never anything when there are none)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


wildcard_constraints:
    model=one_of(config["models"]),
    task=one_of(config["tasks"]),
    method=one_of(config["methods"]),


TRAINED_METHODS = one_of(trained_methods(config))


def task_files(w):
    """data/<task>/{train,support,eval}.parquet and meta.json, as made by `mimic prepare`."""
    return {
        "train": f"data/{w.task}/train.parquet",
        "support": f"data/{w.task}/support.parquet",
        "eval": f"data/{w.task}/eval.parquet",
        "meta": f"data/{w.task}/meta.json",
    }


def model_files(w):
    """The model directory when the model has a local path (hub models have no file input)."""
    path = config["models"][w.model].get("path")
    return {"model": path} if path else {}


def teacher_inputs(w):
    return {**task_files(w), "icd": f"data/{w.task}/icd.json", **model_files(w)}


def train_inputs(w):
    inputs = teacher_inputs(w)
    if config["teacher"]["mode"] == "cached" and needs_teacher(config, w.method):
        inputs["teacher"] = f"results/teacher/{w.model}/{w.task}"
    return inputs


def evaluate_inputs(w):
    inputs = teacher_inputs(w)
    if is_trained(config, w.method):
        inputs["weights"] = f"results/checkpoints/{w.model}/{w.task}/{w.method}/mimic.safetensors"
        inputs["shift_config"] = f"results/checkpoints/{w.model}/{w.task}/{w.method}/mimic_config.json"
    if w.method != ICL_REFERENCE:
        inputs["icl_predictions"] = f"results/eval/{w.model}/{w.task}/{ICL_REFERENCE}/predictions.jsonl"
    return inputs


def report_inputs(w):
    run = config["run"]
    return {
        "metrics": expand(
            "results/eval/{model}/{task}/{method}/metrics.json",
            model=run["models"], task=run["tasks"], method=run_methods(config),
        ),
        "predictions": expand(
            "results/eval/{model}/{task}/{method}/predictions.jsonl",
            model=run["models"], task=run["tasks"], method=run_methods(config),
        ),
        "train_logs": expand(
            "results/checkpoints/{model}/{task}/{method}/train_log.csv",
            model=run["models"], task=run["tasks"], method=run["trained"],
        ),
    }
