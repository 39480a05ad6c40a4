"""mimic extract-teacher: cache the frozen k-shot ICL teacher's hidden states for training.

Resumable: finished shards wait in results/partial/teacher/<model>/<task>/ under the fingerprint
of their settings (mimic.teacher); a rerun after an interruption computes only the missing ones.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True)


def run(args) -> int:
    import json

    from mimic import paths
    from mimic.commands.stage_inputs import load_stage_model, load_task, teacher_provenance
    from mimic.logs import setup_logging
    from mimic.params import model_source, teacher_shots
    from mimic.teacher import extract

    log = setup_logging(args.log, "mimic.extract_teacher")
    params = load_checked(args)
    data, icd = load_task(args.task, params)
    provenance = teacher_provenance(params, args.model, args.task)
    loaded = load_stage_model(params, args.model)
    shots = teacher_shots(params, args.model)
    meta = {"model": args.model, "source": model_source(params, args.model), "task": args.task, "shots": shots,
            "seed": icd["seed"]}
    manifest = extract(loaded, data, icd, paths.teacher_dir(args.model, args.task), params["teacher"], meta,
                       provenance=provenance, work_dir=paths.teacher_partial_dir(args.model, args.task), shots=shots)
    log.info("teacher cache: %s", json.dumps({k: manifest[k] for k in ("n_samples", "bytes_per_sample",
                                                                        "total_bytes", "seconds", "reused_shards")}))
    return 0
