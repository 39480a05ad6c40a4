"""Per-query generation latency of the zero-shot model with and without MimIC attached.

Both generate exactly ``--new-tokens`` tokens (min = max), so the comparison measures the
cost of the shift (log Z2 and the shift itself at every layer and step), not answer length.

    .venv/bin/python benchmarks/shift_overhead.py [--model models/mini-idefics2] [--batch 32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import mimic
from mimic.data import synthetic as syn
from mimic.inference import encode_prompts
from mimic.models import load_model


def timed_generate(loaded, inputs, new_tokens: int, repeats: int) -> float:
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            loaded.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=loaded.pad_token_id)
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first run warms up
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/mini-idefics2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loaded = load_model("mini", args.model)
    rng = random.Random(0)
    queries = [(syn.render(syn.sample_scene(rng)), "What do you see?") for _ in range(args.batch)]
    inputs = encode_prompts(loaded, "vqa", queries)
    base = timed_generate(loaded, inputs, args.new_tokens, args.repeats)
    mimic.attach(loaded.model)
    shifted = timed_generate(loaded, inputs, args.new_tokens, args.repeats)
    mimic.detach(loaded.model)
    per = 1000 / args.batch
    threads = torch.get_num_threads()
    print(f"batch {args.batch}, {args.new_tokens} new tokens, device {loaded.device}, {threads} threads")
    print(f"zero-shot        : {base * per:7.2f} ms/query")
    print(f"zero-shot + MimIC: {shifted * per:7.2f} ms/query  ({shifted / base:.2f}x)")


if __name__ == "__main__":
    main()
