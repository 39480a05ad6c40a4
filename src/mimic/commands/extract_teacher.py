"""mimic extract-teacher: cache the frozen k-shot ICL teacher's hidden states for training.

Resumable: finished shards wait in results/partial/teacher/<model>/<task>/ under the fingerprint
of their settings (mimic.training.teacher); a rerun after an interruption computes only the missing ones.
With ``--part I/N`` it computes only part I of the work into results/parts/teacher/<model>/<task>/
(one job of a split extraction, ``teacher.jobs`` in the pipeline); ``mimic merge-teacher`` joins the
parts into the same cache, byte for byte.
"""

from __future__ import annotations

from mimic.commands.common import add_part_argument, add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True)
    add_part_argument(parser, "the extraction")


def teacher_job(args, params: dict):
    """What an extraction and a merge share: the task, its demonstrations, the cache's identity."""
    from mimic.commands.stage_inputs import load_task, teacher_provenance
    from mimic.pipeline.params import model_source, teacher_shots

    data, icd = load_task(args.task, params, args.seed)
    provenance = teacher_provenance(params, args.model, args.task, args.seed)
    shots = teacher_shots(params, args.model)
    meta = {"model": args.model, "source": model_source(params, args.model), "task": args.task, "shots": shots,
            "seed": icd["seed"]}
    return data, icd, provenance, shots, meta


def run(args) -> int:
    import json

    from mimic.commands.stage_inputs import load_stage_model
    from mimic.io.logs import setup_logging
    from mimic.pipeline import paths
    from mimic.training.teacher import extract, extract_part

    log = setup_logging(args.log, "mimic.extract_teacher")
    params = load_checked(args)
    data, icd, provenance, shots, meta = teacher_job(args, params)
    loaded = load_stage_model(params, args.model)
    model, task, seed = args.model, args.task, args.seed
    if args.part is not None:
        part, jobs = args.part
        extract_part(loaded, data, icd, paths.teacher_parts_dir(model, task, seed=seed), params["teacher"], meta,
                     part, jobs, provenance=provenance, shots=shots)
        return 0
    manifest = extract(loaded, data, icd, paths.teacher_dir(model, task, seed=seed), params["teacher"], meta,
                       provenance=provenance, work_dir=paths.teacher_partial_dir(model, task, seed=seed), shots=shots)
    log.info("teacher cache: %s", json.dumps({k: manifest[k] for k in ("n_samples", "bytes_per_sample",
                                                                        "total_bytes", "seconds", "reused_shards")}))
    return 0
