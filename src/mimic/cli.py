"""The ``mimic`` command line: every pipeline stage is one subcommand.

Subcommands live in ``mimic.commands.<name>`` and are imported only when called, so
``mimic report`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "info": ("info", "shapes and MimIC parameter counts of a model"),
    "demo": ("demo", "attach MimIC to tiny models and run the exactness check"),
    "prepare": ("prepare", "a task's splits -> normalized tables under data/"),
    "sample-icd": ("sample_icd", "seeded demonstration ids for every query"),
    "extract-teacher": ("extract_teacher", "cache the ICL teacher's hidden states"),
    "train": ("train", "train a method (MimIC) against the cached teacher"),
    "evaluate": ("evaluate", "generate, score, time a method"),
    "report": ("report", "summary table and plots over models x tasks x methods"),
    "pretrain-mini": ("pretrain_mini", "pretrain the miniature Idefics2 model on the synthetic suite"),
}


def _usage() -> str:
    lines = ["usage: mimic <command> [options]", "", "commands:"]
    lines += [f"  {name:16s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"mimic: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(f"mimic.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"mimic {name}", description=help_)
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
