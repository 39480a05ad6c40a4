"""mimic merge-evaluate: join the parts of a split evaluation (``eval.jobs`` > 1) and score them once.

Reads results/parts/eval/<model>/<task>/<method>/part-*-of-N.json (N = ``eval.jobs``), checks that every
part is there, made under the current settings (and checkpoint), for this split, and holds exactly its
queries, then writes predictions.jsonl, metrics.json and timing.json as ``mimic evaluate`` does: the same
predictions in the same order, corpus metrics (CIDEr, VQA accuracy) computed over all of them.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)


def run(args) -> int:
    from mimic.commands.evaluate import (
        check_checkpoint,
        check_part,
        check_scoring,
        part_file,
        part_queries,
        reference_predictions,
        write_results,
    )
    from mimic.commands.stage_inputs import load_task, read_stage_json
    from mimic.errors import IntegrityError
    from mimic.io.logs import setup_logging
    from mimic.pipeline import paths
    from mimic.pipeline.params import eval_settings

    log = setup_logging(args.log, "mimic.merge_evaluate")
    params = load_checked(args)
    reference = reference_predictions(args)
    data, _ = load_task(args.task, params, args.seed)
    weights_sha256 = check_checkpoint(args, params)
    check_scoring(params, args.task)
    ev = eval_settings(params, args.model)
    jobs = params["eval"].get("jobs", 1)
    qids = list(data.tables["eval"]["id"])
    if ev.get("limit"):
        qids = qids[: ev["limit"]]
    fix = (f"rerun `mimic evaluate --model {args.model} --task {args.task} --method {args.method} "
           f"--part <i>/{jobs}` for it")
    rows, seen, info = [], {}, []
    for part in range(jobs):
        path = part_file(args, part, jobs)
        part_fix = fix.replace("<i>", str(part + 1))
        doc = read_stage_json(path, part_fix)
        twice = [r["id"] for r in doc.get("rows", []) if r["id"] in seen]
        if twice:
            raise IntegrityError(f"{path}: query {twice[0]} is also in {seen[twice[0]]} (duplicate queries); "
                                 f"{part_fix}")
        check_part(doc, path, params, args, part, jobs, part_queries(qids, ev["batch_size"], part, jobs),
                   weights_sha256, part_fix)
        seen.update({r["id"]: path for r in doc["rows"]})
        rows += doc["rows"]
        info.append(doc)
    run_info = {"peak_memory_mb": max((d["peak_memory_mb"] for d in info), default=0.0),
                "device": ",".join(sorted({d["device"] for d in info})),
                "trainable_params": info[0]["trainable_params"] if info else 0,
                "fitted_params": info[0].get("fitted_params", 0) if info else 0}
    write_results(args, params, rows, reference, run_info, log,
                  kept=paths.eval_parts_dir(args.model, args.task, args.method, seed=args.seed))
    return 0
