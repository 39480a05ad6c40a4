"""mimic pretrain-mini: (re)train the miniature Idefics2 model on the synthetic suite from its seed."""

from __future__ import annotations


def add_arguments(parser) -> None:
    from mimic.mini.pretrain import DEFAULTS

    parser.add_argument("--out", default="models/mini-idefics2", help="output model directory")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value}")
    parser.add_argument("--log", default=None, help="log file (results/logs/...)")


def run(args) -> int:
    from mimic.logs import setup_logging
    from mimic.mini.pretrain import DEFAULTS, pretrain

    log = setup_logging(args.log, "mimic.pretrain")
    meta = pretrain(args.out, **{k: getattr(args, k) for k in DEFAULTS})
    log.info("pretrained in %.0fs, final loss %.4f, sha256 %s", meta["seconds"], meta["final_loss"],
             meta["sha256"]["model.safetensors"])
    return 0
