"""mimic train: train a method (MimIC and its ablations) against the ICL teacher."""

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
    from mimic.commands.stage_inputs import load_stage_model, load_task
    from mimic.config import MimicConfig
    from mimic.logs import setup_logging
    from mimic.params import ParamsError, is_trained, teacher_shots, train_settings
    from mimic.teacher import TeacherCache
    from mimic.training import log_csv, train

    log = setup_logging(args.log, "mimic.train")
    params = load_checked(args)
    if not is_trained(params, args.method):
        raise ParamsError(f"{args.params}: methods.{args.method} has type "
                          f"{params['methods'][args.method]['type']!r}, which is not trained")
    method = params["methods"][args.method]
    teacher = params["teacher"]
    cache = None
    if teacher["mode"] == "cached":
        cache = TeacherCache(paths.teacher_dir(args.model, args.task))
        if cache.manifest["target"] != teacher["target"]:
            raise ValueError(f"the teacher cache holds {cache.manifest['target']!r} states but teacher.target = "
                             f"{teacher['target']!r}; re-extract the teacher")
    data, icd = load_task(args.task, params)
    loaded = load_stage_model(params, args.model)
    shift_config = MimicConfig(**{k: v for k, v in method.get("shift", {}).items()}, base_model=loaded.source)
    shots = teacher_shots(params, args.model)
    if cache is not None and cache.manifest.get("shots", shots) != shots:
        raise ValueError(f"the teacher cache holds {cache.manifest['shots']}-shot states but the teacher of "
                         f"{args.model} takes {shots}; re-extract the teacher")
    hp = train_settings(params, args.model, args.method)
    shift, rows, summary = train(loaded, data, icd, shift_config, hp, teacher["target"], cache, shots=shots)
    out = paths.checkpoint_dir(args.model, args.task, args.method)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    meta = {"model": args.model, "task": args.task, "method": args.method, "shots": shots,
            "teacher_target": teacher["target"], **summary}
    save(shift, tmp, metadata=meta)
    (tmp / "train_log.csv").write_text(log_csv(rows))
    (tmp / "train_summary.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    detach(loaded.model)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("checkpoint written to %s", out)
    return 0
