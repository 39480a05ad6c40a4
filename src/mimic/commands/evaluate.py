"""mimic evaluate: generate for the evaluation queries, score, time, and compare to the ICL teacher."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)


def run(args) -> int:
    import json

    from mimic import paths
    from mimic.atomic import atomic_write_text
    from mimic.commands.stage_inputs import load_stage_model, load_task
    from mimic.data.schema import write_json
    from mimic.errors import IntegrityError, MimicError
    from mimic.evaluation import agreement, peak_memory_mb, predict
    from mimic.logs import setup_logging
    from mimic.methods import count_parameters, load, read_config
    from mimic.metrics import HEADLINE, metric_variant, score
    from mimic.params import ICL_REFERENCE, eval_settings, is_trained, method_shots, method_type
    from mimic.stages import differences, result_settings

    log = setup_logging(args.log, "mimic.evaluate")
    params = load_checked(args)
    kind = params["tasks"][args.task]["kind"]
    mtype = method_type(params, args.method)
    reference = None
    if args.method != ICL_REFERENCE:
        ref_path = paths.predictions_file(args.model, args.task, ICL_REFERENCE)
        if not ref_path.is_file():
            raise MimicError(f"{ref_path} is missing: run `mimic evaluate --method {ICL_REFERENCE}` first")
        try:
            reference = [json.loads(line) for line in ref_path.read_text().splitlines() if line.strip()]
        except ValueError as exc:
            raise IntegrityError(f"{ref_path}: not valid JSON lines ({exc}); rerun "
                                 f"`mimic evaluate --method {ICL_REFERENCE}`") from None
    data, icd = load_task(args.task, params)
    checkpoint = paths.checkpoint_dir(args.model, args.task, args.method)
    if is_trained(params, args.method):  # made under the current settings? (before the model loads)
        made = read_config(checkpoint).extra.get("settings")
        wanted = result_settings(params, "train", args.model, args.task, args.method)
        if made is not None and made != wanted:
            changed = "; ".join(differences(made, wanted)[:4])
            raise IntegrityError(f"{checkpoint} was trained under other settings ({changed}); train it again "
                                 f"(`mimic train --model {args.model} --task {args.task} --method {args.method}`)")
    loaded = load_stage_model(params, args.model)
    counts = {"trainable": 0, "fitted": 0}
    if is_trained(params, args.method):
        module = load(loaded.model, checkpoint)
        counts = count_parameters(module.config)
    shots = method_shots(params, args.method, args.model)
    ev = eval_settings(params, args.model)
    qids = list(data.tables["eval"]["id"])
    if ev.get("limit"):
        qids = qids[: ev["limit"]]
    rows = predict(loaded, data, qids, icd["eval"], shots if mtype == "icl" else 0, ev["batch_size"],
                   ev["max_new_tokens"][kind], ev["num_beams"], desc=f"evaluate {args.method}",
                   length_penalty=ev.get("length_penalty", 1.0))
    variant = ev["metric_variant"]
    metrics = score(kind, [r["prediction"] for r in rows], [r["answers"] for r in rows], variant)
    headline = HEADLINE[kind]
    result = {
        "model": args.model, "task": args.task, "method": args.method, "method_type": mtype,
        "shots": shots, "kind": kind, "metric": headline,
        "metric_variant": metric_variant(kind, variant),
        "score": metrics[headline], "metrics": metrics, "n_eval": len(rows),
        "latency_ms_per_query": round(sum(r["latency_ms"] for r in rows) / max(1, len(rows)), 3),
        "peak_memory_mb": round(peak_memory_mb(loaded.device), 1), "device": str(loaded.device),
        "batch_size": ev["batch_size"],  # result-neutral (mimic.stages): recorded, not a rerun trigger
        "trainable_params": counts["trainable"], "fitted_params": counts["fitted"],
        "icl_agreement": 100.0 if reference is None else round(agreement(kind, rows, reference), 2),
        "skipped": json.loads(paths.task_meta(args.task).read_text()).get("skipped", {}),
    }
    out = paths.eval_dir(args.model, args.task, args.method)
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_json(out / "metrics.json", result)
    log.info("%s %s %s: %s (%s) = %.2f, %.1f ms/query, ICL agreement %.1f%%", args.model, args.task, args.method,
             headline, result["metric_variant"], result["score"], result["latency_ms_per_query"],
             result["icl_agreement"])
    return 0
