"""mimic validate: check all of params.yaml, then write each stage's settings file.

The first stage of the pipeline (dvc.yaml's ``validate``; the Snakefile does the same when it is
read): schema, cross-references, finite numbers, the shots against the demonstration pools and
the local model directories, the external tools scoring needs (Java for caption metrics), all before any other
stage starts or removes an output. Then
``results/settings/<stage>/...json`` (mimic.pipeline.stages) is rewritten where its content changed, so
only the stages whose settings changed rerun. Does not import torch: fails within a second.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments


def add_arguments(parser) -> None:
    add_stage_arguments(parser)


def run(args) -> int:
    from mimic.io.logs import setup_logging
    from mimic.pipeline.params import check_run_tools, load_params
    from mimic.pipeline.stages import write_settings

    log = setup_logging(args.log, "mimic.validate")
    params = load_params(args.params)
    check_run_tools(params)
    written = write_settings(params)
    log.info("%s is valid; %d settings file(s) changed%s", args.params, len(written),
             "".join(f"\n  {p}" for p in written))
    return 0
