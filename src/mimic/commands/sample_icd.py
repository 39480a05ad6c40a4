"""mimic sample-icd: seeded demonstration ids for every training and evaluation query."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, task=True)


def read_embeddings(task: str, tables: dict, seed: int) -> dict:
    """The task's RICES embeddings (``mimic embed``), checked against the split tables."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mimic.errors import IntegrityError, MimicError
    from mimic.pipeline import paths

    path = paths.embeddings_file(task, seed=seed)
    if not path.is_file():
        raise MimicError(f"{path} is missing: run `mimic embed --task {task} --seed {seed}` first")
    try:
        embeddings = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise IntegrityError(f"{path}: unreadable ({exc}); rerun `mimic embed --task {task} --seed {seed}`") from None
    for split, table in tables.items():
        if split not in embeddings or len(embeddings[split]) != len(table):
            raise IntegrityError(f"{path}: no {len(table)} embeddings for the {split} split; "
                                 f"rerun `mimic embed --task {task} --seed {seed}`")
    return embeddings


def run(args) -> int:
    from mimic.data.icd import sample_icds
    from mimic.data.schema import read_table, write_json
    from mimic.io.logs import setup_logging
    from mimic.pipeline import paths

    log = setup_logging(args.log, "mimic.sample_icd")
    params = load_checked(args)
    icd = params["icd"]
    tables = {s: read_table(paths.split_table(args.task, s, seed=args.seed)) for s in ("train", "support", "eval")}
    embeddings = read_embeddings(args.task, tables, args.seed) if icd.get("embedding") else None
    result = sample_icds(args.task, tables["train"], tables["support"], tables["eval"],
                         icd["shots"], icd["draws"], icd["seed"], icd.get("sampler", "separate"), embeddings)
    write_json(paths.icd_file(args.task, seed=args.seed), result)
    log.info("%s: %d shots x %d draws for %d training queries, %d shots for %d evaluation queries",
             args.task, icd["shots"], icd["draws"], len(result["train"]), icd["shots"], len(result["eval"]))
    return 0
