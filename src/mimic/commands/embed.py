"""mimic embed: pooled image embeddings of a task's splits for RICES -> data/<task>/embeddings.safetensors."""

from __future__ import annotations

from mimic.commands.common import add_stage_arguments, load_checked


def add_arguments(parser) -> None:
    add_stage_arguments(parser, task=True)


def run(args) -> int:
    import time

    import torch

    from mimic.data import rices
    from mimic.data.schema import open_image, read_table
    from mimic.errors import MimicError
    from mimic.io.logs import setup_logging
    from mimic.io.tensors import save_tensors
    from mimic.pipeline import paths

    log = setup_logging(args.log, "mimic.embed")
    params = load_checked(args)
    source = params["icd"].get("embedding")
    target = paths.embeddings_file(args.task, seed=args.seed)
    if not source:  # no retrieval: an empty file (the stage exists either way; dvc.yaml has no conditions)
        save_tensors(target, {}, metadata={"embedding": "", "task": args.task})
        log.info("%s: icd.embedding is null, no embeddings", args.task)
        return 0
    start = time.time()
    tables = {s: read_table(paths.split_table(args.task, s, seed=args.seed)) for s in ("train", "support", "eval")}
    if source in params["models"]:
        from mimic.commands.stage_inputs import load_stage_model

        loaded = load_stage_model(params, source)

        def embed(images):
            return rices.embed_images(loaded, images)
    else:
        def embed(images):
            return rices.embed_images_clip(source, images)
    tensors = {}
    for split, table in tables.items():
        tensors[split] = embed([open_image(r) for r in table["image"]]).contiguous()
        if not torch.isfinite(tensors[split]).all():
            raise MimicError(f"{source}: non-finite image embeddings for {args.task}/{split}")
    save_tensors(target, tensors, metadata={"embedding": source, "task": args.task})  # canonical bytes
    log.info("%s: %s embeddings (%d-d) of %s in %.1f s", args.task, source, tensors["support"].shape[1],
             {s: len(t) for s, t in tensors.items()}, time.time() - start)
    return 0
