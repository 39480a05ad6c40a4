"""Training time with the cached teacher vs the online teacher, on the same settings.

Cached: one teacher pass (extraction) + E epochs of student passes reading the cache.
Online: E epochs of (teacher pass + student pass). Needs the task prepared and its ICDs
sampled (`snakemake --cores 4 all` does both).

    .venv/bin/python benchmarks/teacher_modes.py --model mini-idefics2 --task shapes-vqa [--method mimic]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from mimic.commands.stage_inputs import load_stage_model, load_task
from mimic.methods import detach
from mimic.pipeline.params import load_params
from mimic.shift.config import MimicConfig
from mimic.training.loop import train
from mimic.training.teacher import TeacherCache, extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="mini-idefics2")
    parser.add_argument("--task", default="shapes-vqa")
    parser.add_argument("--method", default="mimic")
    args = parser.parse_args()
    params = load_params(args.params)
    method = params["methods"][args.method]
    hp, teacher = method["train"], params["teacher"]
    data, icd = load_task(args.task, params)
    loaded = load_stage_model(params, args.model)
    config = MimicConfig(**method.get("shift", {}))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract(loaded, data, icd, tmp, teacher, {"model": args.model, "task": args.task})
        extraction = time.perf_counter() - t0
        t0 = time.perf_counter()
        train(loaded, data, icd, config, hp, teacher["target"], TeacherCache(tmp))
        cached = time.perf_counter() - t0
        detach(loaded.model)
    t0 = time.perf_counter()
    train(loaded, data, icd, config, hp, teacher["target"], None)
    online = time.perf_counter() - t0
    detach(loaded.model)
    n, draws, epochs = len(icd["train"]), icd["draws"], hp["epochs"]
    print(f"{args.model} / {args.task} / {args.method}: {n} training queries, {draws} draws, {epochs} epochs")
    print(f"cached : extraction {extraction:7.1f} s ({n * draws} teacher samples) + training {cached:7.1f} s "
          f"= {extraction + cached:7.1f} s")
    print(f"online : training {online:7.1f} s (a teacher pass per batch, every epoch)")
    print(f"online / cached (incl. extraction) = {online / (extraction + cached):.2f}x")


if __name__ == "__main__":
    main()
