"""Arguments and set-up shared by the stage commands."""

from __future__ import annotations


def add_stage_arguments(parser, model: bool = False, task: bool = False, method: bool = False) -> None:
    parser.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    if model:
        parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    if task:
        parser.add_argument("--task", required=True, help="a key of `tasks` in params.yaml")
        parser.add_argument("--seed", type=int, default=None,
                            help="the run seed (run.seeds; default: the first): which replicate of the run")
    if method:
        parser.add_argument("--method", required=True, help="a key of `methods` in params.yaml")
    parser.add_argument("--log", default=None, help="log file (results/logs/...)")


def load_checked(args) -> dict:
    """Validated params, with the names given on the command line checked against them; for a stage
    of one task, the params of its run seed (``--seed``, default the first of run.seeds: mimic.pipeline.params.seeded),
    and ``args.seed`` set to it."""
    from mimic.pipeline.params import ParamsError, load_params, run_seeds, seeded

    params = load_params(args.params)
    for key, section in (("model", "models"), ("task", "tasks"), ("method", "methods")):
        name = getattr(args, key, None)
        if name is not None and name not in params[section]:
            known = sorted(params[section])
            raise ParamsError(f"{args.params}: --{key} {name!r} is not in `{section}`; known: {known}")
    if not hasattr(args, "seed"):
        return params
    if args.seed is None:
        args.seed = run_seeds(params)[0]
    if args.seed not in run_seeds(params):
        raise ParamsError(f"{args.params}: --seed {args.seed} is not in run.seeds = {run_seeds(params)}; "
                          "add it there (each seed's settings and outputs are declared from that list)")
    return seeded(params, args.seed)


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
