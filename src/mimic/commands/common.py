"""Arguments and set-up shared by the stage commands."""

from __future__ import annotations


def add_stage_arguments(parser, model: bool = False, task: bool = False, method: bool = False) -> None:
    parser.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    if model:
        parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    if task:
        parser.add_argument("--task", required=True, help="a key of `tasks` in params.yaml")
    if method:
        parser.add_argument("--method", required=True, help="a key of `methods` in params.yaml")
    parser.add_argument("--log", default=None, help="log file (results/logs/...)")


def load_checked(args) -> dict:
    """Validated params, with the names given on the command line checked against them."""
    from mimic.params import ParamsError, load_params

    params = load_params(args.params)
    for key, section in (("model", "models"), ("task", "tasks"), ("method", "methods")):
        name = getattr(args, key, None)
        if name is not None and name not in params[section]:
            known = sorted(params[section])
            raise ParamsError(f"{args.params}: --{key} {name!r} is not in `{section}`; known: {known}")
    return params


def add_part_argument(parser, what: str) -> None:
    parser.add_argument("--part", default=None, type=parse_part, metavar="I/N",
                        help=f"run only part I (1..N) of {what} split into N jobs; `mimic merge-...` joins the parts")


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) -> (I - 1, N)."""
    import argparse

    try:
        part, jobs = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 2/4)") from None
    if not 1 <= part <= jobs:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be in 1..N")
    return part - 1, jobs
