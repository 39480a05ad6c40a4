"""Real datasets -> the normalized task tables: ``prepare_task(spec, out_dir, seed) -> meta``.

``spec`` is a task's entry in ``params.yaml`` (``tasks.<name>``). The loader is
``spec["loader"]``, or else the task name: ``vqav2``, ``okvqa``, ``vizwiz``, ``mme``, ``seed-bench``,
``coco-karpathy`` or ``flickr30k`` (aliases ``vqa-v2``, ``ok-vqa``, ``vizwiz-vqa``, ``seed_bench``, ``seedbench``,
``coco``, ``coco_karpathy``, ``flickr-30k``);
other suites add theirs with :func:`register_loader`. The result is
``out_dir/{train,support,eval}.parquet`` and ``out_dir/meta.json`` (``out_dir`` is the task's
directory, ``data/<name>/``).

Split roles follow the paper: ``train`` (training queries) and ``support`` (the demonstration
pool) come from the dataset's training split and are disjoint; ``eval`` comes from its
validation split (the Karpathy test split for COCO and Flickr30k).

Keys of a spec (all loaders)::

    name           task name (required)
    loader         vqav2 | okvqa | vizwiz | mme | seed-bench | coco-karpathy | flickr30k (default: the name)
    kind           vqa | caption | yes-no (mme) | multiple-choice (seed-bench) (optional; checked against the loader)
    source         hub | files, or per pool {train: files, eval: hub}          (default: hub)
    hub_id         hub id or local directory of hub-layout parquet, or per pool {train: .., eval: ..}
    hub_splits     {train: <split or [splits]>, eval: <split>}
                   (defaults: vqav2 train/validation, okvqa train/val2014, vizwiz train/val, coco train/test)
    hub_config     hub config (subset) name                                    (default: none)
    hub_revision   hub revision                                                (default: main)
    hub_cache_dir  datasets cache directory                                    (default: datasets' own)
    files          local files, see below
    n_train        training queries (paper: 1000); null = all not used by support
    n_support      demonstration pool; null = the rest of the training split
    n_eval         evaluation queries (paper: the 10,000 VQAv2 question_ids, all OK-VQA, all COCO test);
                   null = all
    on_bad_sample  skip | fail                                                 (default: fail)
    verify_images  open each selected image to check it                        (default: true)
    embed_images   store image bytes in the tables, not paths                  (default: false)

``files`` keys, VQAv2 and OK-VQA: ``questions_train``, ``annotations_train``,
``images_train``, ``questions_eval``, ``annotations_eval``, ``images_eval`` (the official
JSON files and COCO image folders; with a hub pool only ``images_<pool>`` is read, for hub rows
without images). VizWiz: ``annotations_train``, ``images_train``, ``annotations_eval``, ``images_eval``
(the official ``Annotations/{train,val}.json`` and the ``train/``, ``val/`` image folders;
:mod:`mimic.data.loaders.vizwiz`). COCO: ``karpathy_json`` (``dataset_coco.json``) and ``images_dir`` (COCO
root with ``train2014/``, ``val2014/``, or one flat folder), plus the top-level key
``karpathy_splits`` (default ``{train: [train, restval], eval: [test]}``). Flickr30k (files
only): ``karpathy_json`` (``dataset_flickr30k.json``) and ``images_dir`` (the
``flickr30k-images`` folder); ``karpathy_splits`` default ``{train: [train], eval: [test]}``.

VQA loaders (vqav2, okvqa) also take ``question_ids``: the evaluation questions, exactly and in
order. A shipped question set (``vqav2-val-10k``: the 10,000 VQAv2 val2014 questions LIVE and
MimIC report on, the default of params.yaml's ``vqav2`` task), a path to a file with one id per
line, or a list of ids (:mod:`mimic.data.loaders.question_ids`). ``n_eval`` null keeps every
listed id, a number the first ``n_eval`` usable ones. A listed id that the evaluation source
lacks stops ``prepare`` with an error naming how many and one of them, or with
``on_bad_sample: skip`` is counted in ``meta["skipped"]["eval"]["not in source"]``;
``meta["eval_question_ids"]`` records the list's source, count and sha256.

Sizes are drawn with ``seed``; ``n_train`` (when set) is drawn first, so the training
queries do not change when ``n_support`` does. With ``on_bad_sample: skip`` a record whose
image is missing or unreadable, or which is malformed, is dropped and counted per role in
``meta["skipped"]`` (also logged); with ``fail`` it stops with an error naming the record.

Hub notes: ``datasets`` >= 4 loads only data-file repositories (parquet etc.);
script-based repositories such as ``HuggingFaceM4/VQAv2`` fail with a message saying so.
Several parquet mirrors ship only evaluation splits (``lmms-lab/VQAv2``: validation, testdev,
test; ``lmms-lab/OK-VQA``: val2014; ``lmms-lab/COCO-Caption``: val, test); take the
training pool from the official files with ``source: {train: files, eval: hub}``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from mimic.data.loaders import coco, flickr30k, mme, okvqa, seed_bench, vizwiz, vqav2
from mimic.data.loaders.common import SPEC_KEYS, DataError
from mimic.data.loaders.registry import LOADERS, register_loader

# Task suites outside this package that register loaders when imported; loaded on first miss.
PLUGIN_MODULES = ("mimic.data.synthetic",)

__all__ = [
    "LOADERS",
    "SPEC_KEYS",
    "DataError",
    "coco",
    "flickr30k",
    "loader_name",
    "mme",
    "okvqa",
    "prepare_task",
    "register_loader",
    "seed_bench",
    "vizwiz",
    "vqav2",
]


def loader_name(spec: dict) -> str:
    """The registered loader a spec asks for: ``spec["loader"]``, else ``spec["name"]``."""
    if not isinstance(spec, dict):
        raise ValueError(f"a task spec must be a mapping, got {type(spec).__name__}")
    name = spec.get("loader") or spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a task spec needs a 'name' (and optionally a 'loader')")
    if name not in LOADERS:
        _import_plugins()
    if name not in LOADERS:
        raise ValueError(f"unknown loader {name!r} for task {spec.get('name')!r}; known loaders: {sorted(LOADERS)}")
    return name


def prepare_task(spec: dict, out_dir: Path, seed: int) -> dict:
    """Write ``out_dir/{train,support,eval}.parquet`` and ``meta.json`` for the task ``spec``; return the meta."""
    return LOADERS[loader_name(spec)](spec, Path(out_dir), seed)


def _import_plugins() -> None:
    for module in PLUGIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
