"""Training-step time of every method on the miniature model, side by side, and its parameter counts.

    .venv/bin/python benchmarks/method_steps.py [--steps 10] [--batch 16] [--task shapes-vqa]

One batch of the synthetic task (zero-shot prompts with answers, as training sees them) goes
through forward (the method's loss terms; the teacher targets are made up, so no cache is
needed) and backward, ``--steps`` times per method after one warm-up step; the methods are
interleaved round by round so that a busy machine slows them alike. Prints the median wall
time per step and the process CPU time per step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mimic
from mimic.data.batches import TaskData, student_batch
from mimic.data.loaders import prepare_task
from mimic.data.schema import SPLITS, read_table
from mimic.methods.hificl import HificlConfig
from mimic.methods.i2cl import I2clConfig
from mimic.methods.live import LiveConfig
from mimic.methods.lora import LoraConfig
from mimic.methods.mimic_lora import MimicLoraConfig
from mimic.models.loading import load_model
from mimic.shift.config import MimicConfig
from mimic.training.loop import TeacherTargets, objective_terms

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "mimic": (MimicConfig(), {"align": 1.0, "ce": 0.5}),
    "live": (LiveConfig(), {"kl": 1.0, "ce": 0.5}),
    "i2cl": (I2clConfig(), {"ce": 1.0}),
    "hificl": (HificlConfig(), {"ce": 1.0}),
    "lora": (LoraConfig(), {"ce": 1.0}),
    "mimic-lora": (MimicLoraConfig(), {"align": 1.0, "ce": 0.5}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--task", default="shapes-vqa", choices=["shapes-vqa", "shapes-caption"])
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model("mini", str(REPO / "models" / "mini-idefics2"))
    with tempfile.TemporaryDirectory() as tmp:
        kind = "vqa" if args.task == "shapes-vqa" else "caption"
        extra = {"attribute": "color"} if kind == "vqa" else {"style": "there-are"}
        spec = {"name": args.task, "loader": "synthetic", "kind": kind, "n_train": args.batch, "n_support": 8,
                "n_eval": 2, **extra}
        prepare_task(spec, Path(tmp), seed=0)
        tables = {s: read_table(Path(tmp) / f"{s}.parquet") for s in SPLITS}
        data = TaskData(kind, tables)
        qids = list(tables["train"]["id"])
        inputs, labels, lengths = student_batch(loaded, data, "train", qids)
    shapes = loaded.adapter.shapes(loaded.model)
    g = torch.Generator().manual_seed(0)
    teacher = TeacherTargets(
        states=[torch.randn(shapes["num_layers"], n, shapes["hidden_size"], generator=g)
                for n in (inputs["attention_mask"].sum(1) - 1).tolist()],
        logits=[torch.topk(torch.log_softmax(torch.randn(a, loaded.model.config.text_config.vocab_size,
                                                         generator=g), -1), 64) for a in lengths],
    )
    teacher.logits = [(t.values, t.indices) for t in teacher.logits]
    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    counts = {}
    for round_ in range(args.steps + 1):
        for name, (config, weights) in METHODS.items():
            module = mimic.attach(loaded.model, config)
            module.train()
            counts[name] = mimic.count_parameters(module.config)["trainable"]
            start, start_cpu = time.perf_counter(), time.process_time()
            loss, _ = objective_terms(loaded.model, inputs, labels, lengths, "mlp", weights, teacher)
            loss.backward()
            if round_:  # the first round warms up
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
            mimic.detach(loaded.model)
    print(f"{args.task}: batch {args.batch}, sequence {inputs['input_ids'].shape[1]}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':12s} {'trainable':>10s} {'wall ms/step':>13s} {'cpu ms/step':>12s}")
    for name in METHODS:
        print(f"{name:12s} {counts[name]:>10,} {1000 * statistics.median(wall[name]):>13.1f} "
              f"{1000 * statistics.median(cpu[name]):>12.1f}")


if __name__ == "__main__":
    main()
