"""Forward time of the miniature model on 8-shot prompts, batch 32 (issue target: well under a second on CPU).

    .venv/bin/python benchmarks/mini_forward.py [--model models/mini-idefics2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from mimic.data import synthetic as syn
from mimic.models.generation import encode_prompts
from mimic.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/mini-idefics2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("mini", args.model)
    rng = random.Random(0)

    def example():
        scene = syn.sample_scene(rng)
        return syn.render(scene), "What do you see?", scene.color

    queries = [example()[:2] for _ in range(args.batch)]
    demos = [[example() for _ in range(args.shots)] for _ in range(args.batch)]
    t0 = time.perf_counter()
    inputs = encode_prompts(loaded, "vqa", queries, demos=demos)
    encode_s = time.perf_counter() - t0
    times = []
    with torch.no_grad():
        loaded.model(**inputs)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            loaded.model(**inputs)
            times.append(time.perf_counter() - t0)
    print(f"{args.shots}-shot prompts, batch {args.batch}, {inputs['input_ids'].shape[1]} tokens, "
          f"{inputs['pixel_values'].shape[1]} images per row, {torch.get_num_threads()} threads")
    print(f"processor (tokens + images): {encode_s:.3f} s")
    print(f"forward: median {statistics.median(times):.3f} s, min {min(times):.3f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
