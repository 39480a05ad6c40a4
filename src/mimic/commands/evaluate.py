"""mimic evaluate: generate for the evaluation queries, score, time, and compare to the ICL teacher.

Writes results/eval/<model>/<task>/seed-<s>/<method>/: predictions.jsonl and metrics.json (the same bytes for
the same predictions) and timing.json (this run's wall time per query and peak memory).

With ``--part I/N`` it generates only for part I of the evaluation queries (a contiguous run of whole
batches) into results/parts/eval/<model>/<task>/<method>/ (one job of a split evaluation, ``eval.jobs``
in the pipeline); ``mimic merge-evaluate`` joins the parts and scores them once, over all predictions.
"""

from __future__ import annotations

from mimic.commands.common import add_part_argument, add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True, method=True)
    add_part_argument(parser, "the evaluation queries")


def reference_predictions(args) -> list[dict] | None:
    """The ICL teacher's predictions every other method is compared to (None for the reference itself)."""
    import json

    from mimic.errors import IntegrityError, MimicError
    from mimic.pipeline import paths
    from mimic.pipeline.params import ICL_REFERENCE

    if args.method == ICL_REFERENCE:
        return None
    ref_path = paths.predictions_file(args.model, args.task, ICL_REFERENCE, seed=args.seed)
    if not ref_path.is_file():
        raise MimicError(f"{ref_path} is missing: run `mimic evaluate --method {ICL_REFERENCE}` first")
    try:
        return [json.loads(line) for line in ref_path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise IntegrityError(f"{ref_path}: not valid JSON lines ({exc}); rerun "
                             f"`mimic evaluate --method {ICL_REFERENCE}`") from None


def check_checkpoint(args, params: dict) -> str | None:
    """A trained method's checkpoint was made under the current settings; its weights' sha256 (else None)."""
    from mimic.errors import IntegrityError
    from mimic.methods import read_config
    from mimic.pipeline import paths
    from mimic.pipeline.params import is_trained
    from mimic.pipeline.stages import differences, file_sha256, result_settings

    if not is_trained(params, args.method):
        return None
    checkpoint = paths.checkpoint_dir(args.model, args.task, args.method, seed=args.seed)
    made = read_config(checkpoint).extra.get("settings")
    wanted = result_settings(params, "train", args.model, args.task, args.method)
    if made is not None and made != wanted:
        changed = "; ".join(differences(made, wanted)[:4])
        raise IntegrityError(f"{checkpoint} was trained under other settings ({changed}); train it again "
                             f"(`mimic train --model {args.model} --task {args.task} --method {args.method}`)")
    return file_sha256(checkpoint / "mimic.safetensors")


def part_queries(qids: list[str], batch_size: int, part: int, jobs: int) -> list[str]:
    """The queries of part ``part`` (0-based) of ``jobs``: whole batches, so each is generated in the batch
    it has in a single job (left padding depends on the batch: the same batches give the same answers)."""
    starts = list(range(0, len(qids), batch_size))
    mine = starts[part * len(starts) // jobs : (part + 1) * len(starts) // jobs]
    return [q for s in mine for q in qids[s : s + batch_size]]


def part_file(args, part: int, jobs: int):
    from mimic.pipeline import paths
    folder = paths.eval_parts_dir(args.model, args.task, args.method, seed=args.seed)
    return folder / paths.part_name(part, jobs, "json")


def run(args) -> int:
    import contextlib

    from mimic.commands.stage_inputs import eval_demonstrations, load_stage_model, load_task
    from mimic.evaluation.predict import peak_memory_mb, predict
    from mimic.io.logs import setup_logging
    from mimic.methods import count_parameters, from_pretrained
    from mimic.pipeline import paths
    from mimic.pipeline.params import eval_settings, is_trained, max_new_tokens, method_shots, method_type

    log = setup_logging(args.log, "mimic.evaluate")
    params = load_checked(args)
    kind = params["tasks"][args.task]["kind"]
    mtype = method_type(params, args.method)
    reference = reference_predictions(args) if args.part is None else None
    data, icd = load_task(args.task, params, args.seed)
    weights_sha256 = check_checkpoint(args, params)  # before the model loads
    check_scoring(params, args.task)  # likewise
    ev = eval_settings(params, args.model)
    qids = list(data.tables["eval"]["id"])
    if ev.get("limit"):
        qids = qids[: ev["limit"]]
    part, jobs = args.part if args.part is not None else (0, 1)
    qids = part_queries(qids, ev["batch_size"], part, jobs)
    path = part_file(args, part, jobs)
    kept = kept_part(args, params, path, part, jobs, qids, weights_sha256, log) if args.part is None else None
    if kept is None:
        loaded = load_stage_model(params, args.model)
        counts = {"trainable": 0, "fitted": 0}
        if is_trained(params, args.method):
            module = from_pretrained(loaded.model, paths.checkpoint_dir(args.model, args.task, args.method,
                                                                        seed=args.seed))
            counts = count_parameters(module.config)
        shots = method_shots(params, args.method, args.model)
        demos = eval_demonstrations(params, icd, args.task, args.method, args.seed)
        rows = predict(loaded, data, qids, demos, shots if mtype == "icl" else 0, ev["batch_size"],
                       max_new_tokens(ev, kind), ev["num_beams"], desc=f"evaluate {args.method}",
                       length_penalty=ev.get("length_penalty", 1.0), stop=ev.get("stop", "newline"),
                       role="trained" if is_trained(params, args.method) else "untrained",
                       rank_by=params["tasks"][args.task].get("rank_by", "mean")) if qids else []
        run_info = {"peak_memory_mb": round(peak_memory_mb(loaded.device), 1), "device": str(loaded.device),
                    "trainable_params": counts["trainable"], "fitted_params": counts["fitted"]}
        # The generations are kept before anything is scored: a part's output, and for a whole evaluation
        # the file a rerun scores without generating again when scoring fails (deleted once it succeeded).
        write_part(args, params, path, part, jobs, ev["batch_size"], weights_sha256, qids, run_info, rows)
        log.info("wrote %s (%d queries)", path, len(rows))
    else:
        rows, run_info = kept["rows"], {k: kept[k] for k in RUN_INFO}
        log.info("scoring the %d predictions kept in %s by an earlier run (nothing is generated)", len(rows), path)
    if args.part is not None:
        return 0
    write_results(args, params, rows, reference, run_info, log, kept=path)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # its folder too, when empty (its parents may be another job's: left alone)
        path.parent.rmdir()
    return 0


RUN_INFO = ("peak_memory_mb", "device", "trainable_params", "fitted_params")


def write_part(args, params: dict, path, part: int, jobs: int, batch_size: int, weights_sha256, qids: list[str],
               run_info: dict, rows: list[dict]) -> None:
    """One part of an evaluation (or the whole one, part 0 of 1): its generations and what they were made under."""
    import json

    from mimic.io.atomic import atomic_write_text
    from mimic.pipeline.stages import result_settings

    doc = {"model": args.model, "task": args.task, "method": args.method, "part": part, "jobs": jobs,
           "batch_size": batch_size,
           "settings": result_settings(params, "evaluate", args.model, args.task, args.method),
           "weights_sha256": weights_sha256, "ids": qids, **run_info, "rows": rows}
    atomic_write_text(path, json.dumps(doc) + "\n")


def check_part(doc: dict, path, params: dict, args, part: int, jobs: int, qids: list[str], weights_sha256,
               fix: str) -> None:
    """``doc`` (read from ``path``) is part ``part`` of ``jobs`` made under the current settings and checkpoint,
    holding exactly the queries ``qids`` in order; else an :class:`IntegrityError` ending with ``fix``."""
    from mimic.errors import IntegrityError
    from mimic.pipeline.params import eval_settings
    from mimic.pipeline.stages import differences, result_settings

    batch_size = eval_settings(params, args.model)["batch_size"]
    settings = result_settings(params, "evaluate", args.model, args.task, args.method)
    if doc.get("settings") != settings or doc.get("batch_size") != batch_size:
        changed = "; ".join(differences(doc.get("settings") or {}, settings)[:3]) or (
            f"eval.batch_size: {doc.get('batch_size')} -> {batch_size}")
        raise IntegrityError(f"{path} was made under other settings ({changed}); {fix}")
    if doc.get("weights_sha256") != weights_sha256:
        raise IntegrityError(f"{path} was made with another checkpoint than the current one; {fix}")
    if (doc.get("part"), doc.get("jobs")) != (part, jobs):
        raise IntegrityError(f"{path} holds part {doc.get('part')} of a {doc.get('jobs')}-job split, not part "
                             f"{part} of {jobs} (a copied or stray file); {fix}")
    ids = [r["id"] for r in doc.get("rows", [])]
    if ids != qids:
        raise IntegrityError(f"{path}: holds {len(ids)} queries, not the {len(qids)} of part {part} of "
                             f"{jobs} in order; {fix}")


def kept_part(args, params: dict, path, part: int, jobs: int, qids: list[str], weights_sha256, log) -> dict | None:
    """The generations an earlier run of this evaluation kept at ``path`` (its scoring failed), when they were
    made under the current settings and checkpoint for the same queries; else None (they are generated again)."""
    import json

    from mimic.errors import IntegrityError

    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        check_part(doc, path, params, args, part, jobs, qids, weights_sha256, "generating them again")
    except (ValueError, IntegrityError) as exc:
        log.info("not reusing %s: %s", path, str(exc).splitlines()[0][:300])
        return None
    return doc


def check_scoring(params: dict, task: str) -> None:
    """What scoring needs is in place (Java for caption metrics, the OK-VQA stemmer's packages and data) before
    anything is generated."""
    from mimic.pipeline.params import check_task_tools

    check_task_tools(params, task)


def stemmed(rows: list[dict]) -> list[dict]:
    """``tasks.<t>.stem``: each row's post-processed ``prediction`` stemmed as OK-VQA's evaluation does (the raw
    ``generation`` is kept)."""
    from mimic.metrics.okvqa_stem import stem_all

    return [{**r, "prediction": s} for r, s in zip(rows, stem_all([r["prediction"] for r in rows]), strict=True)]


def write_results(args, params: dict, rows: list[dict], reference: list[dict] | None, run_info: dict, log,
                  kept) -> None:
    """Score all predictions once (corpus metrics such as CIDEr over the whole set) and write
    predictions.jsonl (each row with its own ``score``, :func:`mimic.evaluation.predict.predict`), metrics.json
    and timing.json. ``kept`` names where the unscored predictions stay when scoring fails (one line, exit 2).

    The measurements of this run (each query's ``latency_ms``, the mean, the peak memory) go to timing.json
    only, so predictions.jsonl and metrics.json have the same bytes whenever the same predictions are made
    (DVC sees no change after a rerun that changes nothing). ``rows`` carry ``latency_ms`` as
    :func:`~mimic.evaluation.predict.predict` gives them, in a kept or split job's part file too."""
    import json

    from mimic.data.schema import write_json
    from mimic.evaluation.predict import agreement
    from mimic.io.atomic import atomic_write_text
    from mimic.io.provenance import provenance
    from mimic.metrics import HEADLINE, metric_variant, score_with_samples
    from mimic.pipeline import paths
    from mimic.pipeline.params import eval_settings, method_shots, method_type

    kind = params["tasks"][args.task]["kind"]
    mtype = method_type(params, args.method)
    shots = method_shots(params, args.method, args.model)
    ev = eval_settings(params, args.model)
    variant = ev["metric_variant"]
    try:
        if params["tasks"][args.task].get("stem"):
            rows = stemmed(rows)
        metrics, each = score_with_samples(kind, [r["prediction"] for r in rows], [r["answers"] for r in rows],
                                           variant, rows=rows)
    except Exception as exc:  # noqa: BLE001 - any failure of the scorers: the generations must not be lost
        from mimic.errors import ScoringError

        what = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ScoringError(f"scoring the {len(rows)} predictions of {args.model} {args.task} {args.method} failed "
                           f"({type(exc).__name__}: {what}); they are kept in {kept}: fix the cause and rerun the "
                           "same command, which scores them without generating") from exc
    latency = {r["id"]: r.get("latency_ms") for r in rows}
    measured = [v for v in latency.values() if v is not None]
    rows = [{**{k: v for k, v in r.items() if k != "latency_ms"}, "score": round(s, 4)}
            for r, s in zip(rows, each, strict=True)]
    headline = HEADLINE[kind]
    result = {
        "model": args.model, "task": args.task, "method": args.method, "method_type": mtype,
        "shots": shots, "kind": kind, "metric": headline,
        "metric_variant": metric_variant(kind, variant),
        "score": metrics[headline], "metrics": metrics, "n_eval": len(rows),
        "device": run_info["device"],
        "batch_size": ev["batch_size"],  # result-neutral (mimic.pipeline.stages): recorded, not a rerun trigger
        "trainable_params": run_info["trainable_params"], "fitted_params": run_info["fitted_params"],
        "icl_agreement": 100.0 if reference is None else round(agreement(kind, rows, reference), 2),
        "skipped": json.loads(paths.task_meta(args.task, seed=args.seed).read_text()).get("skipped", {}),
        "provenance": provenance(args.seed),  # run seed, project commit, package versions
    }
    timing = {  # this run's measurements: they differ between two identical runs (a file of their own)
        "model": args.model, "task": args.task, "method": args.method, "seed": args.seed,
        "device": run_info["device"], "batch_size": ev["batch_size"], "n_eval": len(rows),
        "latency_ms_per_query": round(sum(measured) / len(measured), 3) if measured else None,
        "peak_memory_mb": run_info["peak_memory_mb"],
        "latency_ms": latency,  # per query: the wall time of its batch divided by the batch size
    }
    atomic_write_text(paths.predictions_file(args.model, args.task, args.method, seed=args.seed),
                      "".join(json.dumps(r) + "\n" for r in rows))
    write_json(paths.metrics_file(args.model, args.task, args.method, seed=args.seed), result)
    write_json(paths.timing_file(args.model, args.task, args.method, seed=args.seed), timing)
    log.info("%s %s %s: %s (%s) = %.2f, %s ms/query, ICL agreement %.1f%%", args.model, args.task, args.method,
             headline, result["metric_variant"], result["score"], timing["latency_ms_per_query"],
             result["icl_agreement"])
