"""mimic train: train (or fit) a method -- MimIC and its ablations, LIVE, I2CL, HiFICL, LoRA, MimIC + LoRA,
Task / Function Vector -- on the training queries, against the ICL teacher where its loss needs one.

The teacher cache, where the method reads it, is checked first (its settings against params.yaml,
each shard's sha256 on use). Training stops at the first non-finite loss, gradient or weight
(mimic.training.loop), and the checkpoint directory is replaced only once a finite checkpoint is
complete: a failing or interrupted run leaves the previous checkpoint as it was. The checkpoint
records the settings that made it (mimic.pipeline.stages) and its weights' sha256, which `mimic evaluate`
verifies.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)


def open_teacher_cache(params: dict, model: str, task: str, icd: dict, needs: set[str], seed: int):
    """The teacher cache, checked against params.yaml, when the method's loss needs the teacher and
    the teacher is cached; else None."""
    from mimic.commands.stage_inputs import teacher_provenance
    from mimic.pipeline import paths
    from mimic.pipeline.params import model_source, teacher_shots
    from mimic.training.teacher import TeacherCache, cache_settings

    teacher = params["teacher"]
    if not needs or teacher["mode"] != "cached":
        return None
    cache = TeacherCache(paths.teacher_dir(model, task, seed=seed))
    meta = {"model": model, "task": task, "source": model_source(params, model)}
    cache.check(cache_settings(icd, teacher, meta, teacher_provenance(params, model, task, seed),
                               teacher_shots(params, model)))
    if "logits" in needs and not cache.manifest.get("logits_topk"):
        raise ValueError(f"the teacher cache {cache.dir} holds no answer logits, which this method's kl_weight needs; "
                         "set teacher.logits_topk > 0 and re-extract the teacher")
    return cache


def run(args) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from mimic.commands.stage_inputs import load_stage_model, load_task
    from mimic.io.atomic import replace_dir
    from mimic.io.logs import setup_logging
    from mimic.methods import config_from_entry, detach, save_pretrained
    from mimic.pipeline import paths
    from mimic.pipeline.params import ParamsError, is_trained, method_hp, teacher_shots
    from mimic.pipeline.stages import result_settings
    from mimic.training.loop import DEFAULT_LOGITS_TOPK, log_csv, teacher_needs, train

    log = setup_logging(args.log, "mimic.train")
    params = load_checked(args)
    if not is_trained(params, args.method):
        raise ParamsError(f"{args.params}: methods.{args.method} has type "
                          f"{params['methods'][args.method]['type']!r}, which is not trained")
    entry = params["methods"][args.method]
    hp = method_hp(params, args.method, args.model)
    teacher = params["teacher"]
    data, icd = load_task(args.task, params, args.seed)
    cache = open_teacher_cache(params, args.model, args.task, icd, teacher_needs(hp), args.seed)
    settings = result_settings(params, "train", args.model, args.task, args.method)
    loaded = load_stage_model(params, args.model)
    config = config_from_entry(entry, base_model=loaded.source)
    shots = teacher_shots(params, args.model)
    module, rows, summary = train(loaded, data, icd, config, hp, teacher["target"], cache,
                                  teacher.get("logits_topk", DEFAULT_LOGITS_TOPK), shots=shots)
    out = paths.checkpoint_dir(args.model, args.task, args.method, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        meta = {"model": args.model, "task": args.task, "method": args.method, "method_type": entry["type"],
                "shots": shots, "teacher_target": teacher["target"], **summary}
        # the checkpoint holds nothing of this run (no times): the same training gives the same bytes,
        # so retraining that changes nothing reruns nothing downstream; the times go to train_summary.json
        timing = ("seconds", "teacher_seconds")
        kept = {k: v for k, v in meta.items() if k not in timing}
        save_pretrained(module, tmp, card=False, metadata={**kept, "settings": settings})
        (tmp / "train_log.csv").write_text(log_csv(rows))
        (tmp / "train_summary.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        detach(loaded.model)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("checkpoint written to %s", out)
    return 0
