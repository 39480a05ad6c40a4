"""mimic extract-teacher: cache the frozen k-shot ICL teacher's hidden states for training."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True)


def run(args) -> int:
    import json

    from mimic import paths
    from mimic.commands.stage_inputs import load_stage_model, load_task
    from mimic.logs import setup_logging
    from mimic.params import teacher_shots
    from mimic.teacher import extract

    log = setup_logging(args.log, "mimic.extract_teacher")
    params = load_checked(args)
    data, icd = load_task(args.task, params)
    loaded = load_stage_model(params, args.model)
    shots = teacher_shots(params, args.model)
    meta = {"model": args.model, "source": loaded.source, "task": args.task, "shots": shots, "seed": icd["seed"]}
    manifest = extract(loaded, data, icd, paths.teacher_dir(args.model, args.task), params["teacher"], meta,
                       shots=shots)
    log.info("teacher cache: %s", json.dumps({k: manifest[k] for k in ("n_samples", "bytes_per_sample",
                                                                        "total_bytes", "seconds")}))
    return 0
