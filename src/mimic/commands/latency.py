"""mimic latency: time every method of the run side by side on one batch of a task (mimic.evaluation.latency).

Writes ``results/latency/<model>/<task>.json``: per method the median ms per query over the
rounds (min..max) and the median per-round ratio to zero-shot, and under ``efficiency`` the
efficiency table of :mod:`mimic.evaluation.efficiency` on the first query alone (batch 1, 3 beams,
exactly 20 new tokens): time to first token, forced-20 latency and its ratio to zero-shot, peak
memory during generation, stored state in KiB. These are the latencies the report compares; the
evaluate jobs' own wall times stay in their metrics.json. The pipeline times
the first run seed only (``--seed`` defaults to it): timing does not depend on the data drawn.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, model=True, task=True)


def run(args) -> int:
    from contextlib import contextmanager

    from mimic.commands.stage_inputs import eval_demonstrations, load_stage_model, load_task
    from mimic.data.schema import write_json
    from mimic.errors import MimicError
    from mimic.evaluation import efficiency
    from mimic.evaluation.latency import Variant, side_by_side, summarize
    from mimic.io.checkpoints import read_doc, read_weights
    from mimic.io.logs import setup_logging
    from mimic.methods import detach, from_pretrained
    from mimic.models.generation import encode_prompts
    from mimic.pipeline import paths
    from mimic.pipeline.params import eval_settings, is_trained, method_shots, method_type, run_methods

    log = setup_logging(args.log, "mimic.evaluation.latency")
    params = load_checked(args)
    settings = params["latency"]
    methods = run_methods(params)
    checkpoints = {m: paths.checkpoint_dir(args.model, args.task, m, seed=args.seed)
                   for m in methods if is_trained(params, m)}
    missing = [str(p) for p in checkpoints.values() if not (p / "mimic_config.json").is_file()]
    if missing:
        raise MimicError(f"{missing[0]} holds no checkpoint: train it first (`snakemake all` or `mimic train`)")
    data, icd = load_task(args.task, params, args.seed)
    qids = list(data.tables["eval"]["id"])[: settings["queries"]]
    loaded = load_stage_model(params, args.model)
    queries = [data.query("eval", q) for q in qids]
    zero_inputs = encode_prompts(loaded, data.kind, queries)  # as `mimic evaluate` prompts zero-shot
    shifted_inputs = encode_prompts(loaded, data.kind, queries, role="trained")  # and a trained method
    baseline = next((m for m in methods if method_type(params, m) == "zero-shot"), "zero-shot")

    def installed(path):
        @contextmanager
        def context():
            from_pretrained(loaded.model, path, verify=False)
            try:
                yield
            finally:
                detach(loaded.model)

        return context

    variants = [Variant(baseline, zero_inputs)]
    one_zero = encode_prompts(loaded, data.kind, queries[:1])  # the efficiency table: the first query alone
    one_shifted = encode_prompts(loaded, data.kind, queries[:1], role="trained")
    singles, kinds = [Variant(baseline, one_zero)], {m: method_type(params, m) for m in methods}
    kinds.setdefault(baseline, "zero-shot")
    stored = {baseline: 0}
    for method in methods:
        kind = kinds[method]
        if method == baseline:
            continue
        if kind == "icl":
            shots = method_shots(params, method, args.model)
            shown = eval_demonstrations(params, icd, args.task, method, args.seed)
            demos = [[data.demo(s) for s in shown[q][:shots]] for q in qids]
            variants.append(Variant(method, encode_prompts(loaded, data.kind, queries, demos=demos)))
            one = encode_prompts(loaded, data.kind, queries[:1], demos=demos[:1])
            singles.append(Variant(method, one))
            stored[method] = efficiency.demonstration_kv_bytes(loaded, one, one_zero)
        elif kind == "zero-shot":
            variants.append(Variant(method, zero_inputs))
            singles.append(Variant(method, one_zero))
            stored[method] = 0
        else:
            variants.append(Variant(method, shifted_inputs, installed(checkpoints[method])))
            singles.append(Variant(method, one_shifted, installed(checkpoints[method])))
            path = checkpoints[method]  # read through its sha256 check: a damaged checkpoint stops here in one line
            tensors = read_weights(path, (read_doc(path).get("extra") or {}).get("weights_sha256"))
            stored[method] = sum(t.numel() * t.element_size() for t in tensors.values())  # as saved: same dtypes
    beams = eval_settings(params, args.model)["num_beams"]
    log.info("timing %d method(s) side by side: %d queries in one batch, %d new tokens, %d beam(s), %d rounds",
             len(variants), len(qids), settings["new_tokens"], beams, settings["rounds"])
    times = side_by_side(loaded, variants, settings["new_tokens"], beams, settings["rounds"],
                         on_round=lambda r: log.info("round %d of %d done", r + 1, settings["rounds"]))
    summary = summarize(times, len(qids), baseline)
    log.info("efficiency table: the first query alone, exactly %d new tokens, %d beams, %d rounds",
             efficiency.FORCED_TOKENS, efficiency.FORCED_BEAMS, settings["rounds"])
    table = efficiency.measure(loaded, singles, kinds, stored, settings["rounds"], baseline)
    result = {
        "model": args.model, "task": args.task, "seed": args.seed, "device": str(loaded.device), "baseline": baseline,
        "queries": len(qids), "new_tokens": settings["new_tokens"], "num_beams": beams,
        "rounds": settings["rounds"], "methods": summary, "seconds": times,
        "efficiency": {row["method"]: {k: v for k, v in row.items() if k != "method"} for row in table},
        "efficiency_settings": {"queries": 1, "new_tokens": efficiency.FORCED_TOKENS,
                                "num_beams": efficiency.FORCED_BEAMS, "rounds": settings["rounds"],
                                "peak": efficiency.peak_measure(loaded.device)},
    }
    write_json(paths.latency_file(args.model, args.task), result)
    for name, row in summary.items():
        log.info("%-18s %8.2f ms/query (%.2f..%.2f), %.3fx %s", name, row["ms_per_query"], row["ms_per_query_min"],
                 row["ms_per_query_max"], row[f"ratio_to_{baseline}"], baseline)
    for row in table:
        log.info("%-18s TTFT %.2f ms, forced-%d %.2f ms (%.3fx), peak %.3f MiB, stored %.3f KiB", row["method"],
                 row["ttft_ms"], efficiency.FORCED_TOKENS, row["forced_ms"], row["forced_ratio"], row["peak_mib"],
                 row["stored_kib"])
    return 0
