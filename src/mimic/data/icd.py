"""Seeded in-context demonstrations per query, shared by the teacher, ICL and every method.

For every training query ``draws`` lists of ``shots`` support ids (epoch ``e`` of training
uses draw ``e mod draws``), for every evaluation query one list. A query never gets
itself, nor a support record showing the same image, as a demonstration. Each list is a
function of (seed, task, split, query id, draw) only, so it does not change when other
queries are added or removed.
"""

from __future__ import annotations

import hashlib
import random

import pandas as pd

from mimic.data.synthetic import stream_seed


def image_key(record: dict) -> str:
    if record.get("path"):
        return "path:" + str(record["path"])
    return "sha:" + hashlib.sha256(record["bytes"]).hexdigest()


def sample_for_query(support_ids, support_images, query_id, query_image, shots, seed, tag) -> list[str]:
    rng = random.Random(stream_seed(seed, tag))
    chosen: list[str] = []
    order = rng.sample(range(len(support_ids)), len(support_ids))
    for idx in order:
        if support_ids[idx] == query_id or support_images[idx] == query_image:
            continue
        chosen.append(support_ids[idx])
        if len(chosen) == shots:
            return chosen
    raise ValueError(f"the support split has fewer than {shots} usable demonstrations for query {query_id!r}")


def sample_icds(task: str, train: pd.DataFrame, support: pd.DataFrame, eval_: pd.DataFrame,
                shots: int, draws: int, seed: int) -> dict:
    if len(support) < shots:
        raise ValueError(f"{task}: the support split has {len(support)} records, fewer than icd.shots = {shots}")
    ids = support["id"].tolist()
    images = [image_key(r) for r in support["image"]]

    def per_split(df: pd.DataFrame, split: str, n_draws: int) -> dict:
        out = {}
        for qid, image in zip(df["id"], df["image"], strict=True):
            key = image_key(image)
            out[qid] = [sample_for_query(ids, images, qid, key, shots, seed, f"{task}/{split}/{qid}/{d}")
                        for d in range(n_draws)]
        return out

    return {
        "task": task,
        "shots": shots,
        "draws": draws,
        "seed": seed,
        "train": per_split(train, "train", draws),
        "eval": {qid: lists[0] for qid, lists in per_split(eval_, "eval", 1).items()},
    }
