"""The ``mimic`` command line: every pipeline stage is one subcommand.

Subcommands live in ``mimic.commands.<name>`` and are imported only when called, so
``mimic report`` and ``mimic validate`` do not pay for importing torch.

Expected failures (:class:`mimic.errors.MimicError`, a missing file, an OS error such as a model
directory that cannot be read) end as one line on stderr, ``mimic <command>: error: <message>``,
and exit status 2; the line also goes to the stage's log file. ``--debug`` (anywhere on the command
line) or ``MIMIC_DEBUG=1`` shows the traceback instead. Anything else is a bug and keeps its
traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

COMMANDS = {
    "info": ("info", "shapes and MimIC parameter counts of a model"),
    "demo": ("demo", "attach MimIC to tiny models and run the exactness check"),
    "preset": ("preset", "lay presets (presets/<name>.yaml) over params.yaml: the paper's runs, protocols"),
    "validate": ("validate", "check all of params.yaml; write each stage's settings under results/settings/"),
    "prepare": ("prepare", "a task's splits -> normalized tables under data/"),
    "embed": ("embed", "pooled image embeddings of a task for RICES (icd.embedding)"),
    "sample-icd": ("sample_icd", "seeded demonstration ids for every query"),
    "extract-teacher": ("extract_teacher", "cache the ICL teacher's hidden states"),
    "merge-teacher": ("merge_teacher", "join the parts of a split teacher extraction (teacher.jobs)"),
    "train": ("train", "train a method (MimIC) against the cached teacher"),
    "evaluate": ("evaluate", "generate, score, time a method"),
    "merge-evaluate": ("merge_evaluate", "join and score the parts of a split evaluation (eval.jobs)"),
    "latency": ("latency", "time every method of the run side by side on one batch"),
    "report": ("report", "summary table and plots over models x tasks x methods"),
    "record": ("record", "record the up-to-date pipeline outputs in dvc.lock and DVC's cache"),
    "pretrain-mini": ("pretrain_mini", "pretrain the miniature Idefics2 model on the synthetic suite"),
}
EXIT_EXPECTED = 2  # an expected failure (bad input, damaged file, diverged training)


def _usage() -> str:
    lines = ["usage: mimic [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:16s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from mimic.errors import MimicError

    return (MimicError, OSError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace runs, newlines included, become one space)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MIMIC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
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
    args = parser.parse_args(argv[1:])
    start = time.monotonic()
    try:
        code = module.run(args)
        _log_usage(name, start)
        return code
    except _expected_errors() as exc:
        if debug:
            raise
        message = one_line(exc)
        _close_progress_bars()
        from mimic.io.logs import log_to_files

        log_to_files(f"error: {message}")
        print(f"mimic {name}: error: {message}", file=sys.stderr)
        return EXIT_EXPECTED
    except KeyboardInterrupt:
        print(f"mimic {name}: interrupted", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """End open tqdm bars, so that the error starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


def _log_usage(name: str, start: float) -> None:
    """The stage's wall time, CPU time (its own and its finished children's, e.g. the caption metrics'
    java: on a shared machine the CPU time says what the wall time would be on idle cores) and peak
    memory, in its log (the same under Snakemake, DVC or by hand)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak_mb = own.ru_maxrss / 1024  # KiB on Linux
    logging.getLogger("mimic").info("mimic %s done in %.1f s (CPU %.1f s), peak memory %.0f MB", name,
                                    time.monotonic() - start, cpu, peak_mb)


if __name__ == "__main__":
    sys.exit(main())
