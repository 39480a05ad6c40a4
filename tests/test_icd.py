"""Demonstration sampling: seeded, never the query itself or its image, stable per query."""

import pandas as pd

from mimic.data.icd import sample_icds, train_demos
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


def test_epoch_e_shows_draw_e_mod_draws_and_its_first_shots():
    icd = sample_icds("task", _table("t", 2), _table("s", 12), _table("e", 1), shots=4, draws=3, seed=1)
    lists = icd["train"]["t1"]
    assert [train_demos(icd, "t1", epoch) for epoch in range(7)] == [lists[e % 3] for e in range(7)]
    assert train_demos(icd, "t1", 4, shots=2) == lists[1][:2]
    assert train_demos(icd, "t1", 0, shots=None) == lists[0] and len(lists[0]) == 4


def test_a_querys_demonstrations_do_not_depend_on_the_other_queries():
    support = _table("s", 20)
    small = sample_icds("task", _table("t", 3), support, _table("e", 2), shots=5, draws=2, seed=0)
    large = sample_icds("task", _table("t", 9), support, _table("e", 6), shots=5, draws=2, seed=0)
    assert all(large["train"][q] == small["train"][q] for q in small["train"])
    assert all(large["eval"][q] == small["eval"][q] for q in small["eval"])


def test_the_query_and_its_image_are_never_drawn_when_ids_and_images_collide():
    """The support pool holds the training queries themselves and shares images between records."""
    rows = []
    for i in range(10):
        rows.append({"id": f"r{i}", "image": image_record(path=f"img/{i % 4}.jpg"), "question": "q", "answers": ["a"]})
    pool = pd.DataFrame(rows)  # r0, r4, r8 show image 0; r1, r5, r9 image 1; ...
    image_of = {r["id"]: r["image"]["path"] for r in rows}
    drawn = set()
    for seed in range(200):
        icd = sample_icds("task", pool, pool, pool, shots=3, draws=2, seed=seed)
        for split in ("train", "eval"):
            for qid, lists in icd[split].items():
                for ids in lists if split == "train" else [lists]:
                    assert len(ids) == len(set(ids)) == 3
                    assert qid not in ids
                    assert all(image_of[s] != image_of[qid] for s in ids), (seed, qid, ids)
                    drawn.update((qid, s) for s in ids)
    # every allowed (query, demonstration) pair does occur: the sampler excludes nothing else
    allowed = {(q, s) for q in image_of for s in image_of if image_of[q] != image_of[s]}
    assert drawn == allowed
    # Same ids, other images (a query id can collide with a support id without sharing its image).
    queries = pd.DataFrame([{**r, "image": image_record(path=f"query/{r['id']}.jpg")} for r in rows])
    drawn = set()
    for seed in range(100):
        icd = sample_icds("task", queries, pool, queries, shots=3, draws=2, seed=seed)
        for qid, lists in icd["train"].items():
            for ids in lists:
                assert qid not in ids and len(set(ids)) == 3
                drawn.update((qid, s) for s in ids)
    assert drawn == {(q, s) for q in image_of for s in image_of if q != s}


def test_too_few_usable_demonstrations_fail_clearly():
    pool = pd.DataFrame([{"id": f"r{i}", "image": image_record(path=f"img/{i % 2}.jpg"), "question": "q",
                          "answers": ["a"]} for i in range(6)])
    import pytest

    with pytest.raises(ValueError, match="fewer than 4 usable demonstrations for query 'r0'"):
        sample_icds("task", pool, pool, pool, shots=4, draws=1, seed=0)  # only 3 records show another image


def test_the_reference_sampler_draws_training_queries_with_replacement():
    train, support, eval_ = _table("t", 6, shared_image_with=None), _table("s", 12), _table("e", 3)
    image_of = {r["id"]: r["image"]["path"] for _, r in train.iterrows()}
    repeats = 0
    for seed in range(50):
        icd = sample_icds("task", train, support, eval_, shots=4, draws=3, seed=seed, sampler="reference")
        assert icd["sampler"] == "reference"
        for qid, lists in icd["train"].items():
            assert len(lists) == 3
            for ids in lists:
                assert len(ids) == 4 and set(ids) <= set(image_of) - {qid}
                repeats += len(set(ids)) < len(ids)
        assert all(set(ids) <= set(support["id"]) and len(set(ids)) == 4 for ids in icd["eval"].values())
    assert repeats > 0  # with replacement: some prompts repeat a demonstration


def test_an_unknown_sampler_fails_clearly():
    import pytest

    with pytest.raises(ValueError, match=r"icd.sampler = 'fresh'; valid: \['separate', 'reference', 'rices'\]"):
        sample_icds("task", _table("t", 3), _table("s", 5), _table("e", 2), 2, 1, 0, sampler="fresh")


def _unit(angles_deg):
    import math

    import torch
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles_deg])


def test_rices_takes_the_nearest_support_images_nearest_first_and_never_the_querys_image():
    import pytest

    support = _table("s", 5)
    train = _table("t", 2, shared_image_with="s")  # t0 shows s0's image
    eval_ = _table("e", 2)
    # support at 0, 90, 40, 180, 10 degrees; t0 at 0 (its own image s0 is excluded), t1 at 100,
    # e0 at 30, e1 at 170: by angle distance, hand-sorted
    emb = {"support": _unit([0, 90, 40, 180, 10]), "train": _unit([0, 100]), "eval": _unit([30, 170])}
    icd = sample_icds("task", train, support, eval_, shots=2, draws=3, seed=0, sampler="rices", embeddings=emb)
    assert icd["draws"] == 1 and icd["sampler"] == "rices"
    assert icd["train"] == {"t0": [["s4", "s2"]], "t1": [["s1", "s2"]]}
    assert icd["eval"] == icd["eval_rices"] == {"e0": ["s2", "s4"], "e1": ["s3", "s1"]}
    # another sampler keeps its random draws and adds the retrieved evaluation lists
    separate = sample_icds("task", train, support, eval_, shots=2, draws=3, seed=0, embeddings=emb)
    assert separate["eval"] == sample_icds("task", train, support, eval_, shots=2, draws=3, seed=0)["eval"]
    assert separate["eval_rices"] == {"e0": ["s2", "s4"], "e1": ["s3", "s1"]} and separate["draws"] == 3
    assert "eval_rices" not in sample_icds("task", train, support, eval_, shots=2, draws=3, seed=0)
    with pytest.raises(ValueError, match="icd.sampler = 'rices' needs image embeddings"):
        sample_icds("task", train, support, eval_, shots=2, draws=1, seed=0, sampler="rices")


def test_a_demonstration_drawn_from_the_training_queries_is_found_there():
    """icd.sampler: reference draws training demonstrations from the training queries (their ids are not in
    the support table): TaskData.demo finds them there, as the teacher, the fitted methods and RICES read them."""
    import pandas as pd
    from PIL import Image

    from mimic.data.batches import TaskData
    from mimic.data.schema import encode_png, image_record

    image = image_record(encode_png(Image.new("RGB", (4, 4))))
    train = pd.DataFrame({"id": ["t1"], "image": [image], "question": ["train?"], "answers": [["a"] * 10]})
    support = pd.DataFrame({"id": ["s1"], "image": [image], "question": ["support?"], "answers": [["b"] * 10]})
    data = TaskData("vqa", {"train": train, "support": support})
    assert data.demo("t1")[1:] == ("train?", "a") and data.demo("s1")[1:] == ("support?", "b")
