"""mimic train: train (or fit) a method -- MimIC and its ablations, LIVE, I2CL, HiFICL, LoRA, MimIC + LoRA,
Task / Function Vector -- on the training queries, against the ICL teacher where its loss needs one."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)


def open_teacher_cache(params: dict, model: str, task: str, needs: set[str]):
    """The teacher cache when the method's loss needs the teacher and the teacher is cached, else None."""
    from mimic import paths
    from mimic.teacher import TeacherCache

    teacher = params["teacher"]
    if not needs or teacher["mode"] != "cached":
        return None
    cache = TeacherCache(paths.teacher_dir(model, task))
    if "states" in needs and cache.manifest["target"] != teacher["target"]:
        raise ValueError(f"the teacher cache holds {cache.manifest['target']!r} states but teacher.target = "
                         f"{teacher['target']!r}; re-extract the teacher")
    if "logits" in needs and not cache.manifest.get("logits_topk"):
        raise ValueError(f"the teacher cache {cache.dir} holds no answer logits, which this method's kl_weight needs; "
                         "set teacher.logits_topk > 0 and re-extract the teacher")
    return cache


def run(args) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from mimic import paths
    from mimic.commands.stage_inputs import load_stage_model, load_task
    from mimic.logs import setup_logging
    from mimic.methods import config_from_entry, detach, save
    from mimic.params import ParamsError, is_trained, method_hp, teacher_shots
    from mimic.training import DEFAULT_LOGITS_TOPK, log_csv, teacher_needs, train

    log = setup_logging(args.log, "mimic.train")
    params = load_checked(args)
    if not is_trained(params, args.method):
        raise ParamsError(f"{args.params}: methods.{args.method} has type "
                          f"{params['methods'][args.method]['type']!r}, which is not trained")
    entry = params["methods"][args.method]
    hp = method_hp(params, args.method, args.model)
    teacher = params["teacher"]
    cache = open_teacher_cache(params, args.model, args.task, teacher_needs(hp))
    data, icd = load_task(args.task, params)
    loaded = load_stage_model(params, args.model)
    config = config_from_entry(entry, base_model=loaded.source)
    shots = teacher_shots(params, args.model)
    if cache is not None and cache.manifest.get("shots", shots) != shots:
        raise ValueError(f"the teacher cache holds {cache.manifest['shots']}-shot states but the teacher of "
                         f"{args.model} takes {shots}; re-extract the teacher")
    module, rows, summary = train(loaded, data, icd, config, hp, teacher["target"], cache,
                                  teacher.get("logits_topk", DEFAULT_LOGITS_TOPK), shots=shots)
    out = paths.checkpoint_dir(args.model, args.task, args.method)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    meta = {"model": args.model, "task": args.task, "method": args.method, "method_type": entry["type"],
            "shots": shots, "teacher_target": teacher["target"], **summary}
    save(module, tmp, metadata=meta)
    (tmp / "train_log.csv").write_text(log_csv(rows))
    (tmp / "train_summary.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    detach(loaded.model)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("checkpoint written to %s", out)
    return 0
