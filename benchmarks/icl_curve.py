"""The ICL curve of a synthetic task: zero-shot, then k = 1, 2, 4, 8 random and RICES demonstrations.

    .venv/bin/python benchmarks/icl_curve.py                        # every synthetic task in run.tasks
    .venv/bin/python benchmarks/icl_curve.py --tasks shapes-names-vqa --n-eval 100
    .venv/bin/python benchmarks/icl_curve.py --seeds 0 1                 # mean and spread over two seeds

For each task: prepares its splits in a temporary directory (``prepare_task``, the params'
seed), draws random demonstrations as the pipeline does (``sample_icds``: the first k of
one 8-shot draw per query) and RICES demonstrations (the k support images nearest to the
query by the model's pooled vision embedding, most similar first, as ``mimic sample-icd``), generates greedily as
``mimic evaluate`` does (``predict``, ``eval.max_new_tokens``) and scores with the task
metric. Also prints, per k, the retrieval precision (share of the k demonstrations whose
image has the query's value of the task attribute) and the coverage (share of queries
with at least one such demonstration), for random and RICES demonstrations.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # one line per k instead of progress bars

import torch  # noqa: E402

from mimic.data import rices
from mimic.data import synthetic as syn
from mimic.data.batches import TaskData
from mimic.data.icd import sample_icds
from mimic.data.loaders import prepare_task
from mimic.data.schema import SPLITS, open_image, read_table
from mimic.evaluation.predict import predict
from mimic.metrics import HEADLINE, score
from mimic.models.loading import load_model
from mimic.pipeline.params import load_params, run_seeds, seeded


def label_attributes(spec: dict) -> list[str]:
    """The attributes whose values decide the answer: the asked one (VQA) or the renamed ones (captions)."""
    if spec["kind"] == "vqa":
        return [spec["attribute"]]
    return list(spec.get("nonce", [])) or ["color"]


def coverage(demo_ids: dict[str, list[str]], labels: dict[str, str]) -> tuple[float, float]:
    """(precision %, coverage %): demonstrations sharing the query's label, queries with at least one."""
    same = [[labels[d] == labels[q] for d in ids] for q, ids in demo_ids.items()]
    precision = 100.0 * sum(map(sum, same)) / max(1, sum(map(len, same)))
    return precision, 100.0 * sum(map(any, same)) / max(1, len(same))


def run_task(loaded, params: dict, task: str, n_eval: int | None, shots: list[int], batch_size: int,
             seed: int) -> dict[str, float]:
    """Print the curve of ``task`` on run seed ``seed`` (its data and demonstration seeds, as the pipeline's
    seed-<s> replicate: mimic.pipeline.params.seeded); return its scores by name."""
    params = seeded(params, seed)
    spec = {**params["tasks"][task], "name": task}
    if spec.get("loader") != "synthetic":
        raise SystemExit(f"{task}: not a synthetic task (loader {spec.get('loader')!r})")
    if n_eval:
        spec["n_eval"] = n_eval
    kind = spec["kind"]
    ev = params["eval"]
    with tempfile.TemporaryDirectory() as tmp:
        prepare_task(spec, Path(tmp), seed=params["seed"])
        tables = {s: read_table(Path(tmp) / f"{s}.parquet") for s in SPLITS}
    data = TaskData(kind, tables)
    scenes = {ex.id: ex.scene for examples in syn.draw_task(spec, params["seed"]).values() for ex, _ in examples}
    attributes = label_attributes(spec)
    labels = {uid: tuple(scene.attribute(a) for a in attributes) for uid, scene in scenes.items()}
    qids = list(tables["eval"]["id"])
    support_ids = list(tables["support"]["id"])
    icd = sample_icds(task, tables["train"], tables["support"], tables["eval"], shots=max(shots), draws=1,
                      seed=params["icd"]["seed"])
    t0 = time.perf_counter()
    support_emb = rices.embed_images(loaded, [open_image(r) for r in tables["support"]["image"]])
    query_emb = rices.embed_images(loaded, [open_image(r) for r in tables["eval"]["image"]])
    neighbours = rices.nearest(query_emb, support_emb, max(shots)).tolist()
    embed_s = time.perf_counter() - t0

    def run(demo_ids, k):
        rows = predict(loaded, data, qids, demo_ids, k, batch_size, ev["max_new_tokens"][kind], ev["num_beams"],
                       desc=f"{task} {k}-shot")
        return score(kind, [r["prediction"] for r in rows], [r["answers"] for r in rows])[HEADLINE[kind]], rows

    metric = HEADLINE[kind]
    print(f"\n== {task}, seed {seed} ({kind}; attribute(s) {', '.join(attributes)}; names {spec.get('nonce', [])}; "
          f"noise {spec.get('noise', 0)}; {len(qids)} eval queries, {len(support_ids)} support; "
          f"embedding {support_emb.shape[1]}-d in {embed_s:.1f} s)")
    zero, zero_rows = run(None, 0)
    scores = {"zero-shot": zero}
    print(f"zero-shot            {metric} {zero:6.2f}   e.g. {zero_rows[0]['prediction']!r} "
          f"(reference {zero_rows[0]['answers'][0]!r})")
    print(f"{'k':>3} | {'random ' + metric:>15} {'precision':>9} {'coverage':>8} | "
          f"{'RICES ' + metric:>15} {'precision':>9} {'coverage':>8}")
    for k in shots:
        random_ids = {q: icd["eval"][q][:k] for q in qids}
        rices_ids = {q: [support_ids[j] for j in row[:k]] for q, row in zip(qids, neighbours, strict=True)}
        r_score, _ = run(icd["eval"], k)
        n_score, _ = run(rices_ids, k)
        (r_prec, r_cov), (n_prec, n_cov) = coverage(random_ids, labels), coverage(rices_ids, labels)
        print(f"{k:>3} | {r_score:15.2f} {r_prec:9.1f} {r_cov:8.1f} | {n_score:15.2f} {n_prec:9.1f} {n_cov:8.1f}",
              flush=True)
        scores.update({f"random-{k}": r_score, f"rices-{k}": n_score, f"rices-precision-{k}": n_prec})
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="mini-idefics2", help="a key of params.yaml models, or a model directory")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: the synthetic tasks in run.tasks")
    parser.add_argument("--n-eval", type=int, default=None, help="evaluation queries (default: the task's n_eval)")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="run seeds (default: run.seeds), each the pipeline's seed-<s> replicate; several: "
                             "mean and spread")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = load_params(args.params)
    if args.model in params["models"]:
        entry = params["models"][args.model]
        loaded = load_model(args.model, entry.get("path") or entry["hub_id"], entry.get("dtype", "float32"))
    else:
        loaded = load_model("mini", args.model)
    tasks = args.tasks or [t for t in params["run"]["tasks"] if params["tasks"][t].get("loader") == "synthetic"]
    for task in tasks:
        if task not in params["tasks"]:
            raise SystemExit(f"--tasks: unknown task {task!r}; known: {', '.join(params['tasks'])}")
        start = time.perf_counter()
        seeds = args.seeds if args.seeds is not None else run_seeds(params)
        runs = [run_task(loaded, params, task, args.n_eval, sorted(args.shots), args.batch_size, s) for s in seeds]
        if len(runs) > 1:
            print(f"-- {task}: mean (min .. max) over seeds {seeds}")
            for name in runs[0]:
                values = [r[name] for r in runs]
                print(f"   {name:20s} {sum(values) / len(values):7.2f} ({min(values):.2f} .. {max(values):.2f})")
        print(f"({task}: {time.perf_counter() - start:.0f} s on {args.threads} threads)")


if __name__ == "__main__":
    main()
