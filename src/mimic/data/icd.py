"""Seeded in-context demonstrations per query, shared by the teacher, ICL and every method.

For every training query ``draws`` lists of ``shots`` demonstration ids (epoch ``e`` of
training uses draw ``e mod draws``), for every evaluation query one list of support ids. A
query never gets itself, nor a record showing the same image, as a demonstration. Each list
is a function of (seed, task, split, query id, draw) only, so it does not change when other
queries are added or removed.

Two samplers for the training queries' demonstrations (``icd.sampler``):

- ``separate`` (default): distinct records of the support split (a pool disjoint from the
  training queries), ``draws`` stored draws.
- ``reference``: as the MimIC reference code draws them: from the training queries
  themselves, with replacement (a prompt may repeat a demonstration), a fresh draw per epoch
  (set ``icd.draws`` to the number of epochs). Unlike the reference code, the query itself and
  records of its image are never drawn.

Evaluation queries always take distinct support records.
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


SAMPLERS = ("separate", "reference")


def sample_for_query(pool_ids, pool_images, query_id, query_image, shots, seed, tag,
                     replacement: bool = False) -> list[str]:
    """``shots`` ids of ``pool_ids``, never ``query_id`` nor a record showing ``query_image``."""
    rng = random.Random(stream_seed(seed, tag))
    usable = [i for i in range(len(pool_ids)) if pool_ids[i] != query_id and pool_images[i] != query_image]
    if replacement and usable:
        return [pool_ids[rng.choice(usable)] for _ in range(shots)]
    if len(usable) < shots:
        raise ValueError(f"the demonstration pool has fewer than {shots} usable demonstrations for query "
                         f"{query_id!r}")
    return [pool_ids[i] for i in rng.sample(usable, shots)]


def sample_icds(task: str, train: pd.DataFrame, support: pd.DataFrame, eval_: pd.DataFrame,
                shots: int, draws: int, seed: int, sampler: str = "separate") -> dict:
    if sampler not in SAMPLERS:
        raise ValueError(f"icd.sampler = {sampler!r}; valid: {list(SAMPLERS)}")
    if len(support) < shots:
        raise ValueError(f"{task}: the support split has {len(support)} records, fewer than icd.shots = {shots}")
    train_pool = train if sampler == "reference" else support

    def per_split(df: pd.DataFrame, pool: pd.DataFrame, split: str, n_draws: int, replacement: bool) -> dict:
        ids, images = pool["id"].tolist(), [image_key(r) for r in pool["image"]]
        out = {}
        for qid, image in zip(df["id"], df["image"], strict=True):
            key = image_key(image)
            out[qid] = [sample_for_query(ids, images, qid, key, shots, seed, f"{task}/{split}/{qid}/{d}", replacement)
                        for d in range(n_draws)]
        return out

    return {
        "task": task,
        "shots": shots,
        "draws": draws,
        "seed": seed,
        "sampler": sampler,
        "train": per_split(train, train_pool, "train", draws, replacement=sampler == "reference"),
        "eval": {qid: lists[0] for qid, lists in per_split(eval_, support, "eval", 1, False).items()},
    }
