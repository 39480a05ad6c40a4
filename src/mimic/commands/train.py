"""mimic train: train a method (MimIC and its ablations) against the ICL teacher.

The teacher cache is checked first (its settings against params.yaml, each shard's sha256 on
use). Training stops at the first non-finite loss, gradient or weight (mimic.training), and the
checkpoint directory is replaced only once a finite checkpoint is complete: a failing or
interrupted run leaves the previous checkpoint as it was. The checkpoint records the settings that
made it (mimic.stages) and its weights' sha256, which `mimic evaluate` verifies.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)


def run(args) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from mimic import paths
    from mimic.api import detach, save
    from mimic.commands.stage_inputs import load_stage_model, load_task, teacher_provenance
    from mimic.config import MimicConfig
    from mimic.logs import setup_logging
    from mimic.params import ParamsError, is_trained, model_source, teacher_shots, train_settings
    from mimic.stages import result_settings
    from mimic.teacher import TeacherCache, cache_settings
    from mimic.training import log_csv, train

    log = setup_logging(args.log, "mimic.train")
    params = load_checked(args)
    if not is_trained(params, args.method):
        raise ParamsError(f"{args.params}: methods.{args.method} has type "
                          f"{params['methods'][args.method]['type']!r}, which is not trained")
    method = params["methods"][args.method]
    teacher = params["teacher"]
    data, icd = load_task(args.task, params)
    cache = None
    if teacher["mode"] == "cached":
        cache = TeacherCache(paths.teacher_dir(args.model, args.task))
        meta = {"model": args.model, "task": args.task, "source": model_source(params, args.model)}
        cache.check(cache_settings(icd, teacher, meta, teacher_provenance(params, args.model, args.task),
                                   teacher_shots(params, args.model)))
    settings = result_settings(params, "train", args.model, args.task, args.method)
    loaded = load_stage_model(params, args.model)
    shift_config = MimicConfig(**{k: v for k, v in method.get("shift", {}).items()}, base_model=loaded.source)
    shots = teacher_shots(params, args.model)
    hp = train_settings(params, args.model, args.method)
    shift, rows, summary = train(loaded, data, icd, shift_config, hp, teacher["target"], cache, shots=shots)
    out = paths.checkpoint_dir(args.model, args.task, args.method)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        meta = {"model": args.model, "task": args.task, "method": args.method, "shots": shots,
                "teacher_target": teacher["target"], **summary}
        # the checkpoint holds nothing of this run (no times): the same training gives the same bytes,
        # so retraining that changes nothing reruns nothing downstream; the times go to train_summary.json
        timing = ("seconds", "teacher_seconds")
        save(shift, tmp, metadata={**{k: v for k, v in meta.items() if k not in timing}, "settings": settings})
        (tmp / "train_log.csv").write_text(log_csv(rows))
        (tmp / "train_summary.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        detach(loaded.model)
        old = out.with_name(f".{out.name}.old-{tmp.name}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("checkpoint written to %s", out)
    return 0
