"""The ``mimic`` command line: every pipeline stage is one subcommand."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace


def _info(args) -> int:
    from mimic.attach import count_parameters
    from mimic.config import MimicConfig
    from mimic.shapes import KNOWN_SHAPES

    if args.model in KNOWN_SHAPES:
        shapes = KNOWN_SHAPES[args.model]
    else:
        import torch
        from transformers import AutoConfig

        from mimic.adapters import adapter_for
        from mimic.models import model_class

        config = AutoConfig.from_pretrained(args.model)
        with torch.device("meta"):
            model = model_class(config)(config)
        shapes = {"model_type": model.config.model_type, **adapter_for(model).shapes(model)}
    base = MimicConfig(
        model_type=shapes["model_type"],
        num_layers=shapes["num_layers"],
        num_heads=shapes["num_heads"],
        head_dim=shapes["head_dim"],
    )
    print(f"{args.model}: {shapes['num_layers']} layers x {shapes['num_heads']} heads x head_dim {shapes['head_dim']}")
    rows = [
        ("MimIC (default)", base),
        ("  per-layer vector", replace(base, per_head=False)),
        ("  constant magnitude", replace(base, query_dependent=False)),
    ]
    for name, cfg in rows:
        c = count_parameters(cfg)
        print(f"{name:22s} v={c['v']:>9,}  magnitude(w,b)={c['magnitude']:>9,}  total={c['total']:>9,}")
    live = shapes["num_layers"] * shapes["hidden_size"] + shapes["num_layers"]
    print(f"{'LIVE (for reference)':22s} total={live:>9,}")
    return 0


def _demo(args) -> int:
    from mimic.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="shapes and MimIC parameter counts of a model")
    p.add_argument("--model", default="idefics2-8b-base", help="a known model name, a hub id or a local path")
    p.set_defaults(func=_info)
    p = sub.add_parser("demo", help="attach MimIC to tiny models and run the exactness check")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
