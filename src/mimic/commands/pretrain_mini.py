"""mimic pretrain-mini: (re)train the miniature Idefics2 model on the synthetic suite from its seed.

    mimic pretrain-mini --out models/mini-idefics2                   # the defaults
    mimic pretrain-mini --from-record models/mini-idefics2/pretrain.json --out results/mini-idefics2 \\
        --verify models/mini-idefics2/pretrain.json                  # regenerate the shipped weights, check sha256
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from mimic.tiny.mini.pretrain import DEFAULTS

    parser.add_argument("--out", default="models/mini-idefics2", help="output model directory")
    parser.add_argument("--from-record", default=None, help="take the settings from a pretrain.json")
    parser.add_argument("--verify", default=None, help="fail unless the weights' sha256 equals this pretrain.json's")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None, help=f"default {value}")
    parser.add_argument("--log", default=None, help="log file (results/logs/...)")


def run(args) -> int:
    import json
    from pathlib import Path

    from mimic.io.logs import setup_logging
    from mimic.tiny.mini.pretrain import DEFAULTS, WEIGHTS, pretrain

    log = setup_logging(args.log, "mimic.pretrain")
    settings = json.loads(Path(args.from_record).read_text())["settings"] if args.from_record else {}
    settings.update({k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None})
    meta = pretrain(args.out, **settings)
    digest = meta["sha256"][WEIGHTS]
    log.info("pretrained in %.0fs, final loss %.4f, sha256 %s", meta["seconds"], meta["final_loss"], digest)
    if args.verify:
        expected = json.loads(Path(args.verify).read_text())["sha256"][WEIGHTS]
        if digest != expected:
            log.error("the weights differ from %s (sha256 %s, expected %s): same seed, other torch build or "
                      "thread count", args.verify, digest, expected)
            return 1
        log.info("bit-for-bit identical to %s", args.verify)
    return 0
