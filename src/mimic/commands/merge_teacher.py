"""mimic merge-teacher: join the parts of a split teacher extraction (``teacher.jobs`` > 1) into the cache.

Reads results/parts/teacher/<model>/<task>/part-*-of-N.safetensors (N = ``teacher.jobs``), checks that
every part is there, made under the current settings, for this split, and holds exactly its samples,
then writes the cache as ``mimic extract-teacher`` writes it: the same shards, index and manifest bytes.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True)


def run(args) -> int:
    import json

    from mimic.commands.extract_teacher import teacher_job
    from mimic.io.logs import setup_logging
    from mimic.pipeline import paths
    from mimic.training.teacher import merge_parts

    log = setup_logging(args.log, "mimic.merge_teacher")
    params = load_checked(args)
    _, icd, provenance, shots, meta = teacher_job(args, params)
    jobs = params["teacher"].get("jobs", 1)
    model, task, seed = args.model, args.task, args.seed
    manifest = merge_parts(paths.teacher_parts_dir(model, task, seed=seed), jobs, icd,
                           paths.teacher_dir(model, task, seed=seed), params["teacher"], meta, provenance=provenance,
                           work_dir=paths.teacher_partial_dir(model, task, seed=seed), shots=shots)
    log.info("teacher cache from %d parts: %s", jobs, json.dumps({k: manifest[k] for k in (
        "n_samples", "total_bytes", "seconds")}))
    return 0
