"""Loading what the model stages share: the prepared task, its demonstrations, the model."""

from __future__ import annotations

import json


def read_stage_json(path, fix: str):
    """An earlier stage's JSON output; a missing or unreadable file is one line that ends with `fix`."""
    from mimic.errors import IntegrityError, MimicError

    if not path.is_file():
        raise MimicError(f"{path} is missing: {fix}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise IntegrityError(f"{path}: not valid JSON ({exc}); {fix}") from None


def load_task(task: str, params: dict, seed: int):
    from mimic.data.batches import TaskData
    from mimic.data.schema import SPLITS, read_table
    from mimic.errors import MimicError
    from mimic.pipeline import paths

    tables = {s: read_table(paths.split_table(task, s, seed=seed)) for s in SPLITS}
    icd_path = paths.icd_file(task, seed=seed)
    icd = read_stage_json(icd_path, f"run `mimic sample-icd --task {task} --seed {seed}`")
    if icd["shots"] != params["icd"]["shots"]:
        raise MimicError(f"{icd_path} holds {icd['shots']} shots but icd.shots = {params['icd']['shots']}; "
                         "rerun `mimic sample-icd`")
    from mimic.data.icd import unknown_id

    unknown = unknown_id(icd, tables)
    if unknown:
        raise MimicError(f"{icd_path}: {unknown} ({paths.split_table(task, 'support', seed=seed).parent}); it was "
                         f"sampled from other data: rerun `mimic sample-icd --task {task} --seed {seed}`")
    kind, answer = params["tasks"][task]["kind"], params["icd"].get("answer", "most_common")
    target = params["icd"].get("target_answer")  # the training query's teacher-forced answer; default: `answer`
    return TaskData(kind, tables, answer=answer, target_answer=target), icd  # loaders store absolute image paths


def eval_demonstrations(params: dict, icd: dict, task: str, method: str, seed: int) -> dict:
    """query id -> the support ids a method's evaluation prompts show: the RICES lists (``eval_rices``)
    for an icl method with ``demos: rices``, else the sampler's (``eval``)."""
    from mimic.errors import MimicError
    from mimic.pipeline import paths
    from mimic.pipeline.params import method_demos

    if method_demos(params, method) != "rices":
        return icd["eval"]
    if "eval_rices" not in icd:
        raise MimicError(f"{paths.icd_file(task, seed=seed)} has no RICES demonstrations (icd.embedding is null?); "
                         "set icd.embedding and rerun `mimic sample-icd`")
    return icd["eval_rices"]


def teacher_provenance(params: dict, model: str, task: str, seed: int) -> dict:
    """The identity of what a teacher cache is computed from: the model and the task's files."""
    from mimic.pipeline import paths
    from mimic.pipeline.stages import file_sha256, model_identity

    files = {"train": paths.split_table(task, "train", seed=seed),
             "support": paths.split_table(task, "support", seed=seed), "icd": paths.icd_file(task, seed=seed)}
    return {"model": model_identity(params, model), **{k: file_sha256(p) for k, p in files.items()}}


def load_stage_model(params: dict, model: str):
    import torch

    from mimic.models.loading import load_model
    from mimic.pipeline.params import model_source, processor_settings, prompt_preset

    entry = params["models"][model]
    if entry.get("threads"):
        torch.set_num_threads(entry["threads"])
    loaded = load_model(model, model_source(params, model), entry.get("dtype", "float32"), entry.get("device"),
                        prompt=prompt_preset(params, model), processor_kwargs=processor_settings(params, model))
    loaded.source = model_source(params, model)
    return loaded
