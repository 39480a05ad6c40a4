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

- ``rices``: retrieved by image similarity (RICES): the ``shots`` support records whose
  embeddings (``mimic embed``, :mod:`mimic.data.rices`) are most cosine-similar to the query's,
  the most similar first (so that the first k of a list are the k nearest, as every consumer
  takes a list's first k; open_flamingo puts the most similar last). Deterministic: one draw.

Evaluation queries always take distinct support records: ``eval`` holds random ones (or the
retrieved ones under the ``rices`` sampler, so that the ICL teacher sees what it was trained
with); with embeddings, ``eval_rices`` holds the retrieved ones for every sampler (the ICL
baseline with RICES demonstrations, ``methods.<m>.demos: rices``).
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


SAMPLERS = ("separate", "reference", "rices")


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


def retrieve(query: pd.DataFrame, support: pd.DataFrame, query_emb, support_emb, shots: int) -> dict[str, list[str]]:
    """RICES: per query id, the ``shots`` most similar support ids (never the query's image), most similar first."""
    from mimic.data.rices import nearest

    support_images = [image_key(r) for r in support["image"]]
    exclude = [[j for j, s in enumerate(support_images) if s == image_key(r)] for r in query["image"]]
    ids = support["id"].tolist()
    rows = nearest(query_emb, support_emb, shots, exclude=exclude).tolist()
    return {qid: [ids[j] for j in row] for qid, row in zip(query["id"], rows, strict=True)}


def sample_icds(task: str, train: pd.DataFrame, support: pd.DataFrame, eval_: pd.DataFrame,
                shots: int, draws: int, seed: int, sampler: str = "separate", embeddings: dict | None = None) -> dict:
    """Demonstration ids per query; ``embeddings`` ({split: [n, d] tensor in table order}) enable RICES."""
    if sampler not in SAMPLERS:
        raise ValueError(f"icd.sampler = {sampler!r}; valid: {list(SAMPLERS)}")
    if sampler == "rices" and embeddings is None:
        raise ValueError("icd.sampler = 'rices' needs image embeddings: set icd.embedding and run `mimic embed`")
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

    random_eval = {qid: lists[0] for qid, lists in per_split(eval_, support, "eval", 1, False).items()}
    out = {"task": task, "shots": shots, "draws": draws, "seed": seed, "sampler": sampler}
    if embeddings is not None:
        rices_eval = retrieve(eval_, support, embeddings["eval"], embeddings["support"], shots)
    if sampler == "rices":
        train_lists = retrieve(train, support, embeddings["train"], embeddings["support"], shots)
        out.update(draws=1, train={qid: [ids] for qid, ids in train_lists.items()}, eval=rices_eval)
    else:
        out.update(train=per_split(train, train_pool, "train", draws, replacement=sampler == "reference"),
                   eval=random_eval)
    if embeddings is not None:
        out["eval_rices"] = rices_eval
    return out


def train_demos(icd: dict, qid: str, draw: int, shots: int | None = None) -> list[str]:
    """The demonstration ids of training query ``qid`` for ``draw`` (an epoch: draw ``draw mod draws``), the
    first ``shots`` of them (None: all): what the teacher, the paired loss and the vector methods all show."""
    return icd["train"][qid][draw % icd["draws"]][:shots]


def unknown_id(icd: dict, tables: dict[str, pd.DataFrame]) -> str | None:
    """The first id of ``icd`` (queries and their demonstrations) that is not in the tables it refers to, as
    a phrase naming it; None when every id is there. Demonstrations come from the support split (and, for
    the ``reference`` sampler's training queries, from the training split)."""
    ids = {split: set(table["id"]) for split, table in tables.items()}
    support = ids.get("support", set())
    pools = {"train": support | ids.get("train", set()) if icd.get("sampler") == "reference" else support,
             "eval": support, "eval_rices": support}
    for key, pool in pools.items():
        split = "train" if key == "train" else "eval"
        for qid, lists in (icd.get(key) or {}).items():
            if qid not in ids.get(split, set()):
                return f"query id {qid!r} ({key}) is not in the {split} split"
            for demo in (d for draw in lists for d in (draw if isinstance(draw, list) else [draw])):
                if demo not in pool:
                    return f"demonstration id {demo!r} (query {qid!r}, {key}) is not in the support split"
    return None
