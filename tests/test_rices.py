"""RICES retrieval: nearest neighbours by cosine similarity, precision by hand, the model's own embedding."""

import random
from pathlib import Path

import pytest
import torch

from mimic.data import rices
from mimic.data import synthetic as syn
from mimic.models.loading import load_model

MODEL = Path(__file__).resolve().parents[1] / "models" / "mini-idefics2"

SUPPORT = torch.tensor([
    [1.0, 0.0],   # 0: angle 0
    [0.0, 1.0],   # 1: angle 90
    [1.0, 1.0],   # 2: angle 45
    [-1.0, 0.0],  # 3: angle 180
    [10.0, 0.0],  # 4: angle 0 again, another norm (cosine ignores it)
])


def test_nearest_orders_by_cosine_similarity_nearest_first():
    queries = torch.tensor([[1.0, 0.2], [0.1, 3.0], [-1.0, 0.1]])
    # query 0 (angle ~11 deg): cos to 0 and 4 = 0.981 (tie: lower index first), to 2 = 0.832, to 1 = 0.196
    # query 1 (angle ~88 deg): 1 (0.9994), then 2 (0.730), then 0 and 4 (0.033)
    # query 2 (angle ~174 deg): 3 (0.995), then 1 (0.0995), then 2 (-0.633)
    assert rices.nearest(queries, SUPPORT, 3).tolist() == [[0, 4, 2], [1, 2, 0], [3, 1, 2]]
    assert rices.nearest(queries * 7, SUPPORT, 1).tolist() == [[0], [1], [3]]  # scale-free


def test_nearest_skips_the_excluded_rows():
    queries = torch.tensor([[1.0, 0.2], [0.1, 3.0]])
    assert rices.nearest(queries, SUPPORT, 2, exclude=[[0, 4], []]).tolist() == [[2, 1], [1, 2]]
    with pytest.raises(ValueError, match="k = 5; the support has 3 usable rows"):
        rices.nearest(queries, SUPPORT, 5, exclude=[[0, 4], []])
    with pytest.raises(ValueError, match="the same d"):
        rices.nearest(torch.zeros(2, 3), SUPPORT, 1)


def test_precision_counts_neighbours_sharing_the_query_label():
    neighbours = torch.tensor([[0, 1, 2], [3, 4, 0]])
    support_labels = ["red", "blue", "red", "blue", "blue"]
    # query 0 (red): red, blue, red -> 2 of 3; query 1 (blue): blue, blue, red -> 2 of 3: 4 of 6
    assert rices.precision_at_k(neighbours, ["red", "blue"], support_labels) == pytest.approx(400 / 6)
    assert rices.precision_at_k(neighbours[:, :1], ["red", "red"], support_labels) == pytest.approx(50.0)


@pytest.fixture(scope="module")
def mini():
    return load_model("mini", str(MODEL))


def test_model_embedding_is_per_image_and_retrieves_the_same_colour(mini):
    rng = random.Random(77)
    scenes = [syn.sample_scene(rng) for _ in range(60)]
    images = [syn.render(s) for s in scenes]
    emb = rices.embed_images(mini, images, batch_size=16)
    assert emb.shape == (60, mini.model.config.text_config.hidden_size) and emb.dtype == torch.float32
    # an image's embedding does not depend on the batch it was computed in
    assert torch.allclose(rices.embed_images(mini, images[5:6]), emb[5:6], atol=1e-5)
    # the 3 nearest of each of the last 20 images among the first 40 share its colour far above chance (10%)
    ids = rices.nearest(emb[40:], emb[:40], 3)
    colours = [s.color for s in scenes]
    precision = rices.precision_at_k(ids, colours[40:], colours[:40])
    assert precision >= 50, precision


def test_an_icl_method_with_rices_demos_is_shown_the_retrieved_lists():
    """evaluate and latency pick a method's demonstrations through one helper: RICES lists for
    `demos: rices`, the sampler's otherwise, one line when icd.json has none."""
    from mimic.commands.stage_inputs import eval_demonstrations
    from mimic.errors import MimicError

    params = {"methods": {"icl-2": {"type": "icl", "shots": 2}, "icl-rices-2": {"type": "icl", "shots": 2,
                                                                               "demos": "rices"},
                          "mimic": {"type": "mimic"}}}
    icd = {"eval": {"q": ["s1", "s2"]}, "eval_rices": {"q": ["s9", "s8"]}}
    assert eval_demonstrations(params, icd, "t", "icl-rices-2", 0) == {"q": ["s9", "s8"]}
    assert eval_demonstrations(params, icd, "t", "icl-2", 0) == eval_demonstrations(params, icd, "t", "mimic", 0) == {
        "q": ["s1", "s2"]}
    with pytest.raises(MimicError, match=r"t/seed-0/icd.json has no RICES demonstrations .*set icd.embedding"):
        eval_demonstrations(params, {"eval": icd["eval"]}, "t", "icl-rices-2", 0)
