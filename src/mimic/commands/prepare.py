"""mimic prepare: a task's splits -> data/<task>/{train,support,eval}.parquet + meta.json."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, task=True)


def run(args) -> int:
    from mimic.data.loaders import prepare_task
    from mimic.io.logs import setup_logging
    from mimic.pipeline import paths
    from mimic.pipeline.params import data_spec

    log = setup_logging(args.log, "mimic.prepare")
    params = load_checked(args)
    spec = {"name": args.task, **data_spec(params, args.task)}
    meta = prepare_task(spec, paths.task_dir(args.task, seed=args.seed), params["seed"])
    log.info("prepared %s: sizes %s, skipped %s", args.task, meta.get("sizes"), meta.get("skipped"))
    return 0
