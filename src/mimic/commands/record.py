"""mimic record: write the pipeline outputs that are up to date into dvc.lock and DVC's cache.

Run by the Snakefile after every successful `snakemake` run (onsuccess), or by hand. Afterwards
`dvc status` is clean for everything Snakemake made, `dvc checkout` can bring this version back
later and `dvc push` shares it. Stages whose outputs are stale or missing are named and left out.
Does nothing (and says so) outside a DVC repository.
"""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments


def add_arguments(parser) -> None:
    add_stage_arguments(parser)


def run(args) -> int:
    from mimic.io.logs import setup_logging
    from mimic.pipeline.dvc import record
    from mimic.pipeline.params import load_params

    log = setup_logging(args.log, "mimic.pipeline.dvc")
    params = load_params(args.params)
    result = record(".", params)
    if result is None:
        log.info("no DVC repository here (`dvc init` makes one): nothing recorded")
        return 0
    log.info("recorded in dvc.lock and DVC's cache: %d stage(s) %s; %d already recorded",
             len(result.committed), ", ".join(result.committed) or "", len(result.unchanged))
    for stage, why in result.stale.items():
        log.info("not recorded: %s (%s)", stage, why)
    if lock_uncommitted("."):
        log.info("dvc.lock is not committed: `git add -A && git commit` makes this run the baseline that "
                 "`dvc exp run` starts from and `dvc exp show` compares with")
    return 0


def lock_uncommitted(root: str) -> bool:
    """Whether dvc.lock differs from the git commit (untracked or modified); False outside a git work tree."""
    from mimic.io.provenance import git_output

    return bool(git_output(root, "status", "--porcelain", "--", "dvc.lock"))
