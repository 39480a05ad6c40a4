"""Peak memory of a long prefill with MimIC attached vs the unpatched model (CPU).

How the peak is measured: every tensor allocation and free that goes through PyTorch's
CPU allocator during the prefill is recorded by ``torch.profiler`` (``profile_memory``),
with its size and time stamp; replaying them in order gives the live tensor bytes at
every instant, and the peak is their maximum above what was live before the forward.
That is exact for tensor memory, unlike RSS (which the allocator's caching, the heap's
reuse of freed pages and the loading of the model blur). Each measurement runs in a
fresh subprocess; its ``ru_maxrss`` growth is printed beside it as a cross-check.

The prefill is what ``generate`` runs first: one forward over the whole prompt with a
cache, computing the logits of the last position only.

    .venv/bin/python benchmarks/prefill_memory.py [--tokens 4096] [--model models/mini-idefics2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

MODES = ("unpatched", "mimic")


def allocation_peak(prof) -> int:
    """Peak live CPU tensor bytes during a profiled region, above those live at its start."""
    from torch._C._profiler import _EventType

    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def measure(model_path: str, mode: str, tokens: int, padded: bool) -> dict:
    """One prefill in this process: peak tensor bytes (profiler) and ru_maxrss growth."""
    from torch.profiler import ProfilerActivity, profile

    import mimic
    from mimic.models.loading import load_model

    torch.set_num_threads(1)
    loaded = load_model("mini", model_path)
    model = loaded.model
    if mode == "mimic":
        mimic.attach(model)
    vocab = model.config.get_text_config().vocab_size
    special = {loaded.pad_token_id, model.config.image_token_id, *loaded.stop_token_ids}
    ordinary = torch.tensor([i for i in range(vocab) if i not in special])
    ids = ordinary[torch.randint(0, len(ordinary), (1, tokens), generator=torch.Generator().manual_seed(0))]
    mask = torch.ones_like(ids)
    if padded:  # left padding: sdpa gets a boolean [1, 1, q, k] mask instead of is_causal
        ids[:, :16], mask[:, :16] = loaded.pad_token_id, 0
    with torch.no_grad():
        model(input_ids=ids[:, :32], attention_mask=mask[:, :32], use_cache=True, logits_to_keep=1)  # warm-up
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_bytes": allocation_peak(prof), "maxrss_growth_bytes": (rss_after - rss_before) * 1024}


def in_subprocess(model_path: str, mode: str, tokens: int, padded: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", model_path, "--tokens", str(tokens)]
    if padded:
        cmd.append("--padded")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/mini-idefics2")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--padded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.child, args.tokens, args.padded)))
        return
    mb = 2**20
    print(f"{args.model}: prefill of {args.tokens} tokens, batch 1, logits of the last position, fresh process each; "
          "peak = live CPU tensor bytes above the start (torch.profiler allocation events)")
    print(f"{'mask':>22} {'unpatched MiB':>14} {'MimIC MiB':>10} {'MimIC/unpatched':>16}   ru_maxrss growth (MiB)")
    for padded in (False, True):
        got = {mode: in_subprocess(args.model, mode, args.tokens, padded) for mode in MODES}
        base, shifted = got["unpatched"], got["mimic"]
        label = "padding (boolean mask)" if padded else "none (is_causal)"
        print(f"{label:>22} {base['peak_bytes'] / mb:>14.1f} {shifted['peak_bytes'] / mb:>10.1f} "
              f"{shifted['peak_bytes'] / base['peak_bytes']:>15.3f}x   "
              f"{base['maxrss_growth_bytes'] / mb:.0f} vs {shifted['maxrss_growth_bytes'] / mb:.0f}", flush=True)


if __name__ == "__main__":
    main()
