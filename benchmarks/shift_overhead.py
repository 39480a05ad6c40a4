"""MimIC / zero-shot generation time on the miniature model, measured side by side.

For every batch size and decoding mode (greedy, 3 beams) the unpatched model and the
same model with MimIC attached generate exactly ``--new-tokens`` tokens (min = max, so
the comparison is the cost of the shift, not of answer length) on the same batch, in one
process: one untimed warm-up of each, then ``--pairs`` interleaved pairs (zero-shot,
MimIC, zero-shot, MimIC, ...). The figure is the median of the per-pair ratios; the
spread (min..max over pairs) says how noisy the machine was. On CPU the ratio is given for
wall time and for the process's CPU time (with one thread, CPU time leaves out the time
the process waited for a core that other jobs held, so it is the steadier figure on a
shared machine).

    .venv/bin/python benchmarks/shift_overhead.py [--model models/mini-idefics2] [--batches 1 8 32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import mimic
from mimic.data import synthetic as syn
from mimic.models.generation import encode_prompts
from mimic.models.loading import load_model


def timed_generate(loaded, inputs, new_tokens: int, beams: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one ``generate`` of exactly ``new_tokens`` tokens."""
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams,
                                    do_sample=False, eos_token_id=loaded.stop_token_ids,
                                    pad_token_id=loaded.pad_token_id)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens, "generated length differs"
    return seconds, cpu


def side_by_side(loaded, shift, inputs, new_tokens: int, beams: int, pairs: int) -> dict:
    """Interleaved zero-shot / MimIC timings of the same batch: medians and the per-pair ratios."""

    def run(with_mimic: bool) -> tuple[float, float]:
        if with_mimic:
            mimic.attach(loaded.model, shift.config, shift=shift, verify=False)
        try:
            return timed_generate(loaded, inputs, new_tokens, beams)
        finally:
            if with_mimic:
                mimic.detach(loaded.model)

    run(False), run(True)  # warm-up of both (allocator, thread pools, lazy inits)
    zero, shifted = [], []
    for _ in range(pairs):
        zero.append(run(False))
        shifted.append(run(True))
    ratios = [m[0] / z[0] for z, m in zip(zero, shifted, strict=True)]
    cpu_ratios = [m[1] / z[1] for z, m in zip(zero, shifted, strict=True)]
    return {"zero": statistics.median(z for z, _ in zero), "mimic": statistics.median(m for m, _ in shifted),
            "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
            "cpu_ratio": statistics.median(cpu_ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/mini-idefics2")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("mini", args.model)
    shift = mimic.attach(loaded.model)  # the default MimicConfig: every layer, per head, query-dependent
    mimic.detach(loaded.model)
    rng = random.Random(0)
    print(f"{args.model}: {args.new_tokens} new tokens (min = max), device {loaded.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; {args.pairs} interleaved pairs after a "
          "warm-up, median of per-pair ratios")
    print(f"{'batch':>5} {'decoding':>9} {'zero-shot ms':>13} {'MimIC ms':>9} {'MimIC/zero':>10} {'pair range':>13} "
          f"{'CPU-time ratio':>14}")
    for batch in args.batches:
        queries = [(syn.render(syn.sample_scene(rng)), "What do you see?") for _ in range(batch)]
        inputs = encode_prompts(loaded, "vqa", queries)
        for beams in args.beams:
            r = side_by_side(loaded, shift, inputs, args.new_tokens, beams, args.pairs)
            mode = "greedy" if beams == 1 else f"{beams} beams"
            print(f"{batch:>5} {mode:>9} {r['zero'] * 1000:>13.1f} {r['mimic'] * 1000:>9.1f} {r['ratio']:>9.3f}x "
                  f"{r['low']:>6.3f}..{r['high']:.3f} {r['cpu_ratio']:>13.3f}x", flush=True)


if __name__ == "__main__":
    main()
