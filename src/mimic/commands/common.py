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
