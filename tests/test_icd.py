"""Demonstration sampling: seeded, never the query itself or its image, stable per query."""

import pandas as pd

from mimic.data.icd import sample_icds
from mimic.data.schema import image_record


def _table(prefix, n, shared_image_with=None):
    rows = []
    for i in range(n):
        path = f"img/{prefix}{i}.jpg"
        if shared_image_with is not None and i == 0:
            path = f"img/{shared_image_with}0.jpg"
        rows.append({"id": f"{prefix}{i}", "image": image_record(path=path), "question": "q", "answers": ["a"]})
    return pd.DataFrame(rows)


def test_icds_are_seeded_distinct_and_exclude_the_query_and_its_image():
    support = _table("s", 12)
    train = _table("t", 5, shared_image_with="s")  # t0 shows the same image as s0
    eval_ = _table("e", 4)
    icd = sample_icds("task", train, support, eval_, shots=4, draws=3, seed=7)
    assert icd == sample_icds("task", train, support, eval_, shots=4, draws=3, seed=7)
    assert icd != sample_icds("task", train, support, eval_, shots=4, draws=3, seed=8)
    for qid, draws in icd["train"].items():
        assert len(draws) == 3 and len({tuple(d) for d in draws}) > 1
        for d in draws:
            assert len(set(d)) == 4 and qid not in d and set(d) <= set(support["id"])
    assert all("s0" not in d for d in icd["train"]["t0"])
    assert set(icd["eval"]) == set(eval_["id"]) and all(len(v) == 4 for v in icd["eval"].values())


def test_a_querys_demonstrations_do_not_depend_on_the_other_queries():
    support = _table("s", 20)
    small = sample_icds("task", _table("t", 3), support, _table("e", 2), shots=5, draws=2, seed=0)
    large = sample_icds("task", _table("t", 9), support, _table("e", 6), shots=5, draws=2, seed=0)
    assert all(large["train"][q] == small["train"][q] for q in small["train"])
    assert all(large["eval"][q] == small["eval"][q] for q in small["eval"])
